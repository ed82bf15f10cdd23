"""Backbone construction by registry name, input normalisation and PatchCore-style patch features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._arrays import integer
from ._layers import check_tensor
from ._weights import check_name

__all__ = ["create", "normalize", "patch_features"]


def create(name: str, *, weights="auto", weights_dir=None, **kwargs) -> nn.Module:
    """Builds a backbone by registry name, in eval mode.

    Args:
        name: ``"pointmae"``, ``"dino_vitb8"``, ``"efficientnet_lite0"`` or ``"wide_resnet50_2"``.
        weights: ``"auto"`` (default: find the local weights file, error if missing), a file
            path, or None (random init).
        weights_dir: folder searched for ``"auto"`` before ``$XMODAL_WEIGHTS``.
        **kwargs: passed to the backbone (e.g. ``depth=4`` for ``pointmae`` / ``dino_vitb8``,
            ``stages=(2, 3)`` for ``efficientnet_lite0``, ``layers=("layer2",)`` for
            ``wide_resnet50_2``, ``reference_train_mode=True`` for ``pointmae``).

    Raises:
        WeightsNotFoundError: ``weights="auto"`` and no file found (the message says where it looked).
    """
    check_name(name)
    if name == "pointmae":
        from .pointmae import PointMAE

        return PointMAE(weights=weights, weights_dir=weights_dir, **kwargs)
    if name == "dino_vitb8":
        from .vit import dino_vitb8

        return dino_vitb8(weights=weights, weights_dir=weights_dir, **kwargs)
    if name == "efficientnet_lite0":
        from .efficientnet import EfficientNetLite0

        return EfficientNetLite0(weights=weights, weights_dir=weights_dir, **kwargs)
    if name == "alexnet":
        from .alexnet import AlexNet

        return AlexNet(weights=weights, weights_dir=weights_dir, **kwargs)
    from .resnet import WideResNet50

    return WideResNet50(weights=weights, weights_dir=weights_dir, **kwargs)


def normalize(images: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] → normalised with the backbone's ``mean`` / ``std``
    (ImageNet statistics for DINO and WideResNet, 127/128 for EfficientNet-Lite0)."""
    check_tensor(images, "images", "(B, 3, H, W)", 4)
    if images.shape[1] != 3:
        msg = f"images must have 3 channels (B, 3, H, W); got shape {tuple(images.shape)}"
        raise ValueError(msg)
    mean = torch.tensor(backbone.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def patch_features(maps, *, pool: int = 3, size=None) -> torch.Tensor:
    """Concatenates multi-scale feature maps into one patch-feature map, as PatchCore does.

    Each map gets a ``pool`` × ``pool`` average pool (stride 1, zero padding counted, so the size
    is kept; ``pool=1`` skips it), is bilinearly resized (``align_corners=False``) to the first
    map's size (or ``size``), and the maps are concatenated along channels.

    Args:
        maps: dict (in order) or sequence of (B, C_i, H_i, W_i) tensors, e.g. the output of
            ``WideResNet50`` or ``EfficientNetLite0``.
        pool: odd positive int.
        size: (H, W) of the output grid; default the first map's.

    Returns:
        (B, sum C_i, H, W) tensor.
    """
    maps = list(maps.values()) if isinstance(maps, dict) else list(maps)
    if not maps:
        msg = "maps must hold at least one feature map; got none"
        raise ValueError(msg)
    integer(pool, "pool", minimum=1, expected="an odd positive int")
    if pool % 2 == 0:
        msg = f"pool must be an odd positive int; got {pool!r}"
        raise ValueError(msg)
    for i, m in enumerate(maps):
        check_tensor(m, f"maps[{i}]", "(B, C, H, W)", 4)
        if m.shape[0] != maps[0].shape[0]:
            msg = f"maps must share the batch size; maps[0] has {maps[0].shape[0]}, maps[{i}] has {m.shape[0]}"
            raise ValueError(msg)
    size = tuple(size) if size is not None else tuple(maps[0].shape[-2:])
    out = []
    for m in maps:
        if pool > 1:
            m = F.avg_pool2d(m, pool, stride=1, padding=pool // 2)
        if tuple(m.shape[-2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        out.append(m)
    return torch.cat(out, dim=1)
