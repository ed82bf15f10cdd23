import numpy as np
import pytest

import xmodal
from xmodal import reference
from xmodal.ops import dbscan


def blobs(rng, n_clusters=6, per_cluster=150, noise=200, spread=0.03):
    centres = rng.uniform(0, 1, (n_clusters, 3))
    pts = [c + rng.normal(0, spread, (per_cluster, 3)) for c in centres]
    pts.append(rng.uniform(-0.1, 1.1, (noise, 3)))
    pts = np.concatenate(pts)
    return pts[rng.permutation(len(pts))].astype(np.float32)


@pytest.mark.parametrize(("eps", "min_points"), [(0.02, 5), (0.04, 10), (0.06, 30), (0.1, 1), (0.03, 2)])
def test_equals_sklearn_labels(rng, eps, min_points):
    sklearn = pytest.importorskip("sklearn.cluster")
    pts = blobs(rng)
    labels = dbscan(pts, eps, min_points)
    expected = sklearn.DBSCAN(eps=eps, min_samples=min_points).fit(pts.astype(np.float64)).labels_
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int64


def test_equals_reference_with_border_points(rng):
    # Sparse uniform points: many border points, some shared between clusters.
    pts = rng.uniform(0, 1, (700, 3)).astype(np.float32)
    for eps, min_points in ((0.09, 5), (0.12, 9)):
        labels = dbscan(pts, eps, min_points)
        expected = reference.dbscan(pts, eps, min_points)
        np.testing.assert_array_equal(labels, expected)
        core = np.array([(np.sum((pts - p) ** 2, axis=1) <= eps**2).sum() >= min_points for p in pts])
        assert (labels[~core] >= -1).all() and ((labels == -1) <= ~core).all()


def test_dense_surface_like_an_organized_cloud(rng):
    # A tilted 0.5 mm grid (many points per cell: the all-core fast path) plus a separate patch.
    sklearn = pytest.importorskip("sklearn.cluster")
    g = np.stack(np.meshgrid(np.arange(120), np.arange(120)), -1).reshape(-1, 2) * 0.0005
    surface = np.c_[g, 0.5 + 0.1 * g[:, 0]] + rng.normal(0, 1e-5, (len(g), 3))
    patch = surface[:400] + np.array([0.0, 0.0, 0.02])
    pts = np.concatenate([surface, patch, rng.uniform(0, 0.06, (50, 3)) + np.array([0, 0, 0.5])]).astype(np.float32)
    labels = dbscan(pts, 0.006, 30)
    expected = sklearn.DBSCAN(eps=0.006, min_samples=30).fit(pts.astype(np.float64)).labels_
    np.testing.assert_array_equal(labels, expected)


def test_edge_sizes():
    empty = dbscan(np.zeros((0, 3), np.float32), 0.1, 3)
    assert empty.shape == (0,) and empty.dtype == np.int64
    one = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(dbscan(one, 0.1, 1), [0])
    np.testing.assert_array_equal(dbscan(one, 0.1, 2), [-1])
    same = np.ones((40, 3), np.float32)  # duplicates: one cell, all core
    np.testing.assert_array_equal(dbscan(same, 1e-6, 40), np.zeros(40))
    np.testing.assert_array_equal(dbscan(same, 1e-6, 41), -np.ones(40))


def test_cluster_ids_follow_lowest_core_index():
    a = np.zeros((5, 3))
    b = np.full((5, 3), 10.0)
    pts = np.concatenate([b[:1], a, b[1:]]).astype(np.float32)  # point 0 belongs to the far cluster
    np.testing.assert_array_equal(dbscan(pts, 0.5, 3), [0, 1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_independent_of_threads(rng):
    pts = blobs(rng, n_clusters=20, per_cluster=13200, noise=2000, spread=0.02)  # > 262144: the threaded path
    threads = xmodal.get_num_threads()
    first = dbscan(pts, 0.03, 8)
    try:
        xmodal.set_num_threads(1)
        single = dbscan(pts, 0.03, 8)
    finally:
        xmodal.set_num_threads(threads)
    np.testing.assert_array_equal(first, single)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    pts = blobs(rng)
    labels = dbscan(torch.from_numpy(pts), 0.04, 10)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.numpy(), dbscan(pts, 0.04, 10))


def test_bad_input(rng):
    pts = blobs(rng)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        dbscan(pts[:, :2], 0.1, 3)
    with pytest.raises(TypeError, match="points must be a floating-point array"):
        dbscan(pts.astype(np.int64), 0.1, 3)
    with pytest.raises(ValueError, match="eps must be a positive"):
        dbscan(pts, 0.0, 3)
    with pytest.raises(ValueError, match="eps must be a positive"):
        dbscan(pts, float("nan"), 3)
    with pytest.raises(ValueError, match=r"min_points must be in \[1"):
        dbscan(pts, 0.1, 0)
    bad = pts.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="points contains NaN"):
        dbscan(bad, 0.1, 3)
    far = np.array([[0, 0, 0], [1e6, 1e6, 1e6]], np.float32)
    with pytest.raises(ValueError, match="eps=1e-09 is too small"):
        dbscan(far, 1e-9, 1)


@pytest.mark.cuda
def test_cuda_tensors_give_the_cpu_result_on_their_device(rng):
    torch = pytest.importorskip("torch")
    pts = blobs(rng)
    labels = dbscan(torch.from_numpy(pts).cuda(), 0.04, 10)
    assert labels.is_cuda
    np.testing.assert_array_equal(labels.cpu().numpy(), dbscan(pts, 0.04, 10))
