"""BridgeNet's input path: RGB, depth image and foreground at one working size.

What the reference data loader does (facts in the module docstring of
:mod:`xmodal.methods.bridgenet`): the RGB image keeps its background, goes through
``Resize(size)`` (PIL bilinear with antialiasing, shorter side to ``size``) and
``CenterCrop(size)``; the depth image is computed from the raw organized cloud at its native
resolution (:func:`xmodal.data.preprocess.depth_image`), resized bilinearly, repeated to 3
channels and quantised to 8 bits by ``ToPILImage`` (``floor(255 d)``), then normalised like the
RGB image; the foreground mask is resized bilinearly and kept where > 0.

Here the depth image and the foreground go through the same resize-then-crop geometry as the
RGB image, so the three stay aligned for any aspect ratio (the reference resizes depth straight
to size x size: the same result for the square MVTec 3D-AD images, misaligned otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Inputs", "crop_geometry", "prepare", "resize_crop", "target_mask"]


@dataclass
class Inputs:
    """One sample at the working size.

    Attributes:
        rgb: (S, S, 3) uint8 image.
        depth: (S, S) float32 depth image in [0, 1] (multiples of 1/255 when quantised).
        foreground: (S, S) bool, where texture anomalies may be drawn.
    """

    rgb: np.ndarray
    depth: np.ndarray
    foreground: np.ndarray


def crop_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(resized height, resized width, top, left) of torchvision's ``Resize(size)`` (shorter
    side to ``size``, the other ``int(size * long / short)``) followed by ``CenterCrop(size)``
    (offsets ``round((resized - size) / 2)``, Python's half-to-even rounding)."""
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    return new_h, new_w, round((new_h - size) / 2.0), round((new_w - size) / 2.0)


def resize_crop(image: np.ndarray, size: int, *, pil: bool) -> np.ndarray:
    """Resize (shorter side to ``size``, bilinear) then centre crop to size x size.

    ``pil=True``: a uint8 image through PIL's bilinear filter (antialiased when shrinking, as
    torchvision's Resize on PIL images); ``pil=False``: an (H, W) float map through
    ``torch.nn.functional.interpolate(bilinear, align_corners=False)`` (as the reference
    resizes its depth image and foreground tensors).
    """
    h, w = image.shape[:2]
    new_h, new_w, top, left = crop_geometry(h, w, size)
    if pil:
        from PIL import Image

        out = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))
    elif (new_h, new_w) == (h, w):
        out = np.asarray(image, dtype=np.float32)
    else:
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        out = F.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.ascontiguousarray(out[top : top + size, left : left + size])


def prepare(sample, size: int, *, quantize_depth: bool = True, depth_background: str = "auto") -> Inputs:
    """The RGB image, depth image and foreground of ``sample`` at ``size`` x ``size``.

    Args:
        sample: an :class:`xmodal.data.Sample` (raw organized cloud, background kept).
        size: working size (BridgeNet: 576).
        quantize_depth: quantise the depth image to 8 bits as the reference's ``ToPILImage``
            does (``floor(255 d) / 255``).
        depth_background: ``background`` of :func:`~xmodal.data.preprocess.depth_image`:
            "corners" (the reference: the plane through the corner points is background),
            "missing" (every valid point is foreground, for clouds whose background was
            removed) or "auto" (corners when the corners hold points).
    """
    from ...data.preprocess import depth_image

    depth, foreground = depth_image(sample.xyz, background=depth_background)
    rgb = resize_crop(sample.rgb, size, pil=True)
    depth = np.clip(resize_crop(depth, size, pil=False), 0.0, 1.0)
    if quantize_depth:
        depth = np.floor(depth * np.float32(255)) / np.float32(255)
    fg = resize_crop(foreground.astype(np.float32), size, pil=False) > 0
    return Inputs(rgb=rgb, depth=depth.astype(np.float32), foreground=fg)


def target_mask(gt: np.ndarray, size: int) -> np.ndarray:
    """The ground truth in the geometry of the inputs: PIL bilinear resize of the 0/255 mask,
    centre crop, >= 128 (half). The reference keeps only pixels whose resized value is exactly
    255 (``astype(int)`` of the [0, 1] tensor), which shrinks every defect by its blurred rim."""
    mask = np.where(np.asarray(gt, dtype=bool), 255, 0).astype(np.uint8)
    return resize_crop(mask, size, pil=True) >= 128
