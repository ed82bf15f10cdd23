"""Map post-processing shared by the methods (resizing, smoothing), on torch CPU/GPU tensors."""

from __future__ import annotations

import numpy as np


def resize_bilinear(score_map, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) float32 by bilinear interpolation (align_corners=False, as the papers)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(score_map, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def gaussian_blur(score_map, sigma: float = 4.0):
    """Gaussian smoothing with kernel size 2*int(4*sigma+0.5)+1 and reflect padding (float, no
    8-bit quantisation; the reference repositories' PIL blur quantises to 256 levels)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(score_map, dtype=torch.float32)
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None, None]
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=t.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = t.shape[1]
    pad = min(radius, t.shape[-1] - 1, t.shape[-2] - 1)
    t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
    t = F.conv2d(t, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels, padding=(0, radius - pad))
    t = F.conv2d(t, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels, padding=(radius - pad, 0))
    return t[0, 0] if squeeze else t


def box_blur_cfm(score_map):
    """CFM's smoothing: 5 passes of a 5x5 box filter then 3 passes of a 7x7 box filter, zero
    padded (variance 5*2 + 3*4 = 22, about a Gaussian of sigma 4.7)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(score_map, dtype=torch.float32)
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None, None]
    for size, passes in ((5, 5), (7, 3)):
        weight = torch.full((1, 1, size, size), 1.0 / (size * size), dtype=t.dtype, device=t.device)
        for _ in range(passes):
            t = F.conv2d(t, weight, padding=size // 2)
    return t[0, 0] if squeeze else t
