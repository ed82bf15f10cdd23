"""CS-Flow (Rudolph et al., WACV 2022): a fully convolutional cross-scale normalising flow.

The image is read at three sizes (the paper's [768, 384, 192]) by a frozen EfficientNet; the
three stride-32 feature maps (24², 12², 6² at the paper's sizes) go jointly through 4 Glow
couplings (:class:`xmodal.methods._flows.coupling.TwoSidedCoupling`, log-scales soft-clamped
at 3, a fixed random channel permutation after each) whose subnets are cross-convolutions: two
layers in which every scale's output adds a convolution of its own map, a convolution of the
next coarser map upsampled, and a strided convolution of the next finer map (hidden channels
1024, kernel 3 in the first three blocks and 5 in the last, leaky ReLU 0.1, the output scaled
by a learned factor that starts at 0 so that the flow starts as the identity). Training: loss =
(0.5 |z|^2 - log|det J|) / dims, Adam lr 2e-4, eps 1e-4, weight decay 1e-5, 240 epochs (60 x 4),
batch 16 (the paper's code). Image score = mean of z^2 over all scales (the paper); the map is
the channel mean of z^2 of the finest scale, upsampled (coarse, 24 x 24 cells: the study
evaluates CS-Flow on detection only).

Difference from the paper: EfficientNet-B5 (the paper's encoder) is not a backbone of xmodal;
EfficientNet-Lite0 stage 6 (192 channels, stride 32, the counterpart of B5's 304-channel
stride-32 block the paper reads) is used for every ``backbones`` setting, and
``backbones="paper"`` is refused with that reason.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._flows.detector import FlowDetector, check_positive, check_sizes
from .base import AnomalyResult, register


def _make_cross_convolution(cin: int, cout: int, hidden: int, kernel: int, scales: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    pad = kernel // 2

    class CrossLayer(nn.Module):
        """out_s = conv(x_s) + up(conv(x_{s+1})) + strided_conv(x_{s-1})."""

        def __init__(self, a: int, b: int):
            super().__init__()
            self.same = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=pad) for _ in range(scales))
            self.from_coarser = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=pad, bias=False)
                                              for _ in range(scales - 1))
            self.from_finer = nn.ModuleList(nn.Conv2d(a, b, kernel, stride=2, padding=pad, bias=False)
                                            for _ in range(scales - 1))

        def forward(self, xs):
            out = []
            for s, x in enumerate(xs):
                y = self.same[s](x)
                size = x.shape[-2:]
                if s + 1 < len(xs):
                    y = y + F.interpolate(self.from_coarser[s](xs[s + 1]), size=size, mode="bilinear",
                                          align_corners=False)
                if s > 0:
                    down = self.from_finer[s - 1](xs[s - 1])
                    if down.shape[-2:] != size:
                        down = F.interpolate(down, size=size, mode="bilinear", align_corners=False)
                    y = y + down
                out.append(y)
            return out

    class CrossConvolutions(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = CrossLayer(cin, hidden)
            self.layer2 = CrossLayer(hidden, cout)
            self.gamma = nn.Parameter(torch.zeros(1))

        def forward(self, xs):
            hidden_maps = [F.leaky_relu(h, 0.1) for h in self.layer1(xs)]
            return [y * self.gamma for y in self.layer2(hidden_maps)]

    return CrossConvolutions()


def _make_csflow(channels: int, blocks: int, hidden: int, clamp: float, scales: int, seed: int):
    from ._flows.coupling import Flow, TwoSidedCoupling

    kernels = [3] * (blocks - 1) + [5]
    return Flow([TwoSidedCoupling(channels, lambda a, b, k=k: _make_cross_convolution(a, b, hidden, k, scales),
                                  clamp=clamp, seed=seed * 1009 + i) for i, k in enumerate(kernels)])


def _latents(flow, *maps):
    """The flow's latent maps, one per scale (the log-determinant is for training)."""
    return tuple(flow(list(maps))[0])


@register
class CSFlow(FlowDetector):
    """CS-Flow detector on RGB images.

    Args:
        backbones: "auto" / "offline": EfficientNet-Lite0 stage 6; "paper" is refused
            (EfficientNet-B5 is not in xmodal).
        input_sizes: the three image sides (paper: [768, 384, 192]).
        coupling_blocks: 4; hidden_channels: 1024; clamp: 3.
        epochs, batch_size, lr, weight_decay: 240, 16, 2e-4, 1e-5 (the paper's code).
        max_memory, weights_dir, device, seed, calibration, progress, random_weights: see
            :class:`xmodal.methods.FastFlow`.
    """

    method = "csflow"
    # what an exported CS-Flow runs (Detector.export's manifest): graphs in braces, xmodal ops between
    pipeline = ("rgb: PIL bicubic resize to each of input_sizes, backbone normalisation",
                "{backbone} at each size (one graph per size, backbone_<side>): stage-6 maps",
                "{flow}: cross-scale coupling flow -> latent maps z<scale>",
                "score = mean of z^2 over every scale; map = channel mean of z^2 of the finest scale, bilinear "
                "upsample; calibration")
    OFFLINE: ClassVar[dict] = {"rgb": "efficientnet_lite0", "stages": [6]}
    PAPER_NOTE = "CS-Flow's EfficientNet-B5 is not a backbone of xmodal"
    ADAM: ClassVar[dict] = {"betas": (0.9, 0.999), "eps": 1e-4}

    def __init__(self, backbones: str = "auto", weights_dir=None, device: str = "cpu",
                 input_sizes=(768, 384, 192), coupling_blocks: int = 4, hidden_channels: int = 1024,
                 clamp: float = 3.0, epochs: int = 240, batch_size: int = 16, lr: float = 2e-4,
                 weight_decay: float = 1e-5, max_memory: int = 4 << 30, seed: int = 0, calibration: float = 0.1,
                 progress: bool = True, random_weights: bool = False, **legacy):
        sizes = check_sizes("input_sizes", list(input_sizes) if isinstance(input_sizes, tuple) else input_sizes)
        if len(sizes) < 2:
            msg = f"input_sizes must hold at least two image sides; got {input_sizes!r}"
            raise ValueError(msg)
        common = self._flow_options(legacy, backbones=backbones, weights_dir=weights_dir, device=device, seed=seed,
                                    batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                    max_memory=max_memory, calibration=calibration, progress=progress,
                                    random_weights=random_weights)
        super().__init__(input_sizes=sizes,
                         coupling_blocks=check_positive("coupling_blocks", coupling_blocks, integer_only=True),
                         hidden_channels=check_positive("hidden_channels", hidden_channels, integer_only=True),
                         clamp=check_positive("clamp", clamp), **common)
        self.flow = None

    def _input_sizes(self) -> list[int]:
        return list(self.config["input_sizes"])

    def _make_flow(self):
        c = self.config
        return _make_csflow(self.info["features"]["channels"][0], c["coupling_blocks"], c["hidden_channels"],
                            c["clamp"], len(c["input_sizes"]), c["seed"])

    def _heads(self) -> dict:
        """The flow as a graph: one map per input size scale<s> -> latent maps z<s>."""
        import math

        from ..engines.graphs import Head

        if self.flow is None:
            return {"flow": None}
        f = self.info["features"]
        channels, stride = int(f["channels"][0]), int(f["strides"][0])
        inputs = {f"scale{s}": ["batch", channels, math.ceil(size / stride), math.ceil(size / stride)]
                  for s, size in enumerate(self.config["input_sizes"])}
        return {"flow": Head(self.flow, inputs, tuple(f"z{s}" for s in range(len(inputs))), call=_latents)}

    def _loss(self, feats):
        z, logdet = self.flow(list(feats))
        dims = sum(t[0].numel() for t in z)
        return (0.5 * sum(t.pow(2).flatten(1).sum(1) for t in z) - logdet).mean() / dims

    def _result(self, feats, i: int) -> AnomalyResult:
        from .postprocess import upsample_bilinear

        one = [f[i : i + 1] for f in feats]
        runners = self._head_runners()
        z = self.flow(one)[0] if runners is None else runners["flow"](*one)
        score = float(sum(t.pow(2).sum() for t in z) / sum(t.numel() for t in z))
        full = upsample_bilinear(z[0].pow(2).mean(dim=1, keepdim=True), self.map_size)[0, 0]
        return AnomalyResult(score=score, map=full.cpu().numpy().astype(np.float32))
