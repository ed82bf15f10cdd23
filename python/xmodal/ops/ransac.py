"""RANSAC plane fitting (the background-plane step of the MVTec 3D-AD preprocessing)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _arrays
from .._backend import C
from ._dispatch import run_on_host


class PlaneResult(NamedTuple):
    """``plane`` (4,) float64 ``(a, b, c, d)`` with unit normal; ``inliers`` (N,) bool."""

    plane: Any
    inliers: Any


def ransac_plane(points, distance_threshold: float = 0.004, num_points: int = 50, iterations: int = 1000,
                 seed: int = 0, probability: float = 0.99999999) -> PlaneResult:
    """Fits the dominant plane of a point cloud by RANSAC, as open3d's ``segment_plane``.

    Every hypothesis fits a plane by least squares to ``num_points`` distinct random points
    (open3d does the same for ``ransac_n > 3``; it does not take 3 points) and scores it over
    all points: a point is an inlier when ``|a x + b y + c z + d| < distance_threshold``. The
    hypothesis with the most inliers wins, then the one with the smaller inlier RMSE, then the
    lower hypothesis index; samples on one line are skipped. The returned plane is the
    least-squares refit on the winner's inliers; ``inliers`` are the winner's (before the
    refit), as open3d returns them.

    Hypotheses are evaluated in blocks of 32. After each block the search stops when the
    hypotheses done reach ``log(1 - probability) / log(1 - w ** num_points)``, w being the best
    inlier fraction so far (open3d's early-stop rule: enough draws to have met one all-inlier
    sample with that confidence); ``probability=1`` evaluates all ``iterations``. Hypothesis
    ``i`` draws its sample from a counter-based generator keyed by ``(seed, i)``, so the result
    is the same for any number of threads; :func:`xmodal.reference.ransac_plane` draws the
    same samples.

    Args:
        points: (N, 3) floating array, numpy or torch. Copied once if it is not C-contiguous
            float32. CUDA tensors are processed on the CPU (one copy to the host and back): the
            hypotheses are few and small, there is no CUDA kernel.
        distance_threshold: inlier distance, > 0, in the units of ``points`` (MVTec 3D-AD:
            metres; the reference preprocessing uses 0.004).
        num_points: points per hypothesis, 3 <= num_points <= N (reference: 50).
        iterations: number of hypotheses, >= 1 (reference: 1000).
        seed: any int; the same seed gives the same result.
        probability: confidence of the early stop, in (0, 1] (open3d's default 0.99999999).

    Returns:
        PlaneResult(plane (4,) float64 with ``a^2 + b^2 + c^2 = 1`` and ``d >= 0`` (the normal
        faces the origin, i.e. the sensor for camera-frame clouds), inliers (N,) bool), in the
        framework and on the device of ``points``.

    Raises:
        TypeError: non-floating points or non-int counts.
        ValueError: wrong shape, NaN/inf, too few points, a non-positive threshold, or no
            hypothesis with any inlier.
    """
    arr, kind = _arrays.as_float32(points, "points", ndim=2, shape_doc="(N, 3)")
    _check_points3(arr)
    threshold = _positive_number(distance_threshold, "distance_threshold")
    num_points = _arrays.positive_int(num_points, "num_points", minimum=3)
    if arr.shape[0] < num_points:
        msg = f"num_points must be in [3, N={arr.shape[0]}]; got {num_points} (points holds only {arr.shape[0]} points)"
        raise ValueError(msg)
    iterations = _arrays.positive_int(iterations, "iterations")
    seed = _arrays.integer(seed, "seed") % (1 << 64)
    probability = _arrays.number(probability, "probability", minimum=0, maximum=1, low_open=True,
                                 expected="in (0, 1]")
    _arrays.check_finite(arr, "points")

    def compute(host):
        plane = np.empty(4, dtype=np.float64)
        inliers = np.empty(host.shape[0], dtype=np.bool_)
        C.ransac_plane_cpu(host, threshold, num_points, iterations, probability, seed, plane, inliers)
        return plane, inliers

    plane, inliers = run_on_host(compute, arr, kind)
    return PlaneResult(plane, inliers)


def _check_points3(arr) -> None:
    if arr.shape[1] != 3:
        msg = f"points must have shape (N, 3); got {tuple(int(s) for s in arr.shape)}"
        raise ValueError(msg)


def _positive_number(value, name: str) -> float:
    """A distance or radius: a finite number > 0 (TypeError for other kinds)."""
    return _arrays.number(value, name, minimum=0, low_open=True, expected="a positive finite number")
