"""CFM: Crossmodal Feature Mapping (Costanzino et al., CVPR 2024, and its supplementary material).

Two small networks learn, on normal parts only, to predict each pixel's 3D feature from its 2D
feature and the 2D feature from the 3D one. At test time a pixel whose features disagree with
what the other modality predicts is anomalous: d = || n(predicted) - n(real) || per direction,
combined by product (default), sum or max, smoothed with CFM's box filters; the image score is
the map's maximum, with the paper's defaults (and the reference code's where the paper is silent).

Differences from the reference code, on purpose: training features are extracted once and
cached (the reference re-extracts them every epoch); the discrepancies come from xmodal's fused
scorer, which skips background pixels (the reference computes and then zeros them: same map).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._arrays import integer, number, one_of
from ._backbones import resolve
from ._store import FeatureStore
from .base import AnomalyResult, Detector, register
from .postprocess import box_blur_cfm

PRUNING = {"full": 12, "M": 8, "S": 4, "T": 1}  # blocks kept in both transformers (Ours-M/S/T)
AGGREGATIONS = ("product", "sum", "max")
MLP_KINDS = ("projection", "encoder_decoder")
TRAIN_PRECISIONS = ("fp32", "bf16")
VALIDATION_ROWS = 50_000  # rows of the held-out images the early-stopping loss is measured on


def _widths(d_in: int, d_out: int, kind: str) -> list[int]:
    if kind == "projection":
        hidden = (d_in + d_out) // 2
        return [d_in, hidden, hidden, d_out]
    if kind == "encoder_decoder":
        return [d_in, d_in // 2, d_in // 4, d_in // 4, d_in // 2, d_out]
    msg = f"mlp must be one of {MLP_KINDS}; got {kind!r}"
    raise ValueError(msg)


def mapping_network(d_in: int, d_out: int, kind: str = "projection"):
    """CFM's feature mapping MLP as a torch Sequential.

    "projection" (the paper's): Linear(in, h) GELU Linear(h, h) GELU Linear(h, out) with
    h = (in + out) // 2. "encoder_decoder" (supplementary §B): widths
    [in, in/2, in/4, in/4, in/2, out], GELU after every layer but the last.
    """
    import torch

    widths = _widths(d_in, d_out, kind)
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
        batch_size: images per optimisation step (paper: 4) and per inference batch.
        lr: Adam learning rate (paper: 1e-3, other Adam settings default).
        aggregation: "product" (paper), "sum" or "max" of the 2D and 3D discrepancies.
        pruning: "full", "M", "S", "T": keep 12, 8, 4 or 1 blocks of both transformers.
        mlp: "projection" (paper) or "encoder_decoder" (supplementary).
        square_pad: CFM's edge-replicating square pad of the RGB image (reference: True).
        seed: seeds the networks' initialisation, the batch order and the held-out
            calibration images (reference: 115).
        max_memory: bytes of training features kept in RAM; the rest goes to temporary
            memory-mapped files (``max_cache_bytes`` is its deprecated old name).
        calibration: share of the training images held out to calibrate the threshold when
            the dataset has no validation split (0: no calibration); see :meth:`Detector.fit`.
        progress: progress bars and the backbone announcement on stderr.
        random_weights: backbones with random weights (tests and benchmarks only).
        pointmae: :class:`PointMAEOptions` (or a dict); the flat ``num_group``, ``group_size``,
            ``reference_fps`` and ``reference_train_mode`` keywords still work.
        tmp_dir: folder for the temporary feature files (default: the system's).
        row_fraction: share of each image's foreground rows drawn afresh at every optimisation
            step (default 1/8: as many steps as the paper, 7-8x less work, same I-AUROC/AUPRO
            on synthetic data, ``benchmarks/bench_cfm_training.py``); 1.0 is the paper's
            setting (every row), which with ``train_precision="fp32"`` and ``patience=None``
            reproduces the plain training loop exactly.
        train_precision: "fp32" (default) or "bf16" (bfloat16 autocast in the networks: about
            1.6x faster on CPUs with AVX512-BF16/AMX, slow where bf16 is emulated).
        patience: early stopping: hold out 5 % of the training images and stop once their loss
            has not improved for this many epochs, keeping the best networks (None: off).
    """

    method = "cfm"

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", epochs: int = 50,
                 batch_size: int = 4, lr: float = 1e-3, aggregation: str = "product", pruning: str = "full",
                 mlp: str = "projection", square_pad: bool = True, seed: int = 115, max_memory: int = 4 << 30,
                 calibration: float = 0.1, progress: bool = True, random_weights: bool = False, pointmae=None,
                 tmp_dir=None, row_fraction: float = 0.125, train_precision: str = "fp32", patience=None, **legacy):
        one_of(aggregation, "aggregation", AGGREGATIONS)
        one_of(train_precision, "train_precision", TRAIN_PRECISIONS)
        row_fraction = number(row_fraction, "row_fraction", minimum=0, maximum=1, low_open=True)
        patience = integer(patience, "patience", minimum=1, allow_none=True)
        one_of(pruning, "pruning", tuple(PRUNING))
        one_of(mlp, "mlp", MLP_KINDS)
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive int; got {value!r}"
                raise ValueError(msg)
        common = self.common_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                     batch_size=batch_size, max_memory=max_memory, max_memory_default=4 << 30,
                                     calibration=calibration, progress=progress, random_weights=random_weights,
                                     pointmae=pointmae)
        common["max_memory"] = integer(common["max_memory"], "max_memory", minimum=0)
        super().__init__(**common, epochs=epochs, lr=float(lr), aggregation=aggregation, pruning=pruning, mlp=mlp,
                         square_pad=bool(square_pad), tmp_dir=None if tmp_dir is None else str(tmp_dir),
                         row_fraction=float(row_fraction), train_precision=train_precision, patience=patience)
        self.mlp_2d3d = None
        self.mlp_3d2d = None

    # --- pieces -----------------------------------------------------------------------------
    def _build_extractor(self):
        c = self.config
        if self.info["backbones"] == "paper":
            depth = PRUNING[c["pruning"]]
            return self._feature_extractor("dino_vitb8", "pointmae", self.map_size, square_pad=c["square_pad"],
                                           rgb_depth=depth, pointmae_depth=depth)
        return self._feature_extractor("efficientnet_lite0", "depth", self.map_size, square_pad=c["square_pad"])

    def _features(self, batch):
        return self.extractor(batch)

    @staticmethod
    def _rows(feats, i: int):
        """(2D rows (G*G, C2), 3D rows (G*G, C3), foreground (G*G,) bool) of image i of a batch."""
        fg = feats.foreground[i].reshape(-1)
        f2d = feats.rgb[i].reshape(feats.rgb.shape[1], -1).T
        f3d = feats.xyz[i].reshape(feats.xyz.shape[1], -1).T
        return f2d, f3d, fg

    # --- fit --------------------------------------------------------------------------------
    def _fit(self, samples) -> None:
        """Extracts the training features once (cached by a FeatureStore), then trains both
        mapping networks."""
        import torch

        c = self.config
        choice, reason = resolve(c["backbones"], ("dino_vitb8", "pointmae"), c["weights_dir"])
        self._record_backbones(choice, reason)
        store = FeatureStore(c["max_memory"], c["tmp_dir"])
        try:
            started = time.perf_counter()
            for batch in self._batches(samples, "extracting training features", size=4 if choice == "offline" else 1):
                feats = self._features(batch)
                for i in range(len(batch)):
                    f2d, f3d, fg = self._rows(feats, i)
                    if fg.any():
                        store.append(f2d[fg].cpu().numpy(), f3d[fg].cpu().numpy())
            if len(store) == 0:
                msg = "no training sample has foreground 3D data (all point clouds empty?)"
                raise ValueError(msg)
            self.info["extraction_seconds"] = round(time.perf_counter() - started, 3)
            self.info["training_rows"] = store.row_count()
            self._train(store, torch.device(c["device"]))
        finally:
            store.close()

    def _train(self, store: FeatureStore, device) -> None:
        """Adam on the cosine losses of both directions, ``batch_size`` images per step.

        With the paper setting (``row_fraction=1``, ``train_precision="fp32"``, no ``patience``)
        every step sees every foreground row of its images, exactly as before these options
        existed (same random stream, same result). ``row_fraction`` < 1 draws that share of each
        image's rows afresh at every step: as many optimisation steps, each on fewer rows.
        ``patience`` holds out 5 % of the training images (at least one, when there are two or
        more) and stops once their loss has not improved for ``patience`` epochs, keeping the
        best networks.
        """
        import torch

        from ..progress import progress

        c = self.config
        torch.manual_seed(c["seed"])
        d2, d3 = self.extractor.rgb_channels, self.extractor.xyz_channels
        self.mlp_2d3d = mapping_network(d2, d3, c["mlp"]).to(device)
        self.mlp_3d2d = mapping_network(d3, d2, c["mlp"]).to(device)
        params = list(self.mlp_2d3d.parameters()) + list(self.mlp_3d2d.parameters())
        optimizer = torch.optim.Adam(params, lr=c["lr"])
        rng = np.random.default_rng(c["seed"])
        train_items, val_rows = self._validation_split(store, c["patience"])
        fraction, step_size = c["row_fraction"], c["batch_size"]
        steps_per_epoch = (len(train_items) + step_size - 1) // step_size
        best, best_state, stale = math.inf, None, 0
        started = time.perf_counter()
        losses, val_losses, rows_seen = [], [], 0
        bar = progress(range(c["epochs"]), "training mapping networks", enabled=c["progress"], unit="epoch")
        for _ in bar:
            self.mlp_2d3d.train()
            self.mlp_3d2d.train()
            order = train_items[rng.permutation(len(train_items))]
            epoch_loss = 0.0
            for first in range(0, len(order), step_size):
                items = order[first : first + step_size]
                f2d, f3d = store.rows(items) if fraction >= 1 else store.sample_rows(items, fraction, rng)
                rows_seen += len(f2d)
                loss = self._loss(torch.from_numpy(np.asarray(f2d)).to(device),
                                  torch.from_numpy(np.asarray(f3d)).to(device))
                if not torch.isfinite(loss):
                    msg = "CFM training diverged (non-finite loss)"
                    raise RuntimeError(msg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += float(loss.detach())
            losses.append(epoch_loss / steps_per_epoch)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if val_rows is None:
                continue
            val_losses.append(self._validation_loss(val_rows, device))
            if not math.isfinite(best) or val_losses[-1] < best - 1e-4 * abs(best):
                best, stale = val_losses[-1], 0
                best_state = [p.detach().clone() for p in params]
            else:
                stale += 1
                if stale >= c["patience"]:
                    break
        if best_state is not None:
            with torch.no_grad():
                for p, kept in zip(params, best_state, strict=True):
                    p.copy_(kept)
        self.mlp_2d3d.eval()
        self.mlp_3d2d.eval()
        seconds = time.perf_counter() - started
        self.info["training_seconds"] = round(seconds, 3)
        self.info["training_rows_per_second"] = round(rows_seen / max(seconds, 1e-9))
        self.info["epochs_run"] = len(losses)
        self.info["loss_per_epoch"] = [round(v, 6) for v in losses]
        if val_losses:
            self.info["validation_loss_per_epoch"] = [round(v, 6) for v in val_losses]

    def _loss(self, f2d, f3d):
        """Both directions' cosine losses; the networks run in bfloat16 autocast with
        ``train_precision="bf16"`` (the cosine itself in float32)."""
        import torch

        cosine = torch.nn.functional.cosine_similarity
        enabled = self.config["train_precision"] == "bf16"
        with torch.autocast(f2d.device.type, dtype=torch.bfloat16, enabled=enabled):
            pred_3d, pred_2d = self.mlp_2d3d(f2d), self.mlp_3d2d(f3d)
        loss_3d = 1 - cosine(pred_3d.float(), f3d, dim=-1, eps=1e-6).mean()
        loss_2d = 1 - cosine(pred_2d.float(), f2d, dim=-1, eps=1e-6).mean()
        return loss_3d + loss_2d

    def _validation_split(self, store: FeatureStore, patience):
        """(training image indices, validation rows or None): 5 % of the images (at least one,
        at most ``VALIDATION_ROWS`` rows of them) are held out when ``patience`` is set."""
        everything = np.arange(len(store))
        if patience is None or len(store) < 2:
            return everything, None
        rng = np.random.default_rng([self.config["seed"], 1])  # apart from the training stream
        held = np.sort(rng.choice(len(store), size=max(1, round(0.05 * len(store))), replace=False))
        rows = sum(store.image_rows(i) for i in held)
        val_rows = store.sample_rows(held, min(1.0, VALIDATION_ROWS / max(rows, 1)), rng)
        return np.setdiff1d(everything, held), val_rows

    def _validation_loss(self, rows, device) -> float:
        import torch

        self.mlp_2d3d.eval()
        self.mlp_3d2d.eval()
        with torch.no_grad():
            f2d, f3d = (torch.from_numpy(np.asarray(r)).to(device) for r in rows)
            return float(self._loss(f2d, f3d))

    # --- predict ----------------------------------------------------------------------------
    def _uses_points(self) -> bool:
        return True  # the discrepancies exist on foreground pixels only

    def _result(self, feats, i: int) -> AnomalyResult:
        import torch

        from ..ops import crossmodal_discrepancy

        f2d, f3d, fg = self._rows(feats, i)
        d = crossmodal_discrepancy(f2d.contiguous(), f3d.contiguous(), self.mlp_2d3d, self.mlp_3d2d, fg)
        aggregation = self.config["aggregation"]
        if aggregation == "product":
            psi = d.d_2d * d.d_3d
        elif aggregation == "sum":
            psi = d.d_2d + d.d_3d
        else:
            psi = torch.maximum(d.d_2d, d.d_3d)
        side = self.map_size
        psi = (psi * fg).reshape(side, side)
        score_map = box_blur_cfm(psi).cpu().numpy().astype(np.float32)
        extras = {"d_2d": d.d_2d.reshape(side, side).cpu().numpy(), "d_3d": d.d_3d.reshape(side, side).cpu().numpy(),
                  "foreground": feats.foreground[i].cpu().numpy()}
        return AnomalyResult(score=float(score_map.max()), map=score_map, extras=extras)

    def target_mask(self, sample) -> np.ndarray:
        """Ground truth as CFM's loader prepares it: square pad (when ``square_pad``), nearest
        resize to 224, > 0.5, matching the geometry of the RGB input and of the map."""
        from ..data.preprocess import resize_gt

        return resize_gt(sample.mask(), self.map_size, square=self.config["square_pad"])

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
    def _networks(self) -> dict:
        features = self.info["features"]
        d2, d3 = int(features["rgb_channels"]), int(features["xyz_channels"])
        return {"mlp_2d3d": (d2, d3), "mlp_3d2d": (d3, d2)}

    def _state_spec(self) -> dict[str, tuple]:
        spec = {}
        for prefix, (d_in, d_out) in self._networks().items():
            widths = _widths(d_in, d_out, self.config["mlp"])
            for layer in range(len(widths) - 1):  # Linear layers sit at every other Sequential index
                spec[f"{prefix}.{2 * layer}.weight"] = (widths[layer + 1], widths[layer])
                spec[f"{prefix}.{2 * layer}.bias"] = (widths[layer + 1],)
        return spec

    def _state(self) -> dict[str, np.ndarray]:
        state = {}
        for prefix, net in (("mlp_2d3d", self.mlp_2d3d), ("mlp_3d2d", self.mlp_3d2d)):
            for key, value in net.state_dict().items():
                state[f"{prefix}.{key}"] = value.detach().cpu().numpy()
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        import torch

        device = torch.device(self.config["device"])
        for prefix, (d_in, d_out) in self._networks().items():
            net = mapping_network(d_in, d_out, self.config["mlp"])
            keys = {k[len(prefix) + 1 :]: torch.from_numpy(v) for k, v in state.items() if k.startswith(prefix + ".")}
            net.load_state_dict(keys, strict=True)
            setattr(self, prefix, net.to(device).eval())
