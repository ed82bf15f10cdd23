"""PatchCore (Roth et al., CVPR 2022) on RGB, on 3D, and on both with M3DM-style banks.

Each modality keeps a memory bank of normal patch features, a greedy coreset of the training
patches. A test patch's anomaly score is its distance to the nearest bank row; the image score
is the largest patch score re-weighted by how isolated its match is (PatchCore's Eq. 7, or
M3DM's variant), and the map is the patch-score grid upsampled bilinearly to 224 x 224 and
smoothed with a Gaussian of sigma 4. With ``modality="rgb+xyz"`` there is one bank per
modality (M3DM's "DINO+Point_MAE" mode) and the two scores are combined by a weighted sum or by
M3DM's learned late fusion (a one-class SVM on [xyz, rgb] score vectors), with the defaults of
the PatchCore and M3DM papers and of anomalib's PatchCore.

Differences from the reference code, on purpose:

- Maps are blurred in float (:func:`xmodal.methods.postprocess.gaussian_blur`, kernel
  2*int(4*sigma+0.5)+1, reflect padding); M3DM and G2SF quantise each map to 256 levels of its
  maximum and use PIL's box-filter approximation of the Gaussian, so their maps have ties that
  ours do not.
- 3D banks hold the foreground cells only (cells with 3D data); test cells without 3D data
  score 0. M3DM keeps background rows (all-zero Point-MAE features) and appends one zero row,
  which gives those cells distance 0 as well.
- Standardisation (M3DM's scalar ``(x - mean) / std``) uses each bank's own statistics; M3DM
  mixes the xyz and rgb statistics up (§3.3). Distances are simply divided by the std.
- Training features never sit in memory all at once: each bank is a :class:`xmodal.MemoryBank`
  streamed in by its builder (exact one-shot selection with raw rows in a temporary file, or a
  streaming merge-reduce coreset when ``max_memory`` is given).
- Nearest-neighbour search is exact (:meth:`xmodal.MemoryBank.query`); the reference code uses
  ``torch.cdist`` (float32, expanded form).
"""

from __future__ import annotations

import time

import numpy as np

from .._arrays import integer, number, one_of
from ..memory_bank import MemoryBank, MemoryBankBuilder
from ._backbones import resolve
from .base import AnomalyResult, Detector, register
from .options import MODALITIES

RGB_NAMES = ("wide_resnet50_2", "efficientnet_lite0", "dino_vitb8")
XYZ_NAMES = ("pointmae", "depth")
PAPER = {"rgb": "wide_resnet50_2", "xyz": "pointmae"}
OFFLINE = {"rgb": "efficientnet_lite0", "xyz": "depth"}
FUSIONS = ("sum", "ocsvm")


def parse_backbone(backbone) -> dict[str, str]:
    """``None`` -> {}; ``"wide_resnet50_2"``, ``"pointmae"``, ``"dino_vitb8+pointmae"``… ->
    {"rgb": ..., "xyz": ...} (the parts that were named)."""
    if backbone is None:
        return {}
    if not isinstance(backbone, str) or not backbone:
        msg = f"backbone must be None or a string such as 'wide_resnet50_2+pointmae'; got {backbone!r}"
        raise TypeError(msg) if not isinstance(backbone, str) else ValueError(msg)
    names: dict[str, str] = {}
    for part in backbone.split("+"):
        kind = "rgb" if part in RGB_NAMES else "xyz" if part in XYZ_NAMES else None
        if kind is None or kind in names:
            msg = (f"backbone must be '<rgb>', '<xyz>' or '<rgb>+<xyz>' with <rgb> in {RGB_NAMES} and <xyz> in "
                   f"{XYZ_NAMES}; got {backbone!r}")
            raise ValueError(msg)
        names[kind] = part
    return names


@register
class PatchCore(Detector):
    """PatchCore memory-bank detector for RGB, 3D or both.

    Args:
        modality: "rgb", "xyz" or "rgb+xyz" (one bank per modality).
        backbones: "auto" (paper backbones when their weight files are found, else offline),
            "paper" (WideResNet-50 layer2+layer3 with 3x3 aggregation for RGB, on a 28x28 grid;
            Point-MAE on the 56x56 grid for xyz) or "offline" (EfficientNet-Lite0 on the RGB
            image and on the depth image, 28x28). Only the weights the modality needs are
            looked for.
        backbone: explicit override, "<rgb>", "<xyz>" or "<rgb>+<xyz>" with <rgb> one of
            "wide_resnet50_2", "efficientnet_lite0", "dino_vitb8" and <xyz> "pointmae" or
            "depth" (e.g. "dino_vitb8+pointmae", M3DM's pair). Named parts replace what
            ``backbones`` would choose; parts not named still come from ``backbones``. The
            depth image is read by the RGB network (named or chosen); with modality "xyz" and
            "depth", that network is the named <rgb> part, else EfficientNet-Lite0.
        weights_dir: folder with backbone weight files (else ``$XMODAL_WEIGHTS``).
        device: "cpu" or "cuda[:N]" (backbones, banks and search).
        coreset_ratio: fraction of the training patches kept per bank (0.1 as in PatchCore /
            M3DM); None keeps them all.
        projection: "sparse" (JL very sparse projection at eps 0.9, anomalib / M3DM) or
            "linear" (PatchCore's random linear map to ``proj_dim``) for the coreset selection.
        proj_dim: output dimension of the "linear" projection.
        reweight: image score: "paper" (Eq. 7, anomalib), "m3dm" (D = sqrt(dim)) or "none".
        num_neighbors: support set of the re-weighting (None: 9 for "paper" as anomalib, 3 for
            "m3dm").
        reweight_eps: added to the "m3dm" denominator (M3DM's single-modality scorers: 1e-5).
        fusion: rgb+xyz only: "sum" (M3DM "DINO+Point_MAE": weighted sum of scores and maps)
            or "ocsvm" (M3DM's late fusion; needs scikit-learn at fit time only).
        xyz_weight, rgb_weight: weights of the two modalities before fusion (M3DM's lambdas;
            its defaults are 1.0 and 0.1).
        standardize: divide each modality's distances by the std of its training features
            (M3DM's scalar normalisation); None: only when two banks are fused.
        sigma: Gaussian smoothing of the 224x224 maps (0: none).
        max_memory: bytes for the training feature store (banks + one streaming chunk); None
            selects the exact one-shot coreset (projected rows in RAM, raw rows in a
            temporary file). Backbone activations are not counted.
        batch_size: images per backbone batch.
        seed: coreset start and projection, random backbone weights, OCSVM ``random_state``,
            the held-out calibration images.
        calibration: share of the training images held out to calibrate the threshold when
            the dataset has no validation split (0: no calibration); see :meth:`Detector.fit`.
        progress: progress bars and the backbone announcement on stderr.
        random_weights: backbones with random weights (tests and benchmarks only).
        grid, xyz_grid: feature grid sides (defaults 28 and 56 for Point-MAE / 28 for depth).
        pointmae: :class:`PointMAEOptions` (or a dict); the flat ``num_group``, ``group_size``,
            ``reference_fps`` and ``reference_train_mode`` keywords still work.
        tmp_dir: folder for the one-shot mode's temporary feature file.
        ocsvm_max_pixels: pixel vectors the pixel-level OCSVM is fitted on (a seeded uniform
            sample when the training maps hold more; M3DM uses every pixel).
    """

    method = "patchcore"

    def __init__(self, modality: str = "rgb+xyz", backbones: str = "auto", backbone=None, weights_dir=None,
                 device: str = "cpu", coreset_ratio=0.1, projection: str = "sparse", proj_dim: int = 128,
                 reweight: str = "paper", num_neighbors=None, reweight_eps: float = 0.0, fusion: str = "sum",
                 xyz_weight: float = 1.0, rgb_weight: float = 1.0, standardize=None, sigma: float = 4.0,
                 max_memory=None, batch_size: int = 8, seed: int = 0, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, grid: int = 28, xyz_grid=None, pointmae=None,
                 tmp_dir=None, ocsvm_max_pixels: int = 2_000_000, **legacy):
        from ._patch_score import check_reweight

        one_of(modality, "modality", tuple(MODALITIES))
        parse_backbone(backbone)
        number(coreset_ratio, "coreset_ratio", minimum=0, maximum=1, low_open=True, allow_none=True)
        one_of(projection, "projection", ("sparse", "linear"))
        num_neighbors = check_reweight(reweight, num_neighbors)
        number(reweight_eps, "reweight_eps", minimum=0)
        one_of(fusion, "fusion", FUSIONS)
        if fusion == "ocsvm" and modality != "rgb+xyz":
            msg = f"fusion='ocsvm' combines two banks and needs modality='rgb+xyz'; got modality={modality!r}"
            raise ValueError(msg)
        for name, value in (("xyz_weight", xyz_weight), ("rgb_weight", rgb_weight), ("sigma", sigma)):
            number(value, name, minimum=0)
        one_of(standardize, "standardize", (None, True, False))
        for name, value, minimum in (("proj_dim", proj_dim, 1), ("batch_size", batch_size, 1),
                                     ("grid", grid, 1), ("xyz_grid", xyz_grid, 1), ("seed", seed, 0),
                                     ("max_memory", max_memory, 1), ("ocsvm_max_pixels", ocsvm_max_pixels, 1)):
            integer(value, name, minimum=minimum, allow_none=name in ("xyz_grid", "max_memory"))
        if max_memory is not None and coreset_ratio is None:
            msg = "max_memory streams the training features into a coreset; it needs a coreset_ratio (got None)"
            raise ValueError(msg)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=int(batch_size), max_memory=max_memory, max_memory_default=None,
                                     calibration=calibration, progress=progress, random_weights=random_weights,
                                     pointmae=pointmae)
        common["max_memory"] = None if max_memory is None else int(max_memory)
        super().__init__(modality=modality, backbone=backbone,
                         coreset_ratio=None if coreset_ratio is None else float(coreset_ratio),
                         projection=projection, proj_dim=int(proj_dim), reweight=reweight,
                         num_neighbors=num_neighbors, reweight_eps=float(reweight_eps), fusion=fusion,
                         xyz_weight=float(xyz_weight), rgb_weight=float(rgb_weight), standardize=standardize,
                         sigma=float(sigma), grid=int(grid), xyz_grid=None if xyz_grid is None else int(xyz_grid),
                         tmp_dir=None if tmp_dir is None else str(tmp_dir), ocsvm_max_pixels=int(ocsvm_max_pixels),
                         **common)
        self.memory_banks: dict[str, MemoryBank] = {}
        self.scales: dict[str, float] = {}
        self.fusion_params: dict[str, np.ndarray] = {}

    # --- configuration ----------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return MODALITIES[self.config["modality"]]

    @property
    def banks(self) -> dict:
        """{modality: (n, D) float32 torch tensor}: the rows of each memory bank."""
        return {m: bank.features for m, bank in self.memory_banks.items()}

    def _choose_backbones(self) -> dict:
        """Backbone names per modality, the choice ("paper" / "offline" / "explicit") and why."""
        c = self.config
        explicit = parse_backbone(c["backbone"])
        missing = [m for m in self.modalities if m not in explicit]
        if not missing:
            choice, reason = "explicit", f"backbone={c['backbone']!r} was given"
        else:
            needed = tuple(PAPER[m] for m in missing)
            if c["random_weights"] and c["backbones"] == "paper":
                needed = ()  # random weights: no file is read
            choice, reason = resolve(c["backbones"], needed, c["weights_dir"])
            if explicit:
                reason += f"; backbone={c['backbone']!r} names the others"
        defaults = PAPER if choice == "paper" else OFFLINE
        names = {m: explicit.get(m, defaults[m]) for m in self.modalities}
        # The extractor always has a 2D network: it reads the depth image when xyz is "depth".
        reader = explicit.get("rgb", names.get("rgb", OFFLINE["rgb"]))
        xyz = names.get("xyz", "depth")
        grids = {"rgb": c["grid"], "xyz": c["xyz_grid"] or (56 if xyz == "pointmae" else c["grid"])}
        return {"choice": choice, "reason": reason, "names": names, "extractor": [reader, xyz], "grids": grids}

    def _build_extractor(self):
        spec = self.info["backbone_spec"]
        reader, xyz = spec["extractor"]
        return self._feature_extractor(reader, xyz, spec["grids"]["rgb"], xyz_grid=spec["grids"]["xyz"])

    def _standardize(self) -> bool:
        s = self.config["standardize"]
        return len(self.modalities) == 2 if s is None else bool(s)

    # --- features ---------------------------------------------------------------------------
    def _features(self, batch):
        return self.extractor(batch, modalities=self.modalities)

    @staticmethod
    def _rows(feats, modality: str, i: int):
        """(rows (P, C) float32, foreground cells (G*G,) bool or None) of image i."""
        grid = getattr(feats, modality)[i]
        rows = grid.reshape(grid.shape[0], -1).T
        if modality == "xyz":
            fg = feats.foreground[i].reshape(-1)
            return rows[fg].contiguous(), fg
        return rows.contiguous(), None

    def _chunk_images(self, dims: dict, cells: dict, num_images: int) -> int | None:
        """Images per streaming chunk when the banks share ``max_memory`` (None: one-shot mode)."""
        c = self.config
        if c["max_memory"] is None:
            return None
        return MemoryBankBuilder.chunk_size(c["max_memory"], [(dims[m], cells[m]) for m in dims], num_images,
                                            c["coreset_ratio"], c["projection"], c["proj_dim"], unit="image")

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        """Builds the memory bank(s) from good training samples.

        Args:
            samples: a Sequence of good samples, read batch by batch (see :meth:`Detector.fit`).
        """
        import torch

        c = self.config
        spec = self._choose_backbones()
        # a refit with the same backbones keeps the loaded networks
        self._record_backbones(spec["choice"], spec["reason"], spec, detail=f": {spec['names']}")
        extractor = self.extractor
        dims = {m: extractor.rgb_channels if m == "rgb" else extractor.xyz_channels for m in self.modalities}
        cells = {m: spec["grids"][m] ** 2 for m in self.modalities}
        builders = self._builders(dims, cells, len(samples))

        started = time.perf_counter()
        try:
            with torch.no_grad():
                for batch in self._batches(samples, "extracting training features"):
                    feats = self._features(batch)
                    for i in range(len(batch)):
                        for m in self.modalities:
                            builders[m].add(self._rows(feats, m, i)[0].cpu())
            self.info["extraction_seconds"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            self._finish_banks(builders)
        finally:
            for b in builders.values():
                b.close()
        self.info["coreset_seconds"] = round(time.perf_counter() - started, 3)
        if c["fusion"] == "ocsvm":
            started = time.perf_counter()
            self._fit_late_fusion(samples)
            self.info["fusion_seconds"] = round(time.perf_counter() - started, 3)

    def _builders(self, dims: dict, cells: dict, num_images: int) -> dict:
        c = self.config
        chunk_images = self._chunk_images(dims, cells, num_images)
        self.info["fit_mode"] = ("one-shot greedy coreset" if chunk_images is None else
                                 f"streaming merge-reduce coreset, chunks of {chunk_images} images")
        self._log(self.info["fit_mode"])
        return {m: MemoryBank.builder(dims[m], num_images * cells[m], coreset_ratio=c["coreset_ratio"],
                                      projection=c["projection"], proj_dim=c["proj_dim"], seed=c["seed"],
                                      chunk_rows=None if chunk_images is None else chunk_images * cells[m],
                                      spill_dir=c["tmp_dir"], device=c["device"]) for m in self.modalities}

    def _finish_banks(self, builders: dict) -> None:
        self.memory_banks, self.scales = {}, {}
        self.info["training_rows"], self.info["bank_rows"], self.info["statistics"] = {}, {}, {}
        for m, builder in builders.items():
            rows = builder.rows_seen
            if rows == 0:
                msg = (f"no training sample has {'3D foreground' if m == 'xyz' else 'RGB'} features for the "
                       f"{m} bank (all point clouds empty?)")
                raise ValueError(msg)
            bank = builder.finish()
            mean, std = bank.statistics["mean"], bank.statistics["std"]
            self.info["training_rows"][m] = rows
            self.info["statistics"][m] = {"mean": mean, "std": std}
            if builder.chunk_rows is not None:
                self.info.setdefault("chunks", {})[m] = builder.chunks
            self.info["bank_rows"][m] = len(bank)
            self.memory_banks[m] = bank
            self.scales[m] = 1.0 / std if self._standardize() else 1.0

    # --- scoring ----------------------------------------------------------------------------
    def _modality_scores(self, feats, i: int) -> dict:
        """Per modality: (image score, patch grid (G, G), map (224, 224)) tensors, scaled."""
        import torch

        from ._patch_score import image_score
        from .postprocess import gaussian_blur, upsample_bilinear

        c = self.config
        out = {}
        for m in self.modalities:
            rows, fg = self._rows(feats, m, i)
            grid_side = getattr(feats, m).shape[-1]
            bank = self.memory_banks[m]
            if rows.shape[0]:
                dist, index = (column[:, 0] for column in bank.query(rows, 1))
            else:
                dist, index = rows.new_zeros(0), rows.new_zeros(0, dtype=torch.int64)
            scale = self.scales[m]
            score = image_score(rows, dist, index, bank.features, reweight=c["reweight"],
                                num_neighbors=c["num_neighbors"], eps=c["reweight_eps"], scale=scale)
            patch = torch.zeros(grid_side * grid_side, dtype=torch.float32, device=rows.device)
            if fg is None:
                patch[:] = dist * scale
            else:
                patch[fg] = dist * scale
            patch = patch.reshape(grid_side, grid_side)
            full = upsample_bilinear(patch, self.map_size)
            full = gaussian_blur(full, c["sigma"]) if c["sigma"] > 0 else full
            out[m] = (score, patch, full)
        return out

    def _result(self, feats, i: int) -> AnomalyResult:
        c = self.config
        parts = self._modality_scores(feats, i)
        extras = {}
        for m, (score, patch, full) in parts.items():
            extras[f"score_{m}"] = score
            extras[f"patch_{m}"] = patch.cpu().numpy()
            extras[f"map_{m}"] = full.cpu().numpy()
        if len(parts) == 1:
            (score, _, full), = parts.values()
            return AnomalyResult(score=float(score), map=full.cpu().numpy().astype(np.float32), extras=extras)
        weights = {"xyz": c["xyz_weight"], "rgb": c["rgb_weight"]}
        scores = [weights[m] * parts[m][0] for m in ("xyz", "rgb")]
        maps = [weights[m] * parts[m][2] for m in ("xyz", "rgb")]
        if c["fusion"] == "sum":
            score, fused = scores[0] + scores[1], maps[0] + maps[1]
        else:
            import torch

            from ._late_fusion import ocsvm_score

            score = float(ocsvm_score(np.asarray(scores), self.fusion_params["image_coef"]))
            fused = ocsvm_score(torch.stack(maps, dim=-1).double(), self.fusion_params["pixel_coef"])
        return AnomalyResult(score=float(score), map=fused.cpu().numpy().astype(np.float32), extras=extras)

    def _score_vectors(self, feats, i: int) -> tuple[np.ndarray, np.ndarray]:
        """M3DM's late-fusion inputs of image i: [xyz, rgb] image scores and (224*224, 2) pixels."""
        import torch

        c = self.config
        parts = self._modality_scores(feats, i)
        image = np.array([c["xyz_weight"] * parts["xyz"][0], c["rgb_weight"] * parts["rgb"][0]])
        pixels = torch.stack([c["xyz_weight"] * parts["xyz"][2], c["rgb_weight"] * parts["rgb"][2]], dim=-1)
        return image, pixels.reshape(-1, 2).double().cpu().numpy()

    def _fit_late_fusion(self, samples) -> None:
        """Second pass over the training images (as M3DM): fits the image and pixel OCSVMs."""
        import torch

        from ._late_fusion import fit_ocsvm

        c = self.config
        rng = np.random.default_rng(c["seed"])
        per_image = min(self.map_size**2, max(1, c["ocsvm_max_pixels"] // len(samples)))
        images, pixels = [], []
        with torch.no_grad():
            for batch in self._batches(samples, "scoring training images for fusion"):
                feats = self._features(batch)
                for i in range(len(batch)):
                    image, pix = self._score_vectors(feats, i)
                    images.append(image)
                    if per_image < pix.shape[0]:
                        pix = pix[np.sort(rng.choice(pix.shape[0], per_image, replace=False))]
                    pixels.append(pix)
        image_coef, image_offset = fit_ocsvm(np.stack(images), c["seed"])
        pixel_coef, pixel_offset = fit_ocsvm(np.concatenate(pixels), c["seed"])
        self.fusion_params = {"image_coef": image_coef, "image_offset": image_offset,
                              "pixel_coef": pixel_coef, "pixel_offset": pixel_offset}
        self.info["fusion_data"] = {"images": len(images), "pixels": int(sum(p.shape[0] for p in pixels)),
                                    "pixels_per_image": int(min(per_image, self.map_size**2))}

    # --- persistence ------------------------------------------------------------------------
    def _state_spec(self) -> dict[str, tuple]:
        features = self.info["features"]
        dims = {"rgb": int(features["rgb_channels"]), "xyz": int(features["xyz_channels"])}
        spec = {f"bank.{m}": (None, dims[m]) for m in self.modalities}
        spec.update({f"scale.{m}": (1,) for m in self.modalities})
        if self.config["fusion"] == "ocsvm":
            spec.update({"fusion.image_coef": (2,), "fusion.image_offset": (1,), "fusion.pixel_coef": (2,),
                         "fusion.pixel_offset": (1,)})
        return spec

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"bank.{m}": bank.to_numpy() for m, bank in self.memory_banks.items()}
        state.update({f"scale.{m}": np.array([s], dtype=np.float64) for m, s in self.scales.items()})
        state.update({f"fusion.{k}": v for k, v in self.fusion_params.items()})
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self.memory_banks = {m: MemoryBank(torch.from_numpy(np.ascontiguousarray(state[f"bank.{m}"], dtype=np.float32))
                                           .to(self.config["device"])) for m in self.modalities}
        self.scales = {m: float(state[f"scale.{m}"][0]) for m in self.modalities}
        if self.config["fusion"] == "ocsvm":
            self.fusion_params = {k: state[f"fusion.{k}"] for k in
                                  ("image_coef", "image_offset", "pixel_coef", "pixel_offset")}
        self._extractor = None
