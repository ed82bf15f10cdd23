"""G2SF: geometry-guided score fusion (ICCV 2025) on M3DM-style memory banks.

Two memory banks (IMG: RGB features, standardised by one scalar mean and std; PCD: 3D
features) give each test patch its k nearest rows in each modality. A learned anisotropic
metric fuses the two unimodal distances: for the j-th nearest prototype of each bank,
l_j = sum_m w_m sigma_m ||f_m - m_m|| / mu_m with local scales w from the LSPN
(:mod:`.lspn`), global scales sigma and the mean normal distances mu; the patch score is
min_j l_j over the k = 6 nearest prototypes (Eq. 11), background patches use w = 1; the image
score is the maximum of the 56 x 56 grid and the map its bilinear upsampling to 224, blurred
with a Gaussian of sigma 4. The LSPN is trained on foreground patches of synthetic anomalies
(:class:`xmodal.data.synthesis.G2SFSynthesizer`) with the five losses of :mod:`.losses`.

Paper (default) vs reference code (option) and other differences, on purpose:

- ``loss_weights="paper"`` (separation 1, margin 10, consistency 60, scaling 8, crossmodal 20,
  L1 1e-4, weight decay 1.5e-4) or ``"code"`` (1, 10, 40, 3, 20, 5e-4, 1e-4; the README says the
  weights changed after publication).
- ``direction="per_modality"`` (the paper's per-modality unit directions) or ``"joint"`` (the
  reference's one 1920-d direction).
- ``num_group`` (Point-MAE, through ``pointmae``): 1024 (paper) by default, 512 = the reference.
- ``pcd_background=False`` (default): the PCD bank holds foreground rows only and a background
  cell gets PCD distance 0, exactly what the reference's all-zero background rows give an
  all-zero background feature, without spending coreset rows and search time on them.
  ``True`` keeps the background rows (the reference).
- Fusion training data: the reference's synthetic images, but the mask foregrounds come from
  each sample's object (plane removed as :func:`xmodal.data.preprocess.depth_image` does), the
  pasted x, y from the sample's own cloud, and the plane is put back under the anomaly's
  untouched pixels so that training and test features see the same kind of cloud.
- Model selection: every epoch is eligible (the reference never keeps epoch 0, a Lightning
  ordering artefact); the validation split is half of the synthetic patches, never test data.
- mu is the mean over all normal training patches (the reference averages batch means).
- Maps are blurred in float (the reference quantises to 8 bits and uses PIL's box blurs), and
  the neighbour searches are exact (one top-k search per modality serves the unimodal scores
  and the fuser; each unique RGB row is searched once).
- Inference runs the fused native kernel :func:`xmodal.ops.anisotropic_min` by default
  (``fuser="native"``); ``fuser="torch"`` runs the unfused LSPN. On another engine or in bf16
  the LSPN runs as the exported graph ``lspn`` (whatever ``fuser``), the metric in float32.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..._arrays import integer, one_of
from ...memory_bank import MemoryBank
from .._backbones import resolve
from ..base import AnomalyResult, Detector, register
from .losses import LOSS_WEIGHTS
from .lspn import DIRECTIONS, LSPN
from .scoring import CHUNK_ROWS

FUSERS = ("native", "torch")
PAPER = ("dino_vitb8", "pointmae")
OFFLINE = ("efficientnet_lite0", "depth")


class _ObjectOnly(Sequence):
    """The samples with every cloud point off the object set to (0, 0, 0) (the synthesizer's
    foregrounds are the valid points)."""

    def __init__(self, samples):
        self.samples = samples
        self.category = getattr(samples, "category", None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        from ...data import Sample
        from ...data.preprocess import depth_image

        s = self.samples[index]
        _, fg = depth_image(s.xyz, background="auto")
        xyz = np.where(fg[..., None], s.xyz, 0).astype(np.float32)
        return Sample(rgb=s.rgb, xyz=xyz, category=s.category)


class _Synthetic(Sequence):
    """The synthesizer's anomalies as Samples (gt = the pasted mask), with the background
    plane put back under the untouched pixels so the features see test-like clouds."""

    def __init__(self, synth):
        self.synth = synth

    def __len__(self) -> int:
        return len(self.synth)

    def __getitem__(self, index):
        from ...data import Sample

        a = self.synth[index]
        keep = (a.xyz != 0).any(axis=-1) | a.mask
        xyz = np.where(keep[..., None], a.xyz, a.raw_xyz).astype(np.float32)
        return Sample(rgb=a.rgb, xyz=xyz, gt=a.mask, label=1, category=a.category)


@register
class G2SF(Detector):
    """Geometry-guided score fusion of an RGB and a 3D memory bank.

    Args:
        backbones: "auto", "paper" (DINO ViT-B/8 on a 28 x 28 grid + Point-MAE on 56 x 56) or
            "offline" (EfficientNet-Lite0 on the RGB image, 28 x 28, and on the depth image,
            56 x 56).
        coreset_ratio: share of the training patches kept per bank (0.1).
        pcd_background: keep the background rows in the PCD bank (the reference); see the
            module docstring for why the default is False.
        neighbors: prototypes per bank at inference (k + 1 = 6, Eq. 11).
        stored_neighbors: neighbour rows stored per fusion patch (20; >= 11 for the losses).
        n_synthetic: synthetic anomalous images the fuser learns from (800 for MVTec 3D-AD).
        epochs: fuser epochs (80); fuser_batch_size: None = min(int(0.7 N) // 20, 8192).
        fuser_max_patches: train the fuser on at most this many synthetic patches (a seeded
            share; None: all of them, as the reference; CPU training is slow).
        lr, lr_scale: Adam learning rates of the LSPN (1.5e-4) and of g (5e-3).
        loss_weights: "paper" or "code"; direction: "per_modality" (paper) or "joint" (code).
        sigma: Gaussian smoothing of the 224 x 224 map.
        fuser: "native" (fused kernel) or "torch" (unfused LSPN) at inference.
        max_memory: bytes of fusion-dataset features kept in RAM (the rest is spilled to
            temporary files); the banks are built in one shot.
        backbones, weights_dir, device, seed, batch_size, calibration, progress,
        random_weights, pointmae, tmp_dir: as every method (:class:`Detector`).
    """

    method = "g2sf"
    # what an exported G2SF runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to 224, backbone normalisation; {rgb_backbone}: offline, EfficientNet-Lite0 "
                "stage maps then patch features; paper, DINO ViT-B/8 tokens; resized to the 28 x 28 grid",
                "xyz: offline, depth image through {xyz_backbone}; paper, xmodal.ops.group_points, {xyz_backbone} "
                "(Point-MAE), xmodal.ops.three_nn_interpolate, xmodal.ops.points_to_grid; 56 x 56 grid",
                "xmodal.ops.knn of each patch against bank.img (standardised by img_stats) and bank.pcd "
                "(model.safetensors): k nearest prototypes per modality",
                "{lspn} on the [patch, prototype] pairs of the foreground patches: local scales w (background w = 1)",
                "l_j = sum_m w_m sigma_m d_m / mu_m (sigma from lspn.g, mu: model.safetensors), min over the k "
                "prototypes; bilinear upsample to 224, Gaussian blur (sigma); score = max of the grid; calibration")

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", coreset_ratio: float = 0.1,
                 pcd_background: bool = False, neighbors: int = 6, stored_neighbors: int = 20, n_synthetic: int = 800,
                 epochs: int = 80, fuser_batch_size=None, fuser_max_patches=None, lr: float = 1.5e-4,
                 lr_scale: float = 5e-3,
                 loss_weights: str = "paper", direction: str = "per_modality", sigma: float = 4.0,
                 fuser: str = "native", max_memory: int = 4 << 30, batch_size: int = 8, seed: int = 0,
                 calibration: float = 0.1, progress: bool = True, random_weights: bool = False, pointmae=None,
                 tmp_dir=None, **legacy):
        one_of(loss_weights, "loss_weights", tuple(LOSS_WEIGHTS))
        one_of(direction, "direction", DIRECTIONS)
        one_of(fuser, "fuser", FUSERS)
        if not isinstance(coreset_ratio, (int, float)) or isinstance(coreset_ratio, bool) or not 0 < coreset_ratio <= 1:
            msg = f"coreset_ratio must be a number in (0, 1]; got {coreset_ratio!r}"
            raise ValueError(msg)
        for name, value in (("lr", lr), ("lr_scale", lr_scale)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                msg = f"{name} must be a positive number; got {value!r}"
                raise ValueError(msg)
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma >= 0:
            msg = f"sigma must be a number >= 0; got {sigma!r}"
            raise ValueError(msg)
        neighbors = integer(neighbors, "neighbors", minimum=1)
        stored_neighbors = integer(stored_neighbors, "stored_neighbors", minimum=11)
        if stored_neighbors < neighbors:
            msg = f"stored_neighbors must be >= neighbors ({neighbors}); got {stored_neighbors}"
            raise ValueError(msg)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=integer(batch_size, "batch_size", minimum=1), max_memory=max_memory,
                                     max_memory_default=4 << 30, calibration=calibration, progress=progress,
                                     random_weights=random_weights, pointmae=pointmae)
        common["max_memory"] = integer(common["max_memory"], "max_memory", minimum=0)
        super().__init__(**common, coreset_ratio=float(coreset_ratio), pcd_background=bool(pcd_background),
                         neighbors=neighbors, stored_neighbors=stored_neighbors,
                         n_synthetic=integer(n_synthetic, "n_synthetic", minimum=1),
                         epochs=integer(epochs, "epochs", minimum=1),
                         fuser_batch_size=None if fuser_batch_size is None else integer(fuser_batch_size,
                                                                                        "fuser_batch_size", minimum=2),
                         fuser_max_patches=None if fuser_max_patches is None else integer(
                             fuser_max_patches, "fuser_max_patches", minimum=2),
                         lr=float(lr), lr_scale=float(lr_scale), loss_weights=loss_weights, direction=direction,
                         sigma=float(sigma), fuser=fuser, tmp_dir=None if tmp_dir is None else str(tmp_dir))
        self.banks: dict[str, MemoryBank] = {}
        self.img_stats = (0.0, 1.0)
        self.mu = np.ones(2)
        self.lspn: LSPN | None = None
        self._fused = None

    # --- backbones --------------------------------------------------------------------------
    def _heads(self) -> dict:
        """The LSPN as a graph: (features, prototypes) row pairs -> local scales w."""
        from ...engines.graphs import Head

        if self.lspn is None:
            return {"lspn": None}
        width = self.lspn.dim_img + self.lspn.dim_pcd
        return {"lspn": Head(self.lspn, {"features": ["rows", width], "prototypes": ["rows", width]}, ("scales",),
                             call=LSPN.scales, max_rows=CHUNK_ROWS * self.config["neighbors"])}

    def _build_extractor(self):
        rgb, xyz = PAPER if self.info["backbones"] == "paper" else OFFLINE
        return self._feature_extractor(rgb, xyz, 28, xyz_grid=56)

    def _features(self, batch):
        return self.extractor(batch)

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        import torch

        c = self.config
        needed = () if c["random_weights"] and c["backbones"] == "paper" else PAPER
        choice, reason = resolve(c["backbones"], needed, c["weights_dir"])
        self._record_backbones(choice, reason)
        self._fused = None
        started = time.perf_counter()
        with torch.no_grad():
            self._build_banks(samples)
        self.info["bank_seconds"] = round(time.perf_counter() - started, 3)
        from .trainer import FusionDataset, Trainer

        data = FusionDataset(c["max_memory"], c["tmp_dir"])
        try:
            started = time.perf_counter()
            with torch.no_grad():
                self._fusion_data(samples, data)
            self.info["synthesis_seconds"] = round(time.perf_counter() - started, 3)
            trainer = Trainer(data, self.banks["img"].features, self.banks["pcd"].features,
                              loss_weights=c["loss_weights"], direction=c["direction"], epochs=c["epochs"],
                              batch_size=c["fuser_batch_size"], lr=c["lr"], lr_scale=c["lr_scale"], seed=c["seed"],
                              device=c["device"], max_patches=c["fuser_max_patches"])
            from ...progress import progress

            def bar(epochs):
                return progress(epochs, "training the G2SF fuser", enabled=c["progress"], unit="epoch")

            self.lspn, info = trainer.run(bar)
            self.mu = trainer.mu
            self.info["fuser_big_m"] = trainer.big_m
            self.info.update(info)
            self.info["fuser_spilled_bytes"] = int(data.store.disk_bytes)
        finally:
            data.close()

    def _build_banks(self, samples) -> None:
        c = self.config
        ex = self.extractor
        dims = {"img": ex.rgb_channels, "pcd": ex.xyz_channels}
        cells = {"img": 28 * 28, "pcd": 56 * 56}
        builders = {m: MemoryBank.builder(dims[m], len(samples) * cells[m], coreset_ratio=c["coreset_ratio"],
                                          projection="sparse", seed=c["seed"], spill_dir=c["tmp_dir"],
                                          device=c["device"]) for m in dims}
        try:
            for batch in self._batches(samples, "extracting training features"):
                feats = self._features(batch)
                for i in range(len(batch)):
                    rgb = feats.rgb[i]
                    builders["img"].add(rgb.reshape(rgb.shape[0], -1).T.contiguous().cpu())
                    xyz = feats.xyz[i]
                    rows = xyz.reshape(xyz.shape[0], -1).T
                    if not c["pcd_background"]:
                        rows = rows[feats.foreground[i].reshape(-1)]
                    if rows.shape[0]:
                        builders["pcd"].add(rows.contiguous().cpu())
            if builders["pcd"].rows_seen == 0:
                msg = "no training sample has 3D foreground features for the PCD bank (all point clouds empty?)"
                raise ValueError(msg)
            img = builders["img"].finish()
            pcd = builders["pcd"].finish()
        finally:
            for b in builders.values():
                b.close()
        mean, std = float(img.statistics["mean"]), float(img.statistics["std"])
        std = std if std > 0 else 1.0
        self.img_stats = (mean, std)
        self.banks = {"img": MemoryBank((img.features - mean) / std), "pcd": pcd}
        self.info["bank_rows"] = {m: len(b) for m, b in self.banks.items()}
        self.info["img_statistics"] = {"mean": mean, "std": std}

    def _synthesizer(self, samples):
        from ...data.synthesis import G2SFSynthesizer

        # the reference pastes pieces > 100 px of ~800 px images: the same share of smaller images
        h, w = samples[0].shape
        min_component = min(100, int(100 * h * w / 800**2))
        return G2SFSynthesizer(_ObjectOnly(samples), raw=samples, n=self.config["n_synthetic"],
                               seed=self.config["seed"], min_component=min_component)

    def _fusion_data(self, samples, data) -> None:
        from .patches import neighbours, patch_labels

        c = self.config
        synth = _Synthetic(self._synthesizer(samples))
        mean, std = self.img_stats
        for batch in self._batches(synth, "synthesising anomalies for the fuser"):
            feats = self._features(batch)
            for i, sample in enumerate(batch):
                p = neighbours(feats, i, self.banks, mean, std, c["stored_neighbors"], c["pcd_background"])
                data.add(p, patch_labels(sample.gt, feats.xyz.shape[-1]), c["stored_neighbors"])
        data.finish()

    # --- scoring ----------------------------------------------------------------------------
    def patch_scores(self, patches, k: int | None = None, fuser: str | None = None):
        """(G3*G3,) fused patch scores min_{j<k} l_j of a :class:`.patches.PatchNeighbours`."""
        from .scoring import fused_scores_native, fused_scores_torch

        k = k or self.config["neighbors"]
        fuser = fuser or self.config["fuser"]
        mu = np.asarray(self.mu, dtype=np.float64)
        runners = self._head_runners()
        if runners is not None:  # the LSPN on the engine (either fuser): the metric itself in float32 torch
            return fused_scores_torch(patches, self.lspn, mu, self.banks, k, scales=runners["lspn"])
        if fuser == "torch":
            return fused_scores_torch(patches, self.lspn, mu, self.banks, k)
        if self._fused is None:
            from .scoring import FusedHead

            self._fused = FusedHead(self.lspn, self.banks)
        return fused_scores_native(patches, self._fused, mu, k)

    def _result(self, feats, i: int) -> AnomalyResult:
        from ..postprocess import gaussian_blur, upsample_bilinear
        from .patches import neighbours

        c = self.config
        mean, std = self.img_stats
        p = neighbours(feats, i, self.banks, mean, std, c["neighbors"], c["pcd_background"])
        side = feats.xyz.shape[-1]
        grid = self.patch_scores(p).reshape(side, side)
        full = upsample_bilinear(grid, self.map_size)
        full = gaussian_blur(full, c["sigma"]) if c["sigma"] > 0 else full
        extras = {"patch": grid.cpu().numpy(), "patch_rgb": p.dist_img[:, 0].reshape(side, side).cpu().numpy(),
                  "patch_xyz": p.dist_pcd[:, 0].reshape(side, side).cpu().numpy()}
        return AnomalyResult(score=float(grid.max()), map=full.cpu().numpy().astype(np.float32), extras=extras)

    # --- persistence ------------------------------------------------------------------------
    def _dims(self) -> tuple[int, int]:
        f = self.info["features"]
        return int(f["rgb_channels"]), int(f["xyz_channels"])

    def _state_spec(self) -> dict[str, tuple]:
        d_img, d_pcd = self._dims()
        net = LSPN(d_img, d_pcd, self.config["direction"])
        spec = {"bank.img": (None, d_img), "bank.pcd": (None, d_pcd), "img_stats": (2,), "mu": (2,)}
        spec.update({f"lspn.{k}": tuple(v.shape) for k, v in net.state_dict().items()})
        return spec

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"bank.{m}": b.to_numpy() for m, b in self.banks.items()}
        state["img_stats"] = np.asarray(self.img_stats, dtype=np.float64)
        state["mu"] = np.asarray(self.mu, dtype=np.float64)
        state.update({f"lspn.{k}": v.detach().cpu().numpy() for k, v in self.lspn.state_dict().items()})
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        device = self.config["device"]
        self.banks = {m: MemoryBank(torch.from_numpy(np.ascontiguousarray(state[f"bank.{m}"], dtype=np.float32))
                                    .to(device)) for m in ("img", "pcd")}
        self.img_stats = tuple(float(v) for v in state["img_stats"])
        self.mu = np.asarray(state["mu"], dtype=np.float64)
        d_img, d_pcd = self._dims()
        net = LSPN(d_img, d_pcd, self.config["direction"])
        net.load_state_dict({k[5:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()
                             if k.startswith("lspn.")}, strict=True)
        self.lspn = net.to(device).eval()
        self._fused = None
        self._extractor = None


__all__ = ["G2SF", "LSPN"]
