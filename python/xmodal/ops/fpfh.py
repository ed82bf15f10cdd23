"""Normals and FPFH descriptors of point clouds: the weight-free 3D features of BTF ("Back to the
Feature", Horwitz & Hoshen), with open3d's conventions (csrc/ops/fpfh/fpfh.h)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import _arrays
from ._dispatch import run_kernel

FPFH_FEATURES = 33


class OrganizedFeatures(NamedTuple):
    """Per-point features of the valid pixels of an organized cloud.

    ``features`` (M, C) float32, one row per valid pixel in raster order; ``pixel_index`` (M,)
    int64, the flat pixel ``y * width + x`` of each row: together they are the input of
    :func:`xmodal.ops.points_to_grid`, which pools them onto a feature grid.
    """

    features: Any
    pixel_index: Any


def _cloud(points, name: str = "points"):
    arr, kind = _arrays.as_float32(points, name, ndim=2, shape_doc="(N, 3)")
    if arr.shape[1] != 3:
        msg = f"{name} must have shape (N, 3); got shape {tuple(int(s) for s in arr.shape)}"
        raise ValueError(msg)
    _arrays.check_finite(arr, name)
    return arr, kind


def _neighbourhood(k, radius, max_nn, prefix: str = "") -> tuple[int, float]:
    """(max_nn, radius) for the kernels: k nearest (radius +inf), or the max_nn nearest within radius."""
    k_name, radius_name, max_nn_name = f"{prefix}k", f"{prefix}radius", f"{prefix}max_nn"
    if (k is None) == (radius is None):
        given = "both" if k is not None else "neither"
        msg = (
            f"pass exactly one of {k_name} (the k nearest points, the point itself included) or {radius_name} "
            f"(the {max_nn_name} nearest points closer than radius); got {given}"
        )
        raise ValueError(msg)
    if k is not None:
        return _arrays.integer(k, k_name, minimum=1), math.inf
    radius = _arrays.number(radius, radius_name, minimum=0.0, low_open=True)
    return _arrays.integer(max_nn, max_nn_name, minimum=1), radius


def _viewpoint(viewpoint) -> tuple[bool, float, float, float]:
    if viewpoint is None:
        return False, 0.0, 0.0, 0.0
    values = viewpoint.tolist() if hasattr(viewpoint, "tolist") else viewpoint
    if not isinstance(values, (tuple, list)) or len(values) != 3:
        msg = f"viewpoint must be None or three coordinates (x, y, z); got {viewpoint!r}"
        raise TypeError(msg)
    x, y, z = (_arrays.number(v, "viewpoint") for v in values)
    return True, x, y, z


def _normals_prevalidated(arr, kind, max_nn: int, radius: float, viewpoint):
    orient, vx, vy, vz = viewpoint
    normals = _arrays.empty(kind, (arr.shape[0], 3), "float32")
    run_kernel("estimate_normals", kind, arr, max_nn, radius, orient, vx, vy, vz, normals)
    return normals


def estimate_normals(points, *, k: int | None = None, radius: float | None = None, max_nn: int = 30,
                     viewpoint=(0.0, 0.0, 0.0)):
    """Unit normals of a point cloud by PCA over each point's neighbourhood (open3d's
    ``estimate_normals`` + ``orient_normals_towards_camera_location``).

    The neighbourhood of a point is its ``k`` nearest points (the point itself included, as
    open3d's ``KDTreeSearchParamKNN``), or its ``max_nn`` nearest points closer than ``radius``
    (``KDTreeSearchParamHybrid``); distances are float32 differences squared in float64, ties
    to the lower index. The normal is the eigenvector of the smallest eigenvalue of the
    neighbourhood's covariance (float64, closed form), or (0, 0, 1) when fewer than 3 points
    are in the neighbourhood or they all coincide. It is then flipped to face ``viewpoint``
    (n . (viewpoint - p) >= 0): the camera sits at the origin of organized clouds such as
    MVTec 3D-AD's. Equals :func:`xmodal.reference.estimate_normals` to float64 rounding
    (ill-conditioned neighbourhoods, whose smallest eigenvalue is nearly double, excepted:
    any vector of the eigenspace is then a valid answer).

    Args:
        points: (N, 3) floating array, numpy or torch (CPU or CUDA); N may be 0. Copied once if
            it is not C-contiguous float32.
        k: neighbourhood size, >= 1 (sizes above N use all N points). Exclusive with radius.
        radius: neighbourhood radius, > 0 (strict: points at exactly radius are out).
        max_nn: with ``radius``, the cap on the neighbourhood size, >= 1 (ignored with k).
        viewpoint: (x, y, z) the normals face, or None to leave each sign as the solver gives it.

    Returns:
        (N, 3) float32 normals, same framework and device as ``points``.

    Raises:
        TypeError: non-floating points, non-int k / max_nn, non-numeric radius or viewpoint.
        ValueError: shape not (N, 3), NaN or inf, neither or both of k and radius, k or
            max_nn < 1, radius <= 0.
    """
    arr, kind = _cloud(points)
    max_nn, radius = _neighbourhood(k, radius, max_nn)
    return _normals_prevalidated(arr, kind, max_nn, radius, _viewpoint(viewpoint))


def fpfh(points, *, k: int | None = None, radius: float | None = None, max_nn: int = 100, normals=None,
         normal_k: int | None = None, normal_radius: float | None = None, normal_max_nn: int = 30,
         viewpoint=(0.0, 0.0, 0.0), return_normals: bool = False):
    """FPFH descriptors (33 bins) of every point, as open3d's ``compute_fpfh_feature``.

    For each neighbour q of a point p (neighbourhoods as in :func:`estimate_normals`, the point
    itself skipped), open3d's pair features of (p, n_p) and (q, n_q) -- theta = atan2(w . n_t,
    u . n_t) over [-pi, pi], alpha = v . n_t and phi = u . (p_t - p_s) / d over [-1, 1], in the
    Darboux frame of the point whose normal is closer to the line joining them -- each add
    100 / (number of neighbours) to one of 11 bins: the SPFH, three blocks that sum to 100.
    FPFH(p) = SPFH(p) + 100 * S / sum(S) per block, with S = sum_q SPFH(q) / |p - q|^2 over the
    neighbours at nonzero distance (open3d weighs by the squared distance). A point without
    neighbours gets zeros. Computed in float64 from the float32 inputs and rounded once; equals
    :func:`xmodal.reference.fpfh` to float32 rounding, except where a pair feature sits on a
    bin edge within float64 rounding.

    BTF (MVTec 3D-AD, metres) uses normals with ``normal_radius=0.1, normal_max_nn=30`` and
    features with ``radius=0.25, max_nn=100`` (voxel size 0.05), on the valid points of the
    224 x 224 organized cloud (:func:`organized_fpfh`); its objects are smaller than those
    radii, so both are in effect kNN 30 / 100. BTF does not orient its normals
    (``viewpoint=None`` here; open3d's unoriented signs differ from xmodal's).

    Args:
        points: (N, 3) floating array, numpy or torch (CPU or CUDA); N may be 0.
        k, radius, max_nn: the feature neighbourhood: the k nearest points, or the max_nn
            nearest closer than radius (exactly one of k and radius).
        normals: (N, 3) unit normals of the same kind as points, used as given; None to
            estimate them with :func:`estimate_normals`.
        normal_k, normal_radius, normal_max_nn: the neighbourhood of the normal estimation;
            when both normal_k and normal_radius are None, the feature neighbourhood is used.
        viewpoint: the point estimated normals face, or None (see :func:`estimate_normals`).
        return_normals: also return the normals used.

    Returns:
        (N, 33) float32 features, or ``(features, normals)`` with ``return_normals``; same
        framework and device as ``points``.

    Raises:
        TypeError: non-floating arrays, mixed kinds or devices, wrongly typed options.
        ValueError: wrong shapes, NaN or inf, neither or both of k and radius (or of
            normal_k and normal_radius), sizes < 1, radii <= 0.
    """
    arr, kind = _cloud(points)
    max_nn, radius = _neighbourhood(k, radius, max_nn)
    if not isinstance(return_normals, (bool, np.bool_)):
        msg = f"return_normals must be a bool; got {type(return_normals).__name__} {return_normals!r}"
        raise TypeError(msg)
    vp = _viewpoint(viewpoint)
    features = _arrays.empty(kind, (arr.shape[0], FPFH_FEATURES), "float32")
    if normals is None:
        if normal_k is None and normal_radius is None:
            normal_max_nn, normal_radius = max_nn, radius
        else:
            normal_max_nn, normal_radius = _neighbourhood(normal_k, normal_radius, normal_max_nn, "normal_")
        nrm = _arrays.empty(kind, (arr.shape[0], 3), "float32")
        # One neighbour search serves the normals and the features.
        run_kernel("fpfh_with_normals", kind, arr, max_nn, radius, normal_max_nn, normal_radius, *vp, nrm, features)
        return (features, nrm) if return_normals else features
    if normal_k is not None or normal_radius is not None:
        msg = "normal_k / normal_radius set the normal estimation; they cannot be combined with given normals"
        raise ValueError(msg)
    nrm, nrm_kind = _cloud(normals, "normals")
    _arrays.check_same_kind(kind, nrm_kind, "points", "normals")
    if nrm.shape[0] != arr.shape[0]:
        msg = f"normals must have one row per point (N={arr.shape[0]}); got shape {tuple(int(s) for s in nrm.shape)}"
        raise ValueError(msg)
    run_kernel("fpfh", kind, arr, nrm, max_nn, radius, features)
    return (features, nrm) if return_normals else features


def organized_fpfh(xyz, *, k: int | None = None, radius: float | None = None, max_nn: int = 100,
                   normal_k: int | None = None, normal_radius: float | None = None, normal_max_nn: int = 30,
                   viewpoint=(0.0, 0.0, 0.0)) -> OrganizedFeatures:
    """FPFH of the valid points of an organized cloud (BTF's per-sample 3D features).

    Valid pixels are those whose three coordinates are all nonzero (missing points are
    (0, 0, 0), the foreground test of BTF and of :func:`xmodal.data.foreground_mask`). Their
    points, in raster order, go through :func:`fpfh` with the given options; the pixels come
    back as flat indices, so ``points_to_grid(features, pixel_index, H, W, out_size=28)``
    reproduces BTF's ``AdaptiveAvgPool2d(28)(AvgPool2d(3, 1)(full_fpfh_map))`` without
    building the (33, H, W) map.

    Args:
        xyz: (H, W, 3) floating array, numpy or torch (CPU or CUDA), finite.
        k, radius, max_nn, normal_k, normal_radius, normal_max_nn, viewpoint: as in :func:`fpfh`.

    Returns:
        OrganizedFeatures(features (M, 33) float32, pixel_index (M,) int64), same framework and
        device as ``xyz``.

    Raises:
        TypeError / ValueError: as :func:`fpfh`; ValueError for a shape other than (H, W, 3).
    """
    grid, kind = _arrays.as_float32(xyz, "xyz", ndim=3, shape_doc="(H, W, 3)")
    if grid.shape[2] != 3:
        msg = f"xyz must have shape (H, W, 3); got shape {tuple(int(s) for s in grid.shape)}"
        raise ValueError(msg)
    _arrays.check_finite(grid, "xyz")
    flat = grid.reshape(-1, 3)
    valid = (flat[:, 0] != 0) & (flat[:, 1] != 0) & (flat[:, 2] != 0)
    if kind.torch:
        pixel_index = valid.nonzero().reshape(-1)
        points = flat[pixel_index].contiguous()
    else:
        pixel_index = np.flatnonzero(valid).astype(np.int64)
        points = np.ascontiguousarray(flat[pixel_index])
    features = fpfh(points, k=k, radius=radius, max_nn=max_nn, normal_k=normal_k, normal_radius=normal_radius,
                    normal_max_nn=normal_max_nn, viewpoint=viewpoint)
    return OrganizedFeatures(features, pixel_index)
