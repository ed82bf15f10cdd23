"""Small numpy helpers shared by the synthesis modules (no scipy, no torch, no OpenCV)."""

from __future__ import annotations

import numpy as np

from ... import _arrays
from ..preprocess import _shift_reduce, nearest_indices


def generator(rng, name: str = "rng") -> np.random.Generator:
    """``rng`` as a numpy Generator: a Generator is used as it is (its state advances), an int
    seeds a new one, None draws fresh entropy."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(_arrays.integer(rng, name, minimum=0))
    msg = f"{name} must be a numpy Generator, an int seed or None; got {type(rng).__name__} {rng!r}"
    raise TypeError(msg)


def child(seed: int, *keys: int) -> np.random.Generator:
    """A generator for item ``keys`` of a seeded stream that does not depend on the order in
    which items are drawn (so item i is the same whether or not items 0..i-1 were made)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def shape2(shape, name: str = "shape") -> tuple[int, int]:
    """(height, width) from an int or a pair of positive ints."""
    pair = (shape, shape) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else shape
    try:
        h, w = pair
    except (TypeError, ValueError):
        msg = f"{name} must be an int or a pair (height, width) of ints; got {shape!r}"
        raise TypeError(msg) from None
    return _arrays.integer(h, f"{name}[0]", minimum=1), _arrays.integer(w, f"{name}[1]", minimum=1)


def interval(pair, name: str, minimum: float, maximum: float | None, low_open: bool = False) -> tuple[float, float]:
    """A (low, high) pair of numbers inside [minimum, maximum] with low <= high."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        msg = f"{name} must be a pair (low, high); got {pair!r}"
        raise TypeError(msg)
    low, high = (_arrays.number(v, name, minimum=minimum, maximum=maximum, low_open=low_open) for v in pair)
    if low > high:
        msg = f"{name} must be (low, high) with low <= high; got {tuple(pair)}"
        raise ValueError(msg)
    return low, high


def mask2d(mask, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A 2-D bool mask (nonzero = True) of an optional exact shape; TypeError for non-numeric
    input, ValueError for a wrong shape."""
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        msg = f"{name} must be a numeric or bool (H, W) array; got dtype {arr.dtype}"
        raise TypeError(msg)
    if arr.ndim != 2 or 0 in arr.shape:
        msg = f"{name} must be a non-empty (H, W) array; got shape {arr.shape}"
        raise ValueError(msg)
    if arr.dtype.kind == "f":
        _arrays.check_finite(arr, name)
    if shape is not None and arr.shape != tuple(shape):
        msg = f"{name} must have shape {tuple(shape)} like the image; got {arr.shape}"
        raise ValueError(msg)
    return arr != 0


def rgb_image(x, name: str) -> np.ndarray:
    """An (H, W, 3) uint8 array (TypeError for another dtype, ValueError for another shape)."""
    if not isinstance(x, np.ndarray):
        msg = f"{name} must be a numpy array; got {type(x).__name__}"
        raise TypeError(msg)
    if x.dtype != np.uint8:
        msg = f"{name} must be a uint8 image; got dtype {x.dtype}"
        raise TypeError(msg)
    if x.ndim != 3 or x.shape[2] != 3 or 0 in x.shape:
        msg = f"{name} must have shape (H, W, 3); got {x.shape}"
        raise ValueError(msg)
    return x


def cloud(x, name: str) -> np.ndarray:
    """An (H, W, 3) float32 organized cloud (float64 is converted; NaN/inf rejected)."""
    if not isinstance(x, np.ndarray):
        msg = f"{name} must be a numpy array; got {type(x).__name__}"
        raise TypeError(msg)
    if x.dtype.kind != "f":
        msg = f"{name} must be a floating-point organized cloud; got dtype {x.dtype}"
        raise TypeError(msg)
    if x.ndim != 3 or x.shape[2] != 3 or 0 in x.shape:
        msg = f"{name} must have shape (H, W, 3); got {x.shape}"
        raise ValueError(msg)
    _arrays.check_finite(x, name)
    return np.asarray(x, dtype=np.float32)


def valid_points(xyz: np.ndarray) -> np.ndarray:
    """(...) bool: all three coordinates non-zero (the foreground test of every reference)."""
    return (xyz[..., 0] != 0) & (xyz[..., 1] != 0) & (xyz[..., 2] != 0)


def resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest resize of an (H, W[, C]) array with the index rule of OpenCV's INTER_NEAREST and
    torch's "nearest" (source = floor(dst * in / out))."""
    if a.shape[:2] == tuple(shape):
        return a
    rows = nearest_indices(a.shape[0], shape[0])
    cols = nearest_indices(a.shape[1], shape[1])
    return a[rows][:, cols]


def dilate(mask: np.ndarray, size: int = 3) -> np.ndarray:
    """Binary dilation by a size x size square (odd size); pixels outside the image never win,
    as OpenCV's dilate."""
    return _shift_reduce(mask, size // 2, np.logical_or, False)


def label(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """(labels int32, count) of the connected components of a 2-D bool mask, numbered 1..K in
    raster order of their first pixel, like ``scipy.ndimage.label``.

    connectivity 8 is :func:`xmodal.ops.connected_components`. For 4 (scipy's default, which the
    G2SF reference uses) the mask is drawn on a lattice of twice the size where pixel (i, j)
    sits at (2i, 2j) and a link cell is set between 4-neighbours that are both on; 8-connectivity
    on that lattice is 4-connectivity on the mask (two diagonal pixels never touch, and every
    set link cell touches the pixels it joins), and the first cell of each component is still a
    pixel cell, so the numbering is scipy's.
    """
    from ...ops import connected_components

    if connectivity == 8:
        return connected_components(mask)
    h, w = mask.shape
    lattice = np.zeros((2 * h - 1, 2 * w - 1), dtype=bool)
    lattice[::2, ::2] = mask
    lattice[::2, 1::2] = mask[:, :-1] & mask[:, 1:]
    lattice[1::2, ::2] = mask[:-1] & mask[1:]
    labels, count = connected_components(lattice)
    return np.ascontiguousarray(labels[::2, ::2]), count


def box_sum(a: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
    """Sum over a size x size window at every pixel of an (H, W[, C]) array, through an integral
    image (cost independent of the size). The window of an even size spans [x - size/2,
    x + size/2 - 1], OpenCV's anchor; ``mode`` is numpy's pad mode ("reflect" is OpenCV's
    BORDER_REFLECT_101, "constant" pads zeros)."""
    before, after = size // 2, size - 1 - size // 2
    pad = [(before, after), (before, after)] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a.astype(np.float64), pad, mode=mode)
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1, *padded.shape[2:]))
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    h, w = a.shape[:2]
    return (integral[size:size + h, size:size + w] - integral[:h, size:size + w]
            - integral[size:size + h, :w] + integral[:h, :w])


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform(-1, 1) white noise blurred by a Gaussian of ``sigma`` pixels (float64).

    The blur is a product with the Gaussian's transfer function in the Fourier domain, so its
    borders wrap around; for noise that changes nothing but the cost (a 41-tap separable
    filter at sigma 5 takes 20x longer on an 800^2 field)."""
    noise = rng.uniform(-1, 1, shape)
    fr = np.fft.fftfreq(shape[0])[:, None]
    fc = np.fft.rfftfreq(shape[1])[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fr**2 + fc**2))
    return np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=shape)


def sample_bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W[, C]) image at float positions (rows, cols) of shape (h, w);
    positions outside the image read 0 (constant border). Returns float32."""
    h, w = image.shape[:2]
    img = np.pad(image.astype(np.float32), [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2))
    r = np.clip(rows + 1, 0, h + 0.999).astype(np.float32)
    c = np.clip(cols + 1, 0, w + 0.999).astype(np.float32)
    r0, c0 = r.astype(np.intp), c.astype(np.intp)
    fr, fc = r - r0, c - c0
    if image.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = img[r0, c0] + fc * (img[r0, c0 + 1] - img[r0, c0])
    bottom = img[r0 + 1, c0] + fc * (img[r0 + 1, c0 + 1] - img[r0 + 1, c0])
    return top + fr * (bottom - top)
