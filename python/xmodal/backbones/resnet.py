"""WideResNet-50-2 (torchvision's architecture and parameter names), layer2 + layer3 features for
PatchCore and BridgeNet.

torchvision ResNet v1.5 with bottleneck width ×2: stem conv 7×7/2 + BN + ReLU + max-pool 3×3/2;
layers of 3, 4, 6, 3 bottlenecks (1×1 → 3×3 with the stride → 1×1, expansion 4, projection
shortcut ``downsample.0/1`` on the first block of each layer); layer2 gives 512 channels at
stride 8, layer3 1024 at stride 16 ((512, 28, 28) and (1024, 14, 14) at 224²). Parameter names
are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, …, ``fc``), so its
``wide_resnet50_2-95faca4d.pth`` loads strictly.

By default the forward pass stops after the last requested layer (layer3): the outputs are the
same as running the whole network as BridgeNet does (its early-exit hook never fires), at about
half the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checkpoint import load_registered
from ._layers import check_images

__all__ = ["WideResNet50"]

LAYERS = (3, 4, 6, 3)
WIDTH_FACTOR = 2
EXPANSION = 4
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        width = planes * WIDTH_FACTOR
        cout = planes * EXPANSION
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


def _make_layer(cin: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(cin, planes, stride)]
    layers += [Bottleneck(planes * EXPANSION, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class WideResNet50(nn.Module):
    """WideResNet-50-2 feature extractor.

    Args:
        layers: layer names whose outputs :meth:`forward` returns, from ``"layer1"`` …
            ``"layer4"`` (default layer2 + layer3).
        early_exit: stop after the last requested layer (default True; outputs are identical).
        weights: None (default: random init, as the benchmarks use), ``"auto"`` (look up
            ``wide_resnet50_2-95faca4d.pth`` via ``weights_dir`` / ``$XMODAL_WEIGHTS``) or a
            torchvision checkpoint path.
        weights_dir: folder searched for ``"auto"``.

    The module is in eval mode after construction. Input: (B, 3, H, W) ImageNet-normalised.
    """

    mean = MEAN
    std = STD

    def __init__(self, layers=("layer2", "layer3"), *, early_exit: bool = True, weights=None,
                 weights_dir=None, allow_pickle: bool = False):
        super().__init__()
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if not layers or any(name not in LAYER_NAMES for name in layers) or len(set(layers)) != len(layers):
            msg = f"layers must be distinct names from {LAYER_NAMES}; got {layers}"
            raise ValueError(msg)
        self.layers = tuple(name for name in LAYER_NAMES if name in layers)
        self.early_exit = bool(early_exit)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (name, blocks) in enumerate(zip(LAYER_NAMES, LAYERS, strict=False)):
            planes = 64 * 2**i
            setattr(self, name, _make_layer(cin, planes, blocks, 1 if i == 0 else 2))
            cin = planes * EXPANSION
        self.fc = nn.Linear(cin, 1000)
        self._init_random()
        self.eval()
        self.load_report = load_registered(self, "wide_resnet50_2", weights, weights_dir, allow_pickle=allow_pickle)

    def _init_random(self) -> None:
        # torchvision's initialisation, so random-weight features have realistic magnitudes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(64 * 2 ** LAYER_NAMES.index(n) * EXPANSION for n in self.layers)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(4 * 2 ** LAYER_NAMES.index(n) for n in self.layers)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            images: (B, 3, H, W) float tensor, ImageNet-normalised.

        Returns:
            ``{"layer2": (B, 512, H/8, W/8), "layer3": (B, 1024, H/16, W/16)}`` for the default
            layers (sizes rounded up), in layer order.
        """
        x = check_images(images, self)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        last = self.layers[-1] if self.early_exit else LAYER_NAMES[-1]
        out = {}
        for name in LAYER_NAMES[: LAYER_NAMES.index(last) + 1]:
            x = getattr(self, name)(x)
            if name in self.layers:
                out[name] = x
        if not self.early_exit:
            self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))  # the full pass BridgeNet pays for
        return out
