"""Point-cloud kernels of the Point-MAE feature path: FPS, grouping, 3-NN interpolation and the
scatter + pooling back onto the organized image grid (as M3DM and CFM compute them)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _arrays
from ._dispatch import run_kernel
from .knn import knn_prevalidated

POINTNET2_MIN_SQUARED_NORM = 1e-3


class Groups(NamedTuple):
    """``centers`` (G, 3) float32; ``idx`` (G, S) int64 rows of the cloud, nearest first;
    ``neighbourhoods`` (G, S, 3) float32 = points[idx] - centers[:, None]."""

    centers: Any
    idx: Any
    neighbourhoods: Any


def _points(x, name: str):
    """(N, 3) float32 C-contiguous points of x's framework, with N >= 1 and finite values."""
    arr, kind = _arrays.as_float32(x, name, ndim=2, shape_doc="(N, 3)")
    if arr.shape[1] != 3:
        msg = f"{name} must have shape (N, 3); got shape {tuple(int(s) for s in arr.shape)}"
        raise ValueError(msg)
    if arr.shape[0] == 0:
        msg = f"{name} must hold at least one point; got shape (0, 3) (a cloud with no valid points?)"
        raise ValueError(msg)
    _arrays.check_finite(arr, name)
    return arr, kind


def _squared_norms(arr):
    # (x^2 + y^2) + z^2 in float64, elementwise: exactly the kernels' |p|^2 (squares are exact).
    q = arr.double() if _arrays.is_torch(arr) else arr.astype(np.float64)
    return (q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]) + q[:, 2] * q[:, 2]


def _fps_prevalidated(arr, kind, n: int, start: int, reference: bool):
    num_points = arr.shape[0]
    if reference:
        if start != 0:
            msg = f"reference=True always starts at index 0 (pointnet2_ops has no start option); got start={start}"
            raise ValueError(msg)
        if n > 1 and not bool((_squared_norms(arr) > POINTNET2_MIN_SQUARED_NORM).any()):
            msg = (
                f"points has no point with |p|^2 > {POINTNET2_MIN_SQUARED_NORM}; reference=True (pointnet2_ops) "
                f"never selects such points, so it cannot select n={n} of the N={num_points} points"
            )
            raise ValueError(msg)
    idx = _arrays.empty(kind, (n,), "int64")
    run_kernel("farthest_point_sample", kind, arr, n, start, reference, idx)
    return idx


def _check_fps_args(n, start, reference, num_points: int, n_name: str = "n"):
    n = _arrays.positive_int(n, n_name, maximum=num_points, what="N=")
    start = _arrays.positive_int(start, "start", minimum=0, maximum=num_points - 1, what="N-1=")
    if not isinstance(reference, (bool, np.bool_)):
        msg = f"reference must be a bool; got {type(reference).__name__} {reference!r}"
        raise TypeError(msg)
    return n, start, bool(reference)


def farthest_point_sample(points, n: int, start: int = 0, reference: bool = False):
    """Farthest point sampling of ``n`` points of a cloud.

    ``idx[0] = start``; each further index is the not-yet-selected point whose squared distance
    to its nearest selected point is largest, ties to the lowest index. Distances are
    float32 differences squared and summed in float64 (exact squares), which
    :func:`xmodal.reference.farthest_point_sample` reproduces bit for bit. On the CPU the
    selection runs as bucket FPS on a KD-tree: a node is skipped only when no point in it can
    change, so the result is identical to the plain O(N n) loop.

    With ``reference=True`` the selection follows pointnet2_ops' ``furthest_point_sample`` (the
    CUDA kernel of M3DM / CFM / G2SF): start at index 0, points with |p|^2 <= 1e-3 are never
    selected, running distances start at 1e10, selected points are not excluded (they return
    only when every eligible point is at distance 0, as there) and ties follow its block
    reduction (see :func:`xmodal.reference.pointnet2_farthest_point_sample`). pointnet2_ops
    computes in float32, so on real data a near-tie within float32 rounding may still resolve
    differently.

    Args:
        points: (N, 3) floating array, numpy or torch (CPU or CUDA); copied once if it is not
            C-contiguous float32.
        n: points to select, 1 <= n <= N.
        start: first index, 0 <= start < N (must be 0 with ``reference=True``).
        reference: reproduce pointnet2_ops' rules.

    Returns:
        idx (n,) int64, same framework and device as ``points``.

    Raises:
        TypeError: non-floating points, non-int n / start, non-bool reference.
        ValueError: shape not (N, 3), no point, NaN or inf, n or start out of range; with
            ``reference=True``, start != 0 or no point with |p|^2 > 1e-3.
    """
    arr, kind = _points(points, "points")
    n, start, reference = _check_fps_args(n, start, reference, arr.shape[0])
    return _fps_prevalidated(arr, kind, n, start, reference)


def group_points(points, n_groups: int, group_size: int, start: int = 0, reference: bool = False) -> Groups:
    """Point-MAE grouping: ``n_groups`` FPS centers and the ``group_size`` nearest points of each.

    Centers come from :func:`farthest_point_sample` (``start`` / ``reference`` as there); the
    neighbourhoods from the exact :func:`xmodal.knn` (KD-tree search for 3D points), ordered
    by (float32 Euclidean distance, index), so each center's group starts with the center itself
    unless a duplicate point with a lower index precedes it. Replaces the N x G x 3 broadcast +
    topk of the reference code (memory O(G S) instead of O(N G)).

    Args:
        points: (N, 3) floating array, numpy or torch (CPU or CUDA).
        n_groups: number of groups G, 1 <= G <= N (1024 in M3DM / CFM).
        group_size: points per group S, 1 <= S <= N (128 in M3DM / CFM).
        start: first FPS index.
        reference: FPS with pointnet2_ops' rules.

    Returns:
        Groups(centers (G, 3) float32, idx (G, S) int64, neighbourhoods (G, S, 3) float32
        centred on their center), same framework and device as ``points``.
    """
    arr, kind = _points(points, "points")
    num_points = arr.shape[0]
    n_groups, start, reference = _check_fps_args(n_groups, start, reference, num_points, "n_groups")
    group_size = _arrays.positive_int(group_size, "group_size", maximum=num_points, what="N=")
    center_idx = _fps_prevalidated(arr, kind, n_groups, start, reference)
    centers = arr[center_idx]
    if not kind.torch:
        centers = np.ascontiguousarray(centers)
    _, idx = knn_prevalidated(centers, arr, group_size, kind)
    neighbourhoods = arr[idx] - centers[:, None, :]
    return Groups(centers, idx, neighbourhoods)


def three_nn_interpolate(points, centers, center_features):
    """Features at every point from its 3 nearest centers, inverse squared-distance weighted.

    For each point the k = min(3, G) nearest centers (squared distance in the kernels' point
    arithmetic, ties to the lower center index; found exactly without sorting all G
    distances) get weights w_j = 1 / (d_j + 1e-8), normalised to sum 1; the result is
    sum_j w_j * center_features[c_j]. Weights and the sum are computed in float64 and rounded
    once to float32 (the reference code's float32 weights lose digits when d is comparable
    to 1e-8, i.e. for millimetre-scale point spacing).

    Args:
        points: (N, 3) floating array, numpy or torch (CPU or CUDA); N may be 0.
        centers: (G, 3) floating array of the same kind, G >= 1.
        center_features: (G, C) floating array of the same kind (Point-MAE: C = 1152).

    Returns:
        (N, C) float32, same framework and device as the inputs.

    Raises:
        TypeError: non-floating inputs, or inputs of different kinds / devices.
        ValueError: wrong shapes, no center, NaN or inf.
    """
    p, p_kind = _arrays.as_float32(points, "points", ndim=2, shape_doc="(N, 3)")
    if p.shape[1] != 3:
        msg = f"points must have shape (N, 3); got shape {tuple(int(s) for s in p.shape)}"
        raise ValueError(msg)
    c, c_kind = _points(centers, "centers")
    f, f_kind = _arrays.as_float32(center_features, "center_features", ndim=2, shape_doc="(G, C)")
    _arrays.check_same_kind(p_kind, c_kind, "points", "centers")
    _arrays.check_same_kind(p_kind, f_kind, "points", "center_features")
    if f.shape[0] != c.shape[0]:
        msg = f"center_features must have one row per center (G={c.shape[0]}); got shape {tuple(f.shape)}"
        raise ValueError(msg)
    _arrays.check_finite(p, "points")
    _arrays.check_finite(f, "center_features")
    out = _arrays.empty(p_kind, (p.shape[0], f.shape[1]), "float32")
    run_kernel("three_nn_interpolate", p_kind, p, c, f, out)
    return out


def _pixel_index(x, num_points: int, kind: _arrays.ArrayKind):
    if _arrays.is_torch(x):
        torch = _arrays._torch()
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            msg = f"pixel_index must be an integer tensor; got dtype {x.dtype}"
            raise TypeError(msg)
        arr = x.detach().to(torch.int64).contiguous()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iu":
            msg = f"pixel_index must be an integer array; got dtype {arr.dtype}"
            raise TypeError(msg)
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    _arrays.check_same_kind(kind, _arrays.kind_of(arr), "features", "pixel_index")
    if arr.ndim != 1 or arr.shape[0] != num_points:
        msg = (
            f"pixel_index must have shape (N,) with N={num_points} (one pixel per feature row); "
            f"got shape {tuple(arr.shape)}"
        )
        raise ValueError(msg)
    return arr


def _out_size(out_size):
    if isinstance(out_size, (int, np.integer)) and not isinstance(out_size, bool):
        out_size = (out_size, out_size)
    if not isinstance(out_size, (tuple, list)) or len(out_size) != 2:
        msg = f"out_size must be an int or a pair (height, width); got {out_size!r}"
        raise TypeError(msg)
    return tuple(_arrays.positive_int(v, "out_size") for v in out_size)


def points_to_grid(features, pixel_index, height: int, width: int, out_size=224, channels_last: bool = False):
    """Per-point features back onto the organized grid, 3x3 average pool, adaptive average pool.

    Equals ``AdaptiveAvgPool2d(out_size)(AvgPool2d(3, stride=1)(grid))`` where ``grid`` is a
    zero (C, height, width) map with ``grid[:, pixel_index[i]] = features[i]`` (the Point-MAE
    feature alignment of M3DM / CFM / G2SF: out_size 224 for CFM, 56 for M3DM and G2SF).
    Both poolings are rectangle averages, so the kernel evaluates their separable composition
    straight from the N points, never materialising the (C, H, W) grid or the pooled map;
    float32 accumulation, within float32 rounding of torch.

    Args:
        features: (N, C) floating array, numpy or torch (CPU or CUDA); N may be 0.
        pixel_index: (N,) integer array of the same kind: flat pixel ``y * width + x`` of each
            row of ``features``; distinct, in [0, height * width).
        height, width: grid size, >= 3.
        out_size: int or (out_height, out_width).
        channels_last: return (out_h, out_w, C) instead of (C, out_h, out_w).

    Returns:
        float32 (C, out_h, out_w), or (out_h, out_w, C) with ``channels_last``; same framework
        and device as ``features``.

    Raises:
        TypeError: non-floating features, non-integer pixel_index, mixed kinds.
        ValueError: wrong shapes, grid smaller than 3x3, pixel_index out of range or repeated,
            NaN or inf features.
    """
    f, kind = _arrays.as_float32(features, "features", ndim=2, shape_doc="(N, C)")
    pix = _pixel_index(pixel_index, f.shape[0], kind)
    height = _arrays.positive_int(height, "height", minimum=3)
    width = _arrays.positive_int(width, "width", minimum=3)
    out_h, out_w = _out_size(out_size)
    if not isinstance(channels_last, (bool, np.bool_)):
        msg = f"channels_last must be a bool; got {type(channels_last).__name__} {channels_last!r}"
        raise TypeError(msg)
    _arrays.check_finite(f, "features")
    _num_points, channels = f.shape
    shape = (out_h, out_w, channels) if channels_last else (channels, out_h, out_w)
    out = _arrays.empty(kind, shape, "float32")
    if kind.cuda:
        _check_pixels_on_device(pix, height * width)
    run_kernel("points_to_grid", kind, f, pix, height, width, out_h, out_w, bool(channels_last), out)
    return out


def _check_pixels_on_device(pix, num_pixels: int) -> None:
    # The CPU kernel checks range and uniqueness itself; the CUDA kernel trusts its input.
    if pix.numel() == 0:
        return
    low, high = int(pix.min()), int(pix.max())
    if low < 0 or high >= num_pixels:
        msg = f"pixel_index must lie in [0, H*W={num_pixels}); got values in [{low}, {high}]"
        raise ValueError(msg)
    if int(_arrays._torch().unique(pix).numel()) != pix.numel():
        msg = "pixel_index must be distinct (one point per pixel); got repeated pixels"
        raise ValueError(msg)
