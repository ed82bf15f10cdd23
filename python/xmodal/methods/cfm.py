"""CFM: Crossmodal Feature Mapping (Costanzino et al., CVPR 2024; `shared/papers/cfm-supplementary.txt`).

Two small networks learn, on normal parts only, to predict each pixel's 3D feature from its 2D
feature and the 2D feature from the 3D one. At test time a pixel whose features disagree with
what the other modality predicts is anomalous: d = || n(predicted) - n(real) || per direction,
combined by product (default), sum or max, smoothed with CFM's box filters; the image score is
the map's maximum. Facts followed: `shared/reference/methods.md` §2.

Differences from the reference code, on purpose: training features are extracted once and
cached (the reference re-extracts them every epoch); the discrepancies come from xmodal's fused
scorer, which skips background pixels (the reference computes and then zeros them: same map).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .._arrays import one_of
from ._backbones import resolve
from ._maps import box_blur_cfm
from ._store import FeatureStore
from .base import AnomalyResult, Detector, register

PRUNING = {"full": 12, "M": 8, "S": 4, "T": 1}  # blocks kept in both transformers (Ours-M/S/T)
AGGREGATIONS = ("product", "sum", "max")
MLP_KINDS = ("projection", "encoder_decoder")
GRID = 224


def mapping_network(d_in: int, d_out: int, kind: str = "projection"):
    """CFM's feature mapping MLP as a torch Sequential.

    "projection" (the paper's): Linear(in, h) GELU Linear(h, h) GELU Linear(h, out) with
    h = (in + out) // 2. "encoder_decoder" (supplementary §B): widths
    [in, in/2, in/4, in/4, in/2, out], GELU after every layer but the last.
    """
    import torch

    if kind == "projection":
        hidden = (d_in + d_out) // 2
        widths = [d_in, hidden, hidden, d_out]
    elif kind == "encoder_decoder":
        widths = [d_in, d_in // 2, d_in // 4, d_in // 4, d_in // 2, d_out]
    else:
        msg = f"mlp must be one of {MLP_KINDS}; got {kind!r}"
        raise ValueError(msg)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(torch.nn.GELU())
    return torch.nn.Sequential(*layers)


@register
class CFM(Detector):
    """Crossmodal Feature Mapping.

    Args:
        backbones: "auto" (paper backbones when their weight files are found, else offline),
            "paper" (DINO ViT-B/8 + Point-MAE, local weight files) or "offline"
            (EfficientNet-Lite0 on the RGB image and on the depth image).
        weights_dir: folder with the paper backbones' weight files (else ``$XMODAL_WEIGHTS``).
        device: "cpu" or "cuda[:N]".
        epochs: training epochs (paper: 50).
        batch_size: images per optimisation step (paper: 4).
        lr: Adam learning rate (paper: 1e-3, other Adam settings default).
        aggregation: "product" (paper), "sum" or "max" of the 2D and 3D discrepancies.
        pruning: "full", "M", "S", "T": keep 12, 8, 4 or 1 blocks of both transformers.
        mlp: "projection" (paper) or "encoder_decoder" (supplementary).
        square_pad: CFM's edge-replicating square pad of the RGB image (reference: True).
        seed: seeds the networks' initialisation and the batch order (reference: 115).
        max_cache_bytes: training features beyond this go to temporary memory-mapped files.
        progress: progress bars and the backbone announcement on stderr.
        random_weights: backbones with random weights (tests and benchmarks only).
        num_group, group_size, reference_fps, reference_train_mode: Point-MAE options (see
            :class:`xmodal.backbones.FeatureExtractor`).
    """

    method = "cfm"

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", epochs: int = 50,
                 batch_size: int = 4, lr: float = 1e-3, aggregation: str = "product", pruning: str = "full",
                 mlp: str = "projection", square_pad: bool = True, seed: int = 115,
                 max_cache_bytes: int = 4 << 30, progress: bool = True, random_weights: bool = False,
                 num_group: int = 1024, group_size: int = 128, reference_fps: bool = False,
                 reference_train_mode: bool = False):
        one_of(aggregation, "aggregation", AGGREGATIONS)
        one_of(pruning, "pruning", tuple(PRUNING))
        one_of(mlp, "mlp", MLP_KINDS)
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive int; got {value!r}"
                raise ValueError(msg)
        super().__init__(backbones=backbones, weights_dir=None if weights_dir is None else str(weights_dir),
                         device=str(device), epochs=epochs, batch_size=batch_size, lr=float(lr),
                         aggregation=aggregation, pruning=pruning, mlp=mlp, square_pad=square_pad, seed=seed,
                         max_cache_bytes=int(max_cache_bytes), progress=progress, random_weights=random_weights,
                         num_group=num_group, group_size=group_size, reference_fps=reference_fps,
                         reference_train_mode=reference_train_mode)
        self._extractor = None
        self.mlp_2d3d = None
        self.mlp_3d2d = None

    # --- pieces -----------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.config["progress"]:
            print(f"[xmodal cfm] {message}", file=sys.stderr, flush=True)

    def _extractor_for(self, choice: str):
        from ..backbones import FeatureExtractor

        c = self.config
        depth = PRUNING[c["pruning"]]
        if choice == "paper":
            return FeatureExtractor("dino_vitb8", "pointmae", GRID, device=c["device"], weights_dir=c["weights_dir"],
                                    random_weights=c["random_weights"], square_pad=c["square_pad"], rgb_depth=depth,
                                    pointmae_depth=depth, num_group=c["num_group"], group_size=c["group_size"],
                                    reference_fps=c["reference_fps"], reference_train_mode=c["reference_train_mode"])
        return FeatureExtractor("efficientnet_lite0", "depth", GRID, device=c["device"],
                                random_weights=c["random_weights"], square_pad=c["square_pad"])

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = self._extractor_for(self.info["backbones"])
        return self._extractor

    def _rows(self, feats, i: int):
        """(foreground rows 2D, 3D, flat foreground indices) of image i of a Features batch."""
        fg = feats.foreground[i].reshape(-1)
        f2d = feats.rgb[i].reshape(feats.rgb.shape[1], -1).T
        f3d = feats.xyz[i].reshape(feats.xyz.shape[1], -1).T
        return f2d[fg], f3d[fg], fg

    # --- fit --------------------------------------------------------------------------------
    def fit(self, samples) -> CFM:
        """Extracts the training features once, then trains both mapping networks.

        Args:
            samples: iterable of good :class:`xmodal.data.Sample` (e.g. ``MVTec3D(root, c, "train")``).
        """
        import torch

        from ..progress import progress

        c = self.config
        choice, reason = resolve(c["backbones"], ("dino_vitb8", "pointmae"), c["weights_dir"])
        self._log(f"backbones: {choice} ({reason})")
        self.info = {"backbones": choice, "backbones_reason": reason}
        self._extractor = None
        extractor = self.extractor
        self.info["features"] = extractor.describe()
        samples = list(samples)
        if not samples:
            msg = "samples must hold at least one training Sample"
            raise ValueError(msg)

        store = FeatureStore(c["max_cache_bytes"])
        started = time.perf_counter()
        batch = 4 if choice == "offline" else 1
        for first in progress(range(0, len(samples), batch), "extracting training features",
                              enabled=c["progress"], total=(len(samples) + batch - 1) // batch):
            feats = extractor(samples[first : first + batch])
            for i in range(feats.rgb.shape[0]):
                f2d, f3d, _ = self._rows(feats, i)
                if f2d.shape[0] == 0:
                    continue
                store.append(f2d.cpu().numpy(), f3d.cpu().numpy())
        if len(store) == 0:
            msg = "no training sample has foreground 3D data (all point clouds empty?)"
            raise ValueError(msg)
        self.info["extraction_seconds"] = round(time.perf_counter() - started, 3)
        self.info["training_rows"] = store.row_count()

        torch.manual_seed(c["seed"])
        device = torch.device(c["device"])
        d2, d3 = extractor.rgb_channels, extractor.xyz_channels
        self.mlp_2d3d = mapping_network(d2, d3, c["mlp"]).to(device)
        self.mlp_3d2d = mapping_network(d3, d2, c["mlp"]).to(device)
        params = list(self.mlp_2d3d.parameters()) + list(self.mlp_3d2d.parameters())
        optimizer = torch.optim.Adam(params, lr=c["lr"])
        cosine = torch.nn.CosineSimilarity(dim=-1, eps=1e-6)
        rng = np.random.default_rng(c["seed"])
        started = time.perf_counter()
        losses = []
        bar = progress(range(c["epochs"]), "training mapping networks", enabled=c["progress"])
        for _ in bar:
            self.mlp_2d3d.train()
            self.mlp_3d2d.train()
            order = rng.permutation(len(store))
            epoch_loss = 0.0
            for first in range(0, len(order), c["batch_size"]):
                f2d, f3d = store.rows(order[first : first + c["batch_size"]])
                f2d = torch.from_numpy(np.asarray(f2d)).to(device)
                f3d = torch.from_numpy(np.asarray(f3d)).to(device)
                loss_3d = 1 - cosine(self.mlp_2d3d(f2d), f3d).mean()
                loss_2d = 1 - cosine(self.mlp_3d2d(f3d), f2d).mean()
                loss = loss_3d + loss_2d
                if not torch.isfinite(loss):
                    msg = "CFM training diverged (non-finite loss)"
                    raise RuntimeError(msg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += float(loss.detach())
            losses.append(epoch_loss / ((len(order) + c["batch_size"] - 1) // c["batch_size"]))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        store.close()
        self.mlp_2d3d.eval()
        self.mlp_3d2d.eval()
        self.info["training_seconds"] = round(time.perf_counter() - started, 3)
        self.info["loss_per_epoch"] = [round(v, 6) for v in losses]
        self.fitted = True
        return self

    # --- predict ----------------------------------------------------------------------------
    def _score(self, feats, i: int) -> AnomalyResult:
        import torch

        from ..ops import crossmodal_discrepancy

        fg = feats.foreground[i].reshape(-1)
        f2d = feats.rgb[i].reshape(feats.rgb.shape[1], -1).T.contiguous()
        f3d = feats.xyz[i].reshape(feats.xyz.shape[1], -1).T.contiguous()
        d = crossmodal_discrepancy(f2d, f3d, self.mlp_2d3d, self.mlp_3d2d, fg)
        aggregation = self.config["aggregation"]
        if aggregation == "product":
            psi = d.d_2d * d.d_3d
        elif aggregation == "sum":
            psi = d.d_2d + d.d_3d
        else:
            psi = torch.maximum(d.d_2d, d.d_3d)
        psi = (psi * fg).reshape(GRID, GRID)
        smoothed = box_blur_cfm(psi)
        score_map = smoothed.cpu().numpy().astype(np.float32)
        extras = {"d_2d": d.d_2d.reshape(GRID, GRID).cpu().numpy(), "d_3d": d.d_3d.reshape(GRID, GRID).cpu().numpy(),
                  "foreground": feats.foreground[i].cpu().numpy()}
        return AnomalyResult(score=float(score_map.max()), map=score_map, extras=extras)

    def _predict(self, sample) -> AnomalyResult:
        import torch

        with torch.no_grad():
            return self._score(self.extractor(sample), 0)

    def predict_batch(self, samples, batch_size: int = 4) -> list[AnomalyResult]:
        """Scores samples with the backbones run in batches of ``batch_size``."""
        import torch

        from .base import as_sample

        self._require_fitted()
        samples = [as_sample(s) for s in samples]
        out = []
        with torch.no_grad():
            for first in range(0, len(samples), batch_size):
                feats = self.extractor(samples[first : first + batch_size])
                out.extend(self._score(feats, i) for i in range(feats.rgb.shape[0]))
        return out

    def target_mask(self, sample) -> np.ndarray:
        """Ground truth as CFM's loader prepares it: square pad (when ``square_pad``), nearest
        resize to 224, > 0.5, matching the geometry of the RGB input and of the map."""
        from ..data.preprocess import resize_gt

        return resize_gt(sample.mask(), GRID, square=self.config["square_pad"])

    def map_on_image(self, result: AnomalyResult, sample) -> np.ndarray:
        """The map back on the sample's image: undo the square pad, then resize."""
        if not self.config["square_pad"]:
            return result.map_at(sample.shape)
        h, w = sample.shape
        side = max(h, w)
        square = result.map_at((side, side))
        top, left = (side - h) // 2, (side - w) // 2
        return np.ascontiguousarray(square[top : top + h, left : left + w])

    # --- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        state = {}
        for prefix, net in (("mlp_2d3d", self.mlp_2d3d), ("mlp_3d2d", self.mlp_3d2d)):
            for key, value in net.state_dict().items():
                state[f"{prefix}.{key}"] = value.detach().cpu().numpy()
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        features = self.info["features"]
        d2, d3 = features["rgb_channels"], features["xyz_channels"]
        device = torch.device(self.config["device"])
        self.mlp_2d3d = mapping_network(d2, d3, self.config["mlp"])
        self.mlp_3d2d = mapping_network(d3, d2, self.config["mlp"])
        for prefix, net in (("mlp_2d3d", self.mlp_2d3d), ("mlp_3d2d", self.mlp_3d2d)):
            keys = {k[len(prefix) + 1 :]: torch.from_numpy(v) for k, v in state.items() if k.startswith(prefix + ".")}
            net.load_state_dict(keys, strict=True)
            net.to(device).eval()
