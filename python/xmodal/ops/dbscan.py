"""DBSCAN radius clustering (the largest-cluster cleaning of the MVTec 3D-AD preprocessing)."""

from __future__ import annotations

import numpy as np

from .. import _arrays
from .._backend import C
from ._dispatch import run_on_host
from .ransac import _check_points3, _positive_number


def dbscan(points, eps: float, min_points: int):
    """DBSCAN clustering of 3D points, exact, on a voxel grid.

    ``q`` is a neighbour of ``p`` when ``|p - q| <= eps`` (``p`` counts itself); ``p`` is a
    core point when it has at least ``min_points`` neighbours. Clusters are the connected
    components of core points, numbered 0, 1, ... in the order of their lowest-index core
    point. **Border rule:** a non-core point within ``eps`` of core points takes the lowest
    cluster id among them; all other points are noise (-1). These are exactly the labels of
    ``sklearn.cluster.DBSCAN(eps, min_samples=min_points)`` and of open3d's
    ``cluster_dbscan(eps, min_points)`` (both expand clusters in index order, so a border point
    goes to the first cluster that reaches it); open3d counts a neighbour only below ``eps``,
    which differs only for distances exactly equal to ``eps``.

    The neighbour search uses cells of side ``eps / sqrt(3)``: a cell with ``min_points``
    points is all core without a distance test, the other points count neighbours in the
    surrounding 5x5x5 cells and stop at ``min_points``, and cells are joined by one pair of
    core points within ``eps``. Distances are compared in float64. The result does not depend
    on the number of threads.

    Args:
        points: (N, 3) floating array, numpy or torch (N may be 0). Copied once if it is not
            C-contiguous float32. CUDA tensors are clustered on the CPU (copied to the host and
            the labels back); there is no CUDA kernel.
        eps: neighbourhood radius, > 0 (MVTec 3D-AD preprocessing: 0.006 m).
        min_points: neighbours (self included) that make a core point, >= 1 (reference: 30).

    Returns:
        labels (N,) int64, cluster id or -1 for noise, same framework and device as ``points``.

    Raises:
        TypeError: non-floating points, non-numeric eps, non-int min_points.
        ValueError: wrong shape, NaN/inf, eps <= 0, min_points < 1, or an eps so small relative
            to the extent of the points that the voxel grid cannot be addressed.
    """
    arr, kind = _arrays.as_float32(points, "points", ndim=2, shape_doc="(N, 3)")
    _check_points3(arr)
    eps = _positive_number(eps, "eps")
    min_points = _arrays.positive_int(min_points, "min_points")
    _arrays.check_finite(arr, "points")

    def compute(host):
        labels = np.empty(host.shape[0], dtype=np.int64)
        C.dbscan_cpu(host, eps, min_points, labels)
        return (labels,)

    (labels,) = run_on_host(compute, arr, kind)
    return labels
