import numpy as np
import pytest

import xmodal
from xmodal import reference
from xmodal.ops import ransac_plane


def plane_points(rng, n, plane_z=(0.5, 0.05, -0.02), noise=0.0005, outliers=0.0):
    """Points near z = c0 + c1 x + c2 y, a fraction lifted 1-5 cm off the plane; and the unit
    plane (a, b, c, d) with d > 0."""
    xy = rng.uniform(-0.1, 0.1, (n, 2))
    c0, c1, c2 = plane_z
    z = c0 + c1 * xy[:, 0] + c2 * xy[:, 1] + rng.normal(0, noise, n)
    k = int(outliers * n)
    z[:k] -= rng.uniform(0.01, 0.05, k)
    plane = np.array([c1, c2, -1.0, c0])
    plane /= np.linalg.norm(plane[:3])
    if plane[3] < 0:
        plane = -plane
    return np.c_[xy, z].astype(np.float32), plane, np.arange(n) >= k


@pytest.mark.parametrize("num_points", [3, 7, 50])
@pytest.mark.parametrize("outliers", [0.0, 0.3])
def test_matches_reference_exactly(rng, num_points, outliers):
    pts, _, _ = plane_points(rng, 1500, outliers=outliers)
    for probability in (0.99999999, 1.0):
        plane, inliers = ransac_plane(pts, 0.002, num_points, 100, seed=3, probability=probability)
        ref_plane, ref_inliers = reference.ransac_plane(pts, 0.002, num_points, 100, seed=3, probability=probability)
        np.testing.assert_allclose(plane, ref_plane, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(inliers, ref_inliers)


def test_reference_sampler_draws_distinct_indices():
    for it in range(50):
        sample = reference.ransac_sample(11, it, 60, 50)
        assert len(set(sample)) == 50 and all(0 <= i < 60 for i in sample)
    assert sorted(reference.ransac_sample(0, 0, 5, 5)) == [0, 1, 2, 3, 4]


def test_finds_known_plane_among_outliers(rng):
    pts, truth, on_plane = plane_points(rng, 20000, noise=0.0003, outliers=0.4)
    plane, inliers = ransac_plane(pts, 0.002, num_points=3, iterations=500, seed=1)
    assert plane.dtype == np.float64 and plane.shape == (4,)
    assert abs(np.linalg.norm(plane[:3]) - 1) < 1e-12 and plane[3] > 0
    np.testing.assert_allclose(plane, truth, atol=2e-4)
    assert inliers.dtype == np.bool_
    assert (inliers == on_plane).mean() > 0.99


def test_reference_parameters_on_plane_with_object(rng):
    # The MVTec use: border strips that are almost all plane, 50-point hypotheses.
    pts, truth, _ = plane_points(rng, 30000, noise=0.0002, outliers=0.02)
    plane, inliers = ransac_plane(pts)
    np.testing.assert_allclose(plane, truth, atol=1e-4)
    assert inliers.mean() > 0.97


def test_refit_is_least_squares_on_the_inliers(rng):
    pts, _, _ = plane_points(rng, 3000, outliers=0.2)
    plane, inliers = ransac_plane(pts, 0.003, 3, 200, seed=5)
    np.testing.assert_allclose(plane, reference.fit_plane(pts[inliers]), atol=1e-12)


def test_deterministic_and_independent_of_threads(rng):
    pts, _, _ = plane_points(rng, 270000, outliers=0.3)  # > 262144 points: the threaded path
    first = ransac_plane(pts, 0.002, 5, 40, seed=9)
    threads = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        single = ransac_plane(pts, 0.002, 5, 40, seed=9)
    finally:
        xmodal.set_num_threads(threads)
    np.testing.assert_array_equal(first.plane, single.plane)
    np.testing.assert_array_equal(first.inliers, single.inliers)


def test_early_stop_follows_confidence(rng):
    # Every point is an inlier: the first block of 32 hypotheses settles it.
    pts, _, _ = plane_points(rng, 2000, noise=0.0001)
    fast = ransac_plane(pts, 0.004, 50, 1000, seed=0)
    full = ransac_plane(pts, 0.004, 50, 32, seed=0, probability=1.0)
    np.testing.assert_array_equal(fast.plane, full.plane)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    pts, _, _ = plane_points(rng, 1000)
    res = ransac_plane(torch.from_numpy(pts), 0.002, 3, 50)
    assert isinstance(res.plane, torch.Tensor) and res.plane.dtype == torch.float64
    assert isinstance(res.inliers, torch.Tensor) and res.inliers.dtype == torch.bool
    ref = ransac_plane(pts, 0.002, 3, 50)
    np.testing.assert_array_equal(res.plane.numpy(), ref.plane)


def test_bad_input(rng):
    pts, _, _ = plane_points(rng, 100)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        ransac_plane(pts[:, :2])
    with pytest.raises(ValueError, match="points must have 2 dimensions"):
        ransac_plane(pts[0])
    with pytest.raises(TypeError, match="points must be a floating-point array"):
        ransac_plane(pts.astype(np.int32))
    with pytest.raises(ValueError, match=r"num_points must be in \[3, N=20\]; got 50"):
        ransac_plane(pts[:20])
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="points contains NaN"):
        ransac_plane(bad)
    with pytest.raises(ValueError, match="distance_threshold must be a positive"):
        ransac_plane(pts, distance_threshold=0)
    with pytest.raises(ValueError, match="num_points must be in"):
        ransac_plane(pts, num_points=2)
    with pytest.raises(TypeError, match="iterations must be an int"):
        ransac_plane(pts, iterations=10.5)
    with pytest.raises(ValueError, match="probability must be in"):
        ransac_plane(pts, probability=1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        ransac_plane(pts, seed="a")


def test_degenerate_points_raise():
    line = np.c_[np.linspace(0, 1, 100), np.zeros(100), np.zeros(100)].astype(np.float32)
    with pytest.raises(ValueError, match="no hypothesis"):
        ransac_plane(line, num_points=3, iterations=20)


@pytest.mark.cuda
def test_cuda_tensors_give_the_cpu_result_on_their_device(rng):
    torch = pytest.importorskip("torch")
    pts, _, _ = plane_points(rng, 2000, outliers=0.2)
    res = ransac_plane(torch.from_numpy(pts).cuda(), 0.002, 3, 100)
    ref = ransac_plane(pts, 0.002, 3, 100)
    assert res.plane.is_cuda and res.inliers.is_cuda
    np.testing.assert_array_equal(res.plane.cpu().numpy(), ref.plane)
    np.testing.assert_array_equal(res.inliers.cpu().numpy(), ref.inliers)
