"""Anomaly-map post-processing shared by the methods: bilinear resizing and smoothing.

Every function takes a (h, w) map or an (N, C, h, w) batch as a numpy array or a torch tensor
(CPU or CUDA) and returns a torch tensor of the same rank on the same device, except
:func:`resize_bilinear`, numpy in and out for maps handed to users. The smoothing is float
throughout: the reference repositories' PIL blurs quantise each map to 256 levels first.

Equivalences (tested against ``scipy.ndimage``):

- :func:`gaussian_blur` = ``gaussian_filter(x, sigma, mode="mirror", truncate=4.0)`` (kernel
  radius ``int(4 * sigma + 0.5)``, reflection without repeating the edge pixel) for maps larger
  than the radius; a map smaller than that is reflected as far as it goes, then zero padded.
- :func:`box_blur_cfm` = five ``uniform_filter(x, 5, mode="constant")`` then three
  ``uniform_filter(x, 7, mode="constant")`` (zero padding, as CFM's ``torch`` convolutions).
"""

from __future__ import annotations

import numpy as np


def _as_batch(score_map):
    """(tensor as (N, C, h, w) float32, whether the input was a single (h, w) map)."""
    import torch

    t = torch.as_tensor(score_map, dtype=torch.float32)
    if t.ndim == 2:
        return t[None, None], True
    if t.ndim != 4:
        msg = f"score_map must be a (h, w) map or an (N, C, h, w) batch; got shape {tuple(t.shape)}"
        raise ValueError(msg)
    return t, False


def upsample_bilinear(score_map, size: int | tuple[int, int]):
    """(h, w) or (N, C, h, w) -> (H, W) or (N, C, H, W) by bilinear interpolation with
    ``align_corners=False`` (as the papers' ``F.interpolate``)."""
    import torch.nn.functional as F

    t, single = _as_batch(score_map)
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0, 0] if single else out


def resize_bilinear(score_map, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized to ``shape`` = (H, W): float32 numpy (see :func:`upsample_bilinear`)."""
    return upsample_bilinear(np.asarray(score_map, dtype=np.float32), shape).numpy()


def gaussian_blur(score_map, sigma: float = 4.0, mode: str = "mirror"):
    """Separable Gaussian smoothing, kernel radius ``int(4 * sigma + 0.5)``; ``mode`` "mirror"
    (reflection without the edge pixel) or "reflect" (scipy's default, the edge pixel repeated,
    as BridgeNet's ``gaussian_filter``)."""
    import torch
    import torch.nn.functional as F

    t, single = _as_batch(score_map)
    radius = int(4 * sigma + 0.5)
    if mode == "reflect":
        return _blur_symmetric(t, sigma, radius, single)
    if mode != "mirror":
        msg = f"mode must be 'mirror' or 'reflect'; got {mode!r}"
        raise ValueError(msg)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=t.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = t.shape[1]
    pad = min(radius, t.shape[-1] - 1, t.shape[-2] - 1)
    t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
    t = F.conv2d(t, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels, padding=(0, radius - pad))
    t = F.conv2d(t, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels, padding=(radius - pad, 0))
    return t[0, 0] if single else t


def _symmetric_pad(t, radius: int, dim: int):
    """Pads ``radius`` entries on both sides of ``dim`` by half-sample symmetric reflection
    (d c b a | a b c d | d c b a), repeated for a map shorter than the radius."""
    import torch

    while radius > 0:
        step = min(radius, t.shape[dim])
        n = t.shape[dim]
        before = t.narrow(dim, 0, step).flip(dim)
        after = t.narrow(dim, n - step, step).flip(dim)
        t = torch.cat([before, t, after], dim=dim)
        radius -= step
    return t


def _blur_symmetric(t, sigma: float, radius: int, single: bool):
    import torch
    import torch.nn.functional as F

    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=t.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = t.shape[1]
    t = _symmetric_pad(_symmetric_pad(t, radius, 3), radius, 2)
    t = F.conv2d(t, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    t = F.conv2d(t, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return t[0, 0] if single else t


def box_blur_cfm(score_map):
    """CFM's smoothing: 5 passes of a 5x5 box filter then 3 passes of a 7x7 box filter, zero
    padded (variance 5*2 + 3*4 = 22, about a Gaussian of sigma 4.7)."""
    import torch
    import torch.nn.functional as F

    t, single = _as_batch(score_map)
    channels = t.shape[1]
    for size, passes in ((5, 5), (7, 3)):
        weight = torch.full((channels, 1, size, size), 1.0 / (size * size), dtype=t.dtype, device=t.device)
        for _ in range(passes):
            t = F.conv2d(t, weight, padding=size // 2, groups=channels)
    return t[0, 0] if single else t
