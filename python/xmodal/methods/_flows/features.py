"""Frozen CNN feature maps of RGB images at one or several input sizes, for the flow methods.

The flows train on the backbone's raw feature maps (no PatchCore pooling): FastFlow and CFlow
read several stages of one 224 x 224 image, CS-Flow and DifferNet one stage of the image at
three sizes. The backbone is frozen (eval mode, no gradients), so the features of the training
images are computed once and cached (:class:`xmodal.methods._store.FeatureStore`) unless the
method augments its training images.
"""

from __future__ import annotations

import numpy as np
import torch

# backbone -> the keyword naming its stages / layers in xmodal.backbones.create
_STAGE_KEYWORD = {"efficientnet_lite0": "stages", "wide_resnet50_2": "layers", "alexnet": "layers"}


class ImageFeatures:
    """Frozen feature maps of RGB images.

    Args:
        name: "efficientnet_lite0", "wide_resnet50_2" or "alexnet".
        stages: what the backbone returns (``stages`` for EfficientNet-Lite0, ``layers`` for the
            others), in order.
        input_sizes: image sides the backbone reads (one pass each, largest first).
        device, weights_dir, random_weights: as the other backbones.
    """

    def __init__(self, name: str, stages, input_sizes, *, device="cpu", weights_dir=None,
                 random_weights: bool = False):
        from ...backbones import create

        self.name = name
        self.stages = tuple(stages)
        self.input_sizes = tuple(int(s) for s in input_sizes)
        self.device = torch.device(device)
        weights = None if random_weights else "auto"
        kwargs = {_STAGE_KEYWORD[name]: self.stages}
        self.backbone = create(name, weights=weights, weights_dir=weights_dir, **kwargs).to(self.device).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.backbone.out_channels)

    def describe(self) -> dict:
        report = getattr(self.backbone, "load_report", None)
        return {"rgb": self.name, "stages": list(self.stages), "input_sizes": list(self.input_sizes),
                "channels": list(self.channels), "strides": [int(s) for s in self.backbone.strides],
                "rgb_weights": report.path if report is not None else "random"}

    def images(self, batch, size: int) -> torch.Tensor:
        """(B, 3, size, size) normalised images of a list of Samples (PIL bicubic resize)."""
        from ...backbones import normalize
        from ...data.preprocess import resize_rgb

        arrays = np.stack([resize_rgb(s.rgb, size) for s in batch]).astype(np.float32) / np.float32(255)
        x = torch.from_numpy(arrays).permute(0, 3, 1, 2).to(self.device)
        return normalize(x, self.backbone)

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of normalised images, one per stage, in stage order."""
        return list(self.backbone(images).values())

    @torch.no_grad()
    def __call__(self, batch) -> list[torch.Tensor]:
        """One (B, C, h, w) map per (input size, stage), sizes outermost."""
        return [m for size in self.input_sizes for m in self.maps(self.images(batch, size))]
