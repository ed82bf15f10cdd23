"""Perlin noise and the anomaly masks built on it (DRAEM-style, G2SF, BridgeNet's UTAG)."""

from __future__ import annotations

import math

import numpy as np

from ... import _arrays
from ._util import dilate, generator, label, mask2d, resize_nearest, shape2

__all__ = ["COMBINATIONS", "g2sf_mask", "max_pool_mask", "perlin_mask", "perlin_noise", "utag_mask"]

COMBINATIONS = ("union", "intersection", "first")


def _fade(t):
    # Perlin's quintic 6t^5 - 15t^4 + 10t^3 (DRAEM, G2SF and BridgeNet all use it): zero first
    # and second derivatives at the lattice points, so no creases show along cell borders.
    return t * t * t * (t * (t * 6 - 15) + 10)


def _rotate(noise: np.ndarray, degrees: float) -> np.ndarray:
    """Counter-clockwise rotation about the centre, bilinear, zero outside (imgaug's Affine
    defaults: order 1, constant 0)."""
    from PIL import Image

    img = Image.fromarray(noise.astype(np.float32), mode="F")
    return np.asarray(img.rotate(float(degrees), resample=Image.BILINEAR, fillcolor=0.0), dtype=np.float32)


def perlin_noise(shape, scale, rng=None, *, angle: float = 0.0) -> np.ndarray:
    """2-D gradient (Perlin) noise with the quintic fade of DRAEM-style generators.

    A lattice of ``scale`` cells spans the image; each lattice point gets a random unit
    gradient (angle uniform in [0, 2 pi)); a pixel's value is the fade-weighted interpolation
    of the four dot products (gradient . offset to the pixel), first along the rows, then the
    columns, times sqrt(2), so values lie in [-1, 1] (the reference ``rand_perlin_2d_np``).
    Unlike the reference, any size works (it needs the shape to be a multiple of the scale).

    Args:
        shape: (height, width) or one int for a square.
        scale: lattice cells along (rows, columns), or one int for both (>= 1).
        rng: numpy Generator, int seed or None.
        angle: rotate the noise by this many degrees counter-clockwise about the centre
            (bilinear, 0 outside, as imgaug's Affine that the references apply).

    Returns:
        (H, W) float32.
    """
    h, w = shape2(shape, "shape")
    sy, sx = shape2(scale, "scale")
    angle = _arrays.number(angle, "angle")
    g = generator(rng)
    theta = g.uniform(0.0, 2 * np.pi, size=(sy + 1, sx + 1))
    grad_r, grad_c = np.cos(theta), np.sin(theta)  # gradient components along rows and columns
    pos_r, pos_c = np.arange(h) * (sy / h), np.arange(w) * (sx / w)
    cell_r, cell_c = pos_r.astype(np.intp), pos_c.astype(np.intp)
    off_r, off_c = pos_r - cell_r, pos_c - cell_c
    # The row interpolation is linear, so it is done once per (row, lattice column) on small
    # (H, sx + 1) arrays: for lattice column j, lerp_rows(n[top, j], n[bottom, j]) at column
    # offset u is along_r[:, j] + across[:, j] * u. Only the column step touches H x W pixels.
    fade_r = _fade(off_r)[:, None]
    top_r, bottom_r = grad_r[cell_r], grad_r[cell_r + 1]
    top_c, bottom_c = grad_c[cell_r], grad_c[cell_r + 1]
    along_r = top_r * off_r[:, None] + fade_r * (bottom_r * (off_r - 1)[:, None] - top_r * off_r[:, None])
    across = top_c + fade_r * (bottom_c - top_c)
    along_r, across = along_r.astype(np.float32), across.astype(np.float32)
    u = off_c.astype(np.float32)
    left = along_r[:, cell_c] + across[:, cell_c] * u
    right = along_r[:, cell_c + 1] + across[:, cell_c + 1] * (u - 1)
    noise = left + _fade(u) * (right - left)
    noise *= np.float32(math.sqrt(2))
    return _rotate(noise, angle) if angle else noise


def _scale_exponents(min_scale_exp, max_scale_exp) -> tuple[int, int]:
    low = _arrays.integer(min_scale_exp, "min_scale_exp", minimum=0, maximum=12)
    high = _arrays.integer(max_scale_exp, "max_scale_exp", minimum=0, maximum=12)
    if high < low:
        msg = f"max_scale_exp must be >= min_scale_exp ({low}); got {high}"
        raise ValueError(msg)
    return low, high


def perlin_mask(shape, rng=None, min_scale_exp: int = 0, max_scale_exp: int = 4, threshold: float = 0.4,
                rotate: float = 90) -> np.ndarray:
    """A binary Perlin mask: noise with 2^a x 2^b lattice cells (a, b drawn independently and
    uniformly from min_scale_exp..max_scale_exp, both ends included), rotated by an angle
    uniform in [-rotate, rotate] degrees, thresholded (``noise > threshold``).

    Defaults are G2SF's (scales 2^0..2^4, threshold 0.4, rotation +-90 degrees; the reference
    draws ``randint(0, 5)``, an exclusive upper end). BridgeNet's UTAG uses max_scale_exp=5 and
    threshold 0.5. Corners uncovered by the rotation are 0, hence never in the mask.

    Returns:
        (H, W) bool.
    """
    h, w = shape2(shape, "shape")
    low, high = _scale_exponents(min_scale_exp, max_scale_exp)
    threshold = _arrays.number(threshold, "threshold", minimum=-1.0, maximum=1.0)
    rotate = _arrays.number(rotate, "rotate", minimum=0.0, maximum=180.0)
    g = generator(rng)
    exp_r, exp_c = g.integers(low, high, endpoint=True, size=2)
    angle = g.uniform(-rotate, rotate) if rotate else 0.0
    return perlin_noise((h, w), (2 ** int(exp_r), 2 ** int(exp_c)), g, angle=angle) > threshold


def _intersection(foregrounds, name: str) -> np.ndarray:
    if isinstance(foregrounds, np.ndarray):
        return mask2d(foregrounds, name)
    if not isinstance(foregrounds, (list, tuple)) or not foregrounds:
        msg = f"{name} must be an (H, W) mask or a non-empty list of (H, W) masks; got {type(foregrounds).__name__}"
        raise TypeError(msg)
    first = mask2d(foregrounds[0], f"{name}[0]")
    out = first.copy()
    for i, fg in enumerate(foregrounds[1:], start=1):
        out &= mask2d(fg, f"{name}[{i}]", first.shape)
    return out


def g2sf_mask(foregrounds, rng=None, *, work_size: int | None = 512, min_scale_exp: int = 0, max_scale_exp: int = 4,
              threshold: float = 0.4, rotate: float = 90, min_component: int = 100, max_component: int = 1600,
              min_total: int = 300, dilation: int = 3, connectivity: int = 4, skip_last_component: bool = False,
              relax_every: int | None = None, relax_factor: float = 0.9, min_threshold: float = 0.2,
              max_tries: int = 1000) -> np.ndarray:
    """G2SF's anomaly mask: Perlin blobs inside the foreground, in pieces of a bounded size.

    1. The foreground (the intersection of ``foregrounds``) is resized (nearest) to
       work_size x work_size.
    2. A :func:`perlin_mask` at that size (scales 2^0..2^4, +-90 degrees, threshold 0.4) is
       intersected with it; only connected components of ``min_component`` to
       ``max_component`` pixels (100-1600, counted at the working size) are kept.
    3. Step 2 is repeated until the kept pixels number at least ``min_total`` (300).
    4. The mask is resized (nearest) back to the image size and dilated by a ``dilation``
       square (3x3; 0 or 1: none).

    All values are the G2SF reference's (``MVTecPseudoDataset.random_perlin_mask`` and
    ``generate_pseudo_anomaly``); the paper gives none. Reference quirks, as options:
    ``skip_last_component=True`` drops the highest-numbered component before the size test
    (the reference's loop stops one label short); ``connectivity`` 4 is scipy.ndimage.label's
    default that the reference uses (8: diagonal pixels join). Eyecandies in the reference
    relaxes the threshold as it retries: ``relax_every=10`` multiplies it by ``relax_factor``
    (0.9) every 10 tries, down to ``min_threshold`` (0.2). Unlike the reference (an endless
    loop), the retries are bounded.

    Args:
        foregrounds: (H, W) mask or a list of (H, W) masks (intersected; G2SF intersects the
            appearance source's and the geometry source's foregrounds).
        rng: numpy Generator, int seed or None.
        work_size: side of the square working resolution (None: the image size).
        max_tries: give up after this many Perlin draws.

    Returns:
        (H, W) bool.

    Raises:
        ValueError: an empty foreground, one smaller than ``min_total`` pixels at the working
            size, or no acceptable mask within ``max_tries`` (a foreground too thin or small).
    """
    fg = _intersection(foregrounds, "foregrounds")
    h, w = fg.shape
    work = (h, w) if work_size is None else shape2(work_size, "work_size")
    low, high = _scale_exponents(min_scale_exp, max_scale_exp)
    min_component = _arrays.integer(min_component, "min_component", minimum=1)
    max_component = _arrays.integer(max_component, "max_component", minimum=min_component)
    min_total = _arrays.integer(min_total, "min_total", minimum=1)
    dilation = _arrays.integer(dilation, "dilation", minimum=0)
    _arrays.one_of(connectivity, "connectivity", (4, 8))
    relax_every = _arrays.integer(relax_every, "relax_every", minimum=1, allow_none=True)
    relax_factor = _arrays.number(relax_factor, "relax_factor", minimum=0.0, maximum=1.0, low_open=True)
    min_threshold = _arrays.number(min_threshold, "min_threshold", minimum=-1.0, maximum=1.0)
    max_tries = _arrays.integer(max_tries, "max_tries", minimum=1)
    if dilation > 1 and dilation % 2 == 0:
        msg = f"dilation must be odd (a centred square); got {dilation}"
        raise ValueError(msg)
    g = generator(rng)
    fg_work = resize_nearest(fg, work)
    area = int(fg_work.sum())
    if area < min_total:
        what = "empty" if not fg.any() else f"{area} pixels at the working size {work[0]}x{work[1]}"
        msg = f"foregrounds: the foreground is {what}; the mask needs at least min_total={min_total} pixels"
        raise ValueError(msg)
    level = threshold
    for attempt in range(1, max_tries + 1):
        if relax_every and attempt % relax_every == 0:
            level = max(min_threshold, level * relax_factor)
        candidate = perlin_mask(work, g, low, high, level, rotate) & fg_work
        labels, count = label(candidate, connectivity)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        keep = (sizes >= min_component) & (sizes <= max_component)
        keep[0] = False
        if skip_last_component and count:
            keep[count] = False
        kept = keep[labels]
        if int(kept.sum()) >= min_total:
            break
    else:
        msg = (f"foregrounds: no Perlin mask with >= {min_total} pixels in components of {min_component}-"
               f"{max_component} pixels after {max_tries} tries; the foreground ({area} pixels at "
               f"{work[0]}x{work[1]}) is too small or too thin")
        raise ValueError(msg)
    mask = resize_nearest(kept, (h, w))
    return dilate(mask, dilation) if dilation > 1 else mask.copy()


def max_pool_mask(mask, pool: int = 8) -> np.ndarray:
    """(H // pool, W // pool) bool: the mask max-pooled by pool x pool windows (torch's
    max_pool2d with kernel = stride = pool: trailing rows and columns that do not fill a
    window are dropped). BridgeNet's label grid: 576^2 -> 72^2 with pool 8."""
    m = mask2d(mask, "mask")
    pool = _arrays.integer(pool, "pool", minimum=1)
    gh, gw = m.shape[0] // pool, m.shape[1] // pool
    if gh == 0 or gw == 0:
        msg = f"pool must be at most the mask's height and width {m.shape}; got {pool}"
        raise ValueError(msg)
    return m[:gh * pool, :gw * pool].reshape(gh, pool, gw, pool).any(axis=(1, 3))


def utag_mask(foreground, rng=None, *, min_scale_exp: int = 0, max_scale_exp: int = 5, threshold: float = 0.5,
              rotate: float = 90, combine: str = "random", pool: int = 8, max_tries: int = 100) -> np.ndarray:
    """BridgeNet's UTAG texture-anomaly mask: two Perlin masks (scales 2^0..2^5, +-90 degrees,
    threshold 0.5) combined by union, intersection or the first alone (1/3 each with
    ``combine="random"``), times the foreground; redrawn until its ``pool`` x ``pool``
    max-pooled label grid (:func:`max_pool_mask`) is not empty.

    Values are BridgeNet's (paper Sec. 3.3 and the reference ``generate_perlin_mask``, which
    draws ``randint(0, 6)`` for the exponents: 0..5).

    Args:
        foreground: (H, W) mask; the Perlin masks are drawn at this size.
        rng: numpy Generator, int seed or None.
        combine: "random", "union", "intersection" or "first".
        pool: label-grid pooling (the retry condition; 1: any pixel).
        max_tries: give up after this many draws (the reference loops forever).

    Returns:
        (H, W) bool, inside the foreground.

    Raises:
        ValueError: an empty foreground, or no non-empty mask within ``max_tries``.
    """
    fg = mask2d(foreground, "foreground")
    _arrays.one_of(combine, "combine", ("random", *COMBINATIONS))
    pool = _arrays.integer(pool, "pool", minimum=1)
    max_tries = _arrays.integer(max_tries, "max_tries", minimum=1)
    low, high = _scale_exponents(min_scale_exp, max_scale_exp)
    gh, gw = fg.shape[0] // pool * pool, fg.shape[1] // pool * pool
    if gh == 0 or gw == 0:
        msg = f"pool must be at most the foreground's height and width {fg.shape}; got {pool}"
        raise ValueError(msg)
    if not fg[:gh, :gw].any():
        msg = f"foreground is empty (no True pixel in its {gh}x{gw} pooled area); a texture anomaly needs an object"
        raise ValueError(msg)
    g = generator(rng)
    for _ in range(max_tries):
        first = perlin_mask(fg.shape, g, low, high, threshold, rotate)
        second = perlin_mask(fg.shape, g, low, high, threshold, rotate)
        how = COMBINATIONS[int(g.integers(3))] if combine == "random" else combine
        mask = first | second if how == "union" else first & second if how == "intersection" else first
        mask &= fg
        if mask[:gh, :gw].any():
            return mask
    msg = (f"foreground: no Perlin mask met the foreground ({int(fg.sum())} pixels) in {max_tries} tries; "
           f"it is too small for masks at threshold {threshold}")
    raise ValueError(msg)
