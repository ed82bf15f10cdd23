"""PRO curve and AUPRO, exact (MVTec AD) or threshold-sampled (MVTec 3D-AD / BTF / M3DM / CFM)."""

from __future__ import annotations

import numpy as np

from .. import _arrays
from .. import _map_sets as _maps
from .._backend import C
from ._dispatch import run_kernel

_SHAPE_DOC = "((N, H, W) maps, or one (H, W) map per list item)"


def _collect(maps, masks) -> _maps.ArraySet:
    return _maps.collect(maps, masks, "maps", "masks", (2, 3), _SHAPE_DOC)


def pro_curve(maps, masks, num_thresholds=None):
    """The per-region overlap (PRO) curve of a set of anomaly maps.

    Regions are the 8-connected components of each mask (as ``scipy.ndimage.label`` with a
    3x3 ones structure); every mask-zero pixel of every image is an OK pixel.

    ``num_thresholds=None`` gives the exact curve of MVTec's current official evaluation code
    (MVTec AD ``pro_curve_util``): one point per distinct score t, FPR = share of OK pixels
    with score >= t (the count rounded to float32 and the ratio stored as float32, as the
    original does), PRO = mean over all regions of the share of their pixels with score >= t,
    from (0, 0) to (1, 1).

    An integer reproduces the threshold-sampled MVTec 3D-AD code that BTF and M3DM (100) and
    CFM (99) used: thresholds are the sorted OK scores at ranks
    ``linspace(0, n_ok - 1, T).astype(int)``, FPR = 1 - (rank + 1) / n_ok (from the rank,
    even when scores tie), a region pixel counts when its score is strictly greater than the
    threshold, and the synthetic point (1, 1) closes the curve (T + 1 points).

    Both are computed with one radix sort of the OK scores and one of the region pixels (no
    loop over regions), in float64; they match the original code within ~1e-13.

    Args:
        maps: (N, H, W) or (H, W) array, or a list of (H, W) / (N, H, W) arrays of different
            sizes; numpy or torch (CPU or CUDA). float32 and float64 are used as they are;
            other dtypes are converted (integers to float64). Must be finite.
        masks: the same structure and shapes; any nonzero value is anomalous. bool, uint8
            and int8 are used as they are, other dtypes are compared with 0 (a uint8 copy).
        num_thresholds: None (exact) or an int >= 2.

    Returns:
        (fpr, pro): float64 numpy arrays of equal length, FPR non-decreasing.

    Raises:
        TypeError: non-numeric inputs, or host and CUDA arrays mixed.
        ValueError: shape mismatch, NaN/inf in maps, no anomalous pixel (no region), no
            normal pixel, num_thresholds < 2.
    """
    arrays = _collect(maps, masks)
    t = _maps.num_thresholds_arg(num_thresholds)
    score_batches, mask_batches = _maps.as_batches(arrays.scores), _maps.as_batches(arrays.masks)
    return run_kernel("pro_curve", arrays.kind, score_batches, mask_batches, t)


def aupro(maps, masks, limits=(0.3, 0.1, 0.05, 0.01), num_thresholds=None):
    """Normalised area under the PRO curve up to each FPR limit.

    AUPRO(limit) = trapezoid(fpr, pro, x_max=limit) / limit with MVTec's trapezoid rule: when
    the limit is not itself an FPR of the curve, PRO is interpolated linearly at the limit
    between the last point at or below it and the first point above it. All limits share one
    curve (computed as in :func:`pro_curve`); only the OK scores above the rank the largest
    limit needs are sorted, so limits <= 0.3 sort about a third of the normal pixels.

    Args:
        maps, masks, num_thresholds: as in :func:`pro_curve` (None: exact curve; 100: BTF /
            M3DM; 99: CFM).
        limits: FPR limits in (0, 1] (a number or a sequence).

    Returns:
        {limit: value} with the limits as given (Python floats).

    Memory (float32 maps, CPU): about 8 bytes per sorted OK pixel (2.4 per OK pixel at limit
    0.3) plus 16 per anomalous pixel, plus an int32 label buffer per thread.
    """
    arrays = _collect(maps, masks)
    t = _maps.num_thresholds_arg(num_thresholds)
    values = _maps.limits_arg(limits)
    out = np.empty(values.shape, dtype=np.float64)
    score_batches, mask_batches = _maps.as_batches(arrays.scores), _maps.as_batches(arrays.masks)
    run_kernel("aupro", arrays.kind, score_batches, mask_batches, t, values, out)
    keys = list(limits) if isinstance(limits, (list, tuple, np.ndarray)) else [limits]
    return {key if not isinstance(key, np.generic) else key.item(): float(v) for key, v in zip(keys, out, strict=False)}


def aupro_bootstrap(maps, masks, multiplicity, limits=(0.3, 0.1, 0.05, 0.01), num_thresholds=None):
    """AUPRO of resampled test sets, sorting the pixels only once (CPU).

    Args:
        maps, masks, limits, num_thresholds: as in :func:`aupro` (CUDA inputs are copied to
            the host).
        multiplicity: (B, num_images) integer array: how often each image (in input order)
            occurs in each of the B resamples.

    Returns:
        (B, len(limits)) float64 array; a row is NaN when its resample has no OK pixel or no
        region.

    Memory: 16 bytes per pixel (every sorted key carries its image index).
    """
    arrays = _collect(maps, masks)
    t = _maps.num_thresholds_arg(num_thresholds)
    values = _maps.limits_arg(limits)
    m = _multiplicity(multiplicity)
    if m.ndim != 2 or m.shape[1] != arrays.num_images:
        msg = f"multiplicity must have shape (B, {arrays.num_images}); got {tuple(m.shape)}"
        raise ValueError(msg)
    scores = [s.cpu().numpy() if _arrays.is_torch(s) else s for s in arrays.scores]
    masks_host = [g.cpu().numpy() if _arrays.is_torch(g) else g for g in arrays.masks]
    out = np.empty((m.shape[0], values.size), dtype=np.float64)
    C.aupro_bootstrap_cpu(_maps.as_batches(scores), _maps.as_batches(masks_host), t, values, m, out)
    return out


def _multiplicity(multiplicity) -> np.ndarray:
    """The resample counts as C-contiguous int32, checked: integers (or integral floats) in
    [0, 2**31), never silently truncated or wrapped."""
    if _arrays.is_torch(multiplicity):
        _arrays.check_device(multiplicity, "multiplicity")
        multiplicity = multiplicity.detach().cpu().numpy()
    try:
        m = np.asarray(multiplicity)
    except (TypeError, ValueError) as exc:
        msg = f"multiplicity must be a (B, num_images) integer array; got {type(multiplicity).__name__}"
        raise TypeError(msg) from exc
    if m.dtype.kind not in "iuf" or (m.dtype.kind == "f" and not np.array_equal(m, np.round(m))):
        msg = f"multiplicity must hold integer counts; got dtype {m.dtype}"
        raise TypeError(msg)
    if m.size and (m.min() < 0 or m.max() >= 2**31):
        msg = f"multiplicity must hold counts in [0, 2**31); got values from {m.min()} to {m.max()}"
        raise ValueError(msg)
    return np.ascontiguousarray(m, dtype=np.int32)
