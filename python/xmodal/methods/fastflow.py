"""FastFlow (Yu et al., arXiv:2111.07677, 2021): 2D normalising flows on frozen CNN feature maps.

Each feature level of a frozen backbone (WideResNet-50-2 layer1-3, the benchmark study's Table 4
setting; offline: EfficientNet-Lite0 stages 2-4, the same strides 4, 8, 16) goes through a
learnable LayerNorm over (C, H, W) and its own fully convolutional flow of 8 coupling steps
whose subnets alternate 3x3 and 1x1 convolutions (hidden channels = input channels x
``hidden_ratio``, 1.0 for ResNet-type backbones), affine couplings with the log-scale
soft-clamped at 2 (:class:`xmodal.methods._flows.coupling.OneSidedCoupling`). Training
maximises the likelihood of the good images' features: loss = sum over levels of the batch mean
of 0.5 |z|^2 - log|det J| (Adam, lr 1e-3, weight decay 1e-5, 500 epochs, batch 32: the paper's
settings).

Anomaly map: per level 0.5 x the channel mean of z^2 (the negative log-likelihood per dimension
up to constants and the Jacobian term), bilinearly upsampled to the input size and averaged over
levels; image score = the map's maximum. ``map_mode="probability"`` gives the reference code's
map instead, -exp(-0.5 mean_c z^2) averaged over levels (saturates at 0 for strong anomalies).

Differences from the paper: ResNet-18 and the transformer backbones are not available in xmodal
(WideResNet-50-2 is the study's choice). Backbone features of the training images are computed
once and cached (the backbone is frozen, so every epoch sees the same features).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._arrays import one_of
from ._flows.detector import FlowDetector, check_positive
from .base import AnomalyResult, register

MAP_MODES = ("nll", "probability")


def _make_net(channels, sizes, steps: int, hidden_ratio: float, clamp: float, conv3x3_only: bool, seed: int):
    from torch import nn

    from ._flows.coupling import Flow, OneSidedCoupling, conv_subnet

    class FastFlowNet(nn.Module):
        """LayerNorm + one 2D flow per feature level."""

        def __init__(self):
            super().__init__()
            self.norms = nn.ModuleList(nn.LayerNorm([c, s, s], elementwise_affine=True)
                                       for c, s in zip(channels, sizes, strict=True))
            self.flows = nn.ModuleList(
                Flow([OneSidedCoupling(c, conv_subnet(3 if conv3x3_only or i % 2 == 0 else 1, hidden_ratio),
                                       clamp=clamp, permutation="hard", seed=seed * 1009 + 97 * level + i)
                      for i in range(steps)])
                for level, c in enumerate(channels))

        def forward(self, feats):
            return [flow(norm(f)) for f, norm, flow in zip(feats, self.norms, self.flows, strict=True)]

    return FastFlowNet()


def _latents(flow, *feats):
    """The flow's latent maps (what the anomaly map reads; the log-determinants are for training)."""
    return tuple(z for z, _ in flow(list(feats)))


@register
class FastFlow(FlowDetector):
    """FastFlow detector on RGB images.

    Args:
        backbones: "auto" (WideResNet-50-2 layer1-3 when ``wide_resnet50_2-95faca4d.pth`` is
            found, else EfficientNet-Lite0 stages 2-4), "paper" or "offline".
        flow_steps: coupling steps per level (paper: 8 for ResNet-type backbones).
        hidden_ratio: subnet hidden channels / input channels (paper: 1.0 for ResNets).
        clamp: soft bound of the coupling log-scales (2.0, as FastFlow's code).
        conv3x3_only: every subnet 3x3 (the paper alternates 3x3 and 1x1 for ResNets).
        input_size: image side the backbone reads (224 in the study).
        map_mode: "nll" (default) or "probability" (the reference code's -exp(-nll)).
        epochs, batch_size, lr, weight_decay: Adam training (paper: 500, 32, 1e-3, 1e-5).
        max_memory: bytes of cached training features kept in RAM (the rest in temporary
            memory-mapped files).
        weights_dir, device, seed, calibration, progress, random_weights: see
            :class:`xmodal.methods.Detector`.
    """

    method = "fastflow"
    # what an exported FastFlow runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to input_size, backbone normalisation",
                "{backbone}: stage maps",
                "{flow}: LayerNorm + coupling flow of every stage -> latent maps z",
                "per stage 0.5 x channel mean of z^2 (or -exp of it, map_mode), bilinear upsample to input_size, "
                "mean over stages; score = max of the map; calibration")
    PAPER: ClassVar[dict] = {"rgb": "wide_resnet50_2", "stages": ["layer1", "layer2", "layer3"]}
    OFFLINE: ClassVar[dict] = {"rgb": "efficientnet_lite0", "stages": [2, 3, 4]}

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu", flow_steps: int = 8,
                 hidden_ratio: float = 1.0, clamp: float = 2.0, conv3x3_only: bool = False, input_size: int = 224,
                 map_mode: str = "nll", epochs: int = 500, batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 1e-5, max_memory: int = 4 << 30, seed: int = 0, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, **legacy):
        one_of(map_mode, "map_mode", MAP_MODES)
        common = self._flow_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                    batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                    max_memory=max_memory, calibration=calibration, progress=progress,
                                    random_weights=random_weights)
        super().__init__(flow_steps=check_positive("flow_steps", flow_steps, integer_only=True),
                         hidden_ratio=check_positive("hidden_ratio", hidden_ratio),
                         clamp=check_positive("clamp", clamp), conv3x3_only=bool(conv3x3_only),
                         input_size=check_positive("input_size", input_size, integer_only=True), map_mode=map_mode,
                         **common)
        self.map_size = self.config["input_size"]
        self.flow = None

    def _make_flow(self):
        c, f = self.config, self.info["features"]
        sizes = [math.ceil(c["input_size"] / s) for s in f["strides"]]
        return _make_net(f["channels"], sizes, c["flow_steps"], c["hidden_ratio"], c["clamp"], c["conv3x3_only"],
                         c["seed"])

    def _heads(self) -> dict:
        """The flow as a graph: stage maps level<i> -> latent maps z<i>."""
        from ..engines.graphs import Head

        if self.flow is None:
            return {"flow": None}
        f = self.info["features"]
        sizes = [math.ceil(self.config["input_size"] / s) for s in f["strides"]]
        inputs = {f"level{i}": ["batch", c, s, s] for i, (c, s) in enumerate(zip(f["channels"], sizes, strict=True))}
        return {"flow": Head(self.flow, inputs, tuple(f"z{i}" for i in range(len(inputs))), call=_latents)}

    def _loss(self, feats):
        return sum((0.5 * z.pow(2).flatten(1).sum(1) - logdet).mean() for z, logdet in self.flow(feats))

    def _result(self, feats, i: int) -> AnomalyResult:
        import torch

        from .postprocess import upsample_bilinear

        one = [f[i : i + 1] for f in feats]
        runners = self._head_runners()
        latents = [z for z, _ in self.flow(one)] if runners is None else runners["flow"](*one)
        maps = []
        for z in latents:
            nll = 0.5 * z.pow(2).mean(dim=1, keepdim=True)
            maps.append(upsample_bilinear(nll if self.config["map_mode"] == "nll" else -torch.exp(-nll), self.map_size))
        full = torch.stack(maps).mean(0)[0, 0]
        return AnomalyResult(score=float(full.max()), map=full.cpu().numpy().astype(np.float32))
