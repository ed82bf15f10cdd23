"""AlexNet (torchvision's architecture and parameter names), the backbone of DifferNet.

torchvision's single-tower AlexNet ("one weird trick" variant): ``features`` = conv 11x11/4
(64) - ReLU - max-pool 3/2 - conv 5x5 (192) - ReLU - max-pool - conv 3x3 (384) - ReLU - conv 3x3
(256) - ReLU - conv 3x3 (256) - ReLU - max-pool, i.e. 256 channels at stride ~32; then the
classifier (dropout, 9216 -> 4096 -> 4096 -> 1000), kept only so that torchvision's
``alexnet-owt-7be5be79.pth`` loads strictly. DifferNet reads the output of ``features``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checkpoint import load_registered
from ._layers import check_images

__all__ = ["AlexNet"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class AlexNet(nn.Module):
    """AlexNet feature extractor.

    Args:
        layers: ("features",), the only output (kept for the common backbone interface).
        weights: None (random init), ``"auto"`` (``alexnet-owt-7be5be79.pth`` from
            ``weights_dir`` / ``$XMODAL_WEIGHTS``) or a torchvision checkpoint path.
        weights_dir: folder searched for ``"auto"``.

    The module is in eval mode after construction. Input: (B, 3, H, W) ImageNet-normalised.
    """

    mean = MEAN
    std = STD

    def __init__(self, layers=("features",), *, weights=None, weights_dir=None, allow_pickle: bool = False):
        super().__init__()
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if layers != ("features",):
            msg = f"layers must be ('features',) for alexnet; got {layers}"
            raise ValueError(msg)
        self.layers = layers
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, 1000))
        self.eval()
        self.load_report = load_registered(self, "alexnet", weights, weights_dir, allow_pickle=allow_pickle)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return (256,)

    @property
    def strides(self) -> tuple[int, ...]:
        return (32,)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> ``{"features": (B, 256, h, w)}`` (h = 6 at 224)."""
        return {"features": self.features(check_images(images, self))}
