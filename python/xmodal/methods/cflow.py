"""CFLOW-AD (Gudovskiy et al., WACV 2022): conditional normalising flows on feature vectors.

A frozen encoder (WideResNet-50-2 layer1-3, the study's Table 4 setting; offline:
EfficientNet-Lite0 stages 2-4, the same strides 4, 8, 16) gives L = 3 pooling layers. Each layer
has its own decoder: a 1D flow of 8 one-sided affine couplings (:class:`xmodal.methods._flows.
coupling.OneSidedCoupling`, clamp 1.9, random-rotation "soft" permutations, fully connected
subnets Linear(d, 2d) - ReLU - Linear) conditioned on a 128-channel 2D sine/cosine positional
encoding of the feature position. Training (the official code's defaults): every feature
vector of a training image is a sample ("fibre"); fibres are shuffled and fed in batches of
256, loss -logsigmoid(log p(x | c) / C) (log-likelihood per dimension); Adam lr 2e-4; 200
epochs (25 meta-epochs x 8 sub-epochs), 32 images per encoder batch.

Anomaly map (as the paper): per layer the log-likelihood per dimension of every position,
shifted so that the largest value becomes 0, exponentiated (a likelihood in (0, 1]), bilinearly
upsampled to the input size (``align_corners=True``), summed over layers, and inverted
(anomaly = L - sum); image score = the map's maximum.

Difference from the reference code, on purpose: the reference shifts the log-likelihoods by
their maximum over the *test set* being scored (so one image's score depends on the others);
xmodal shifts by the per-layer maximum over the training images, fixed at fit time (saved with
the model). The learning-rate warm-up and cosine decay of the official code are not used
(constant lr).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ._flows.detector import FlowDetector, check_positive
from .base import AnomalyResult, register


def positional_encoding(channels: int, height: int, width: int):
    """(channels, height, width) 2D sine/cosine encoding: the first half encodes the column,
    the second half the row, each as interleaved sin/cos at geometric frequencies (base 10000)."""
    import torch

    if channels % 4:
        msg = f"condition_channels must be a multiple of 4; got {channels}"
        raise ValueError(msg)
    half = channels // 2
    freq = torch.exp(torch.arange(0, half, 2, dtype=torch.float64) * -(math.log(10000.0) / half))
    cols = torch.arange(width, dtype=torch.float64)[:, None] * freq  # (W, half/2)
    rows = torch.arange(height, dtype=torch.float64)[:, None] * freq
    pe = torch.zeros(channels, height, width, dtype=torch.float64)
    pe[0:half:2] = torch.sin(cols).T[:, None, :].expand(-1, height, -1)
    pe[1:half:2] = torch.cos(cols).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(rows).T[:, :, None].expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(rows).T[:, :, None].expand(-1, -1, width)
    return pe.float()


def _log_prob(decoder, x, cond):
    """log p(x | c) / C of every fibre under one stage's decoder."""
    from ._flows.coupling import log_likelihood

    z, logdet = decoder(x, cond)
    return log_likelihood(z, logdet) / x.shape[1]


def _make_decoders(channels, condition: int, steps: int, clamp: float, permutation: str, seed: int):
    from torch import nn

    from ._flows.coupling import Flow, OneSidedCoupling, fc_subnet

    return nn.ModuleList(
        Flow([OneSidedCoupling(c, fc_subnet(hidden_factor=2.0), cond_channels=condition, clamp=clamp,
                               permutation=permutation, seed=seed * 1009 + 97 * level + i, spatial=False)
              for i in range(steps)])
        for level, c in enumerate(channels))


@register
class CFlow(FlowDetector):
    """CFLOW-AD detector on RGB images.

    Args:
        backbones: "auto" (WideResNet-50-2 layer1-3 when its weight file is found, else
            EfficientNet-Lite0 stages 2-4), "paper" or "offline".
        coupling_blocks: coupling steps per decoder (8).
        condition_channels: positional-encoding channels (128).
        clamp: soft bound of the log-scales (1.9).
        permutation: "soft" (random rotations, the official code) or "hard" (anomalib's default).
        fiber_batch: fibres per optimiser step (256).
        input_size: image side the encoder reads (224 in the study).
        epochs, batch_size, lr, weight_decay: 200 passes (25 x 8), 32 images per encoder batch,
            Adam 2e-4 without weight decay.
        max_memory, weights_dir, device, seed, calibration, progress, random_weights: see
            :class:`xmodal.methods.FastFlow` and :class:`xmodal.methods.Detector`.
    """

    method = "cflow"
    # what an exported CFlow runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to input_size, backbone normalisation",
                "{backbone}: stage maps",
                "per stage: feature vectors and their 2D sine/cosine positional encoding (condition_channels) -> "
                "{decoder_<level>} (decoder_0, decoder_1, ...): log-likelihood per dimension",
                "exp(log p - max_logp (model.safetensors)), bilinear upsample (align_corners), sum over stages, "
                "L - sum; score = max of the map; calibration")
    PAPER: ClassVar[dict] = {"rgb": "wide_resnet50_2", "stages": ["layer1", "layer2", "layer3"]}
    OFFLINE: ClassVar[dict] = {"rgb": "efficientnet_lite0", "stages": [2, 3, 4]}

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", coupling_blocks: int = 8,
                 condition_channels: int = 128, clamp: float = 1.9, permutation: str = "soft",
                 fiber_batch: int = 256, input_size: int = 224, epochs: int = 200, batch_size: int = 32,
                 lr: float = 2e-4, weight_decay: float = 0.0, max_memory: int = 4 << 30, seed: int = 0,
                 calibration: float = 0.1, progress: bool = True, random_weights: bool = False, **legacy):
        from .._arrays import one_of

        one_of(permutation, "permutation", ("soft", "hard"))
        condition_channels = check_positive("condition_channels", condition_channels, integer_only=True)
        if condition_channels % 4:
            msg = f"condition_channels must be a multiple of 4; got {condition_channels}"
            raise ValueError(msg)
        common = self._flow_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                    batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                    max_memory=max_memory, calibration=calibration, progress=progress,
                                    random_weights=random_weights)
        super().__init__(coupling_blocks=check_positive("coupling_blocks", coupling_blocks, integer_only=True),
                         condition_channels=condition_channels, clamp=check_positive("clamp", clamp),
                         permutation=permutation, fiber_batch=check_positive("fiber_batch", fiber_batch,
                                                                             integer_only=True),
                         input_size=check_positive("input_size", input_size, integer_only=True), **common)
        self.map_size = self.config["input_size"]
        self.flow = None
        self.max_logp = None

    def _make_flow(self):
        c = self.config
        return _make_decoders(self.info["features"]["channels"], c["condition_channels"], c["coupling_blocks"],
                              c["clamp"], c["permutation"], c["seed"])

    def _fibres(self, feat, level: int):
        """(B*h*w, C) feature vectors and their (B*h*w, P) conditions."""
        b, ch, h, w = feat.shape
        pe = positional_encoding(self.config["condition_channels"], h, w).to(feat.device)
        cond = pe.reshape(pe.shape[0], -1).T.repeat(b, 1)
        return feat.permute(0, 2, 3, 1).reshape(-1, ch), cond

    def _log_prob(self, level: int, x, cond):
        """log p(x | c) / C of every fibre: the paper's per-dimension log-likelihood."""
        return _log_prob(self.flow[level], x, cond)

    def _heads(self) -> dict:
        """One graph per stage's decoder: (rows, condition) -> log-likelihood per dimension."""
        from ..engines.graphs import Head

        if self.flow is None:
            return {"decoder_0": None}
        c, f = self.config, self.info["features"]
        rows = c["batch_size"] * math.ceil(c["input_size"] / min(f["strides"])) ** 2  # a batch's finest stage
        return {f"decoder_{level}": Head(decoder, {"rows": ["rows", int(ch)],
                                                   "condition": ["rows", c["condition_channels"]]},
                                         ("log_prob",), call=_log_prob, max_rows=rows)
                for level, (decoder, ch) in enumerate(zip(self.flow, f["channels"], strict=True))}

    def _train_batch(self, feats, optimizer, generator) -> float:
        import torch
        import torch.nn.functional as F

        total, count = 0.0, 0
        n = self.config["fiber_batch"]
        for level, feat in enumerate(feats):
            x, cond = self._fibres(feat, level)
            order = torch.randperm(x.shape[0], generator=generator).to(x.device)
            for first in range(0, x.shape[0], n):
                pick = order[first : first + n]
                optimizer.zero_grad(set_to_none=True)
                loss = -F.logsigmoid(self._log_prob(level, x[pick], cond[pick])).mean()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(pick)
                count += len(pick)
        return total / count

    def _level_maps(self, feats):
        """Per layer: (B, h, w) log-likelihood per dimension."""
        runners = self._head_runners()
        out = []
        for level, feat in enumerate(feats):
            b, _, h, w = feat.shape
            x, cond = self._fibres(feat, level)
            lp = self._log_prob(level, x, cond) if runners is None else runners[f"decoder_{level}"](x, cond)[0]
            out.append(lp.reshape(b, h, w))
        return out

    def _after_training(self, samples) -> None:
        import torch

        maxima = None
        with torch.no_grad():
            for batch in self._batches(samples, "likelihood range of the training images"):
                m = torch.stack([lp.amax() for lp in self._level_maps(self._features(batch))]).double().cpu()
                maxima = m if maxima is None else torch.maximum(maxima, m)
        self.max_logp = maxima.numpy()
        self.info["max_log_likelihood"] = [float(v) for v in self.max_logp]

    def _result(self, feats, i: int) -> AnomalyResult:
        import torch
        import torch.nn.functional as F

        one = [f[i : i + 1] for f in feats]
        total = 0.0
        for level, lp in enumerate(self._level_maps(one)):
            prob = torch.exp(lp.double() - float(self.max_logp[level]))[:, None]
            total = total + F.interpolate(prob, size=(self.map_size, self.map_size), mode="bilinear",
                                          align_corners=True)[0, 0]
        anomaly = (len(feats) - total).float()
        return AnomalyResult(score=float(anomaly.max()), map=anomaly.cpu().numpy().astype(np.float32))

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "cflow.max_logp": np.asarray(self.max_logp, dtype=np.float64)}

    def _state_spec(self) -> dict[str, tuple]:
        return {**super()._state_spec(), "cflow.max_logp": (len(self.info["features"]["channels"]),)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        super()._restore(state)
        self.max_logp = np.asarray(state["cflow.max_logp"], dtype=np.float64)
