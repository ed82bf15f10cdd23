"""Point-cloud kernels: FPS, grouping, low-D kNN, 3-NN interpolation, points_to_grid."""

import math

import numpy as np
import pytest

import xmodal
from xmodal import ops, reference

torch = pytest.importorskip("torch")


# --- clouds -------------------------------------------------------------------------------


def object_cloud(size=64, seed=0):
    """Foreground points of an organized size x size cloud of a bumpy object on no background,
    in raster order (spatially coherent, as the Point-MAE pipelines feed them)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    half = size / 2
    r2 = ((u - half) / (0.45 * size)) ** 2 + ((v - half) / (0.35 * size)) ** 2
    mask = r2 < 1
    x = (u - half) / half * 0.05
    y = (v - half) / half * 0.05
    z = 0.3 + 0.01 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.001 * np.sin(u / 3) + 1e-5 * rng.standard_normal(u.shape)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    return xyz[mask], np.flatnonzero(mask)


def grid_cloud(shape=(6, 5, 4), spacing=1.0, seed=0, duplicates=0):
    """Integer lattice points (exact arithmetic: many exactly tied distances), shuffled."""
    rng = np.random.default_rng(seed)
    pts = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    pts = pts[rng.permutation(len(pts))]
    if duplicates:
        pts = np.concatenate([pts, pts[rng.choice(len(pts), duplicates)]])
        pts = pts[rng.permutation(len(pts))]
    return (pts * spacing).astype(np.float32)


# --- farthest point sampling ----------------------------------------------------------------


@pytest.mark.parametrize(("num_points", "n"), [(1, 1), (2, 2), (7, 7), (300, 50), (5000, 300)])
def test_fps_random_equals_reference(rng, num_points, n):
    points = rng.random((num_points, 3)).astype(np.float32)
    start = int(rng.integers(num_points))
    idx = ops.farthest_point_sample(points, n, start=start)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    np.testing.assert_array_equal(idx, reference.farthest_point_sample(points, n, start))


def test_fps_object_cloud_equals_reference():
    points, _ = object_cloud(96)
    np.testing.assert_array_equal(ops.farthest_point_sample(points, 256),
                                  reference.farthest_point_sample(points, 256))


@pytest.mark.parametrize("spacing", [1.0, 0.25, 0.1])
def test_fps_ties_on_grids_equal_reference(spacing):
    # A lattice is full of exact ties, and with n = N every point is drawn: the bucket pruning
    # and the lowest-index rule must agree with the plain loop at every step, including the
    # phase where only duplicates at distance 0 remain.
    points = grid_cloud(spacing=spacing, duplicates=17)
    n = len(points)
    idx = ops.farthest_point_sample(points, n, start=3)
    np.testing.assert_array_equal(idx, reference.farthest_point_sample(points, n, 3))
    assert len(np.unique(idx)) == n


def test_fps_large_ties_grid_equals_reference():
    points = grid_cloud((30, 30, 8))
    np.testing.assert_array_equal(ops.farthest_point_sample(points, 500),
                                  reference.farthest_point_sample(points, 500))


def test_fps_all_points_identical():
    points = np.ones((40, 3), np.float32)
    np.testing.assert_array_equal(ops.farthest_point_sample(points, 40, start=5),
                                  np.r_[5, np.delete(np.arange(40), 5)])


def test_fps_torch_in_torch_out(rng):
    points = rng.random((500, 3))
    idx = ops.farthest_point_sample(torch.from_numpy(points), 20, start=1)  # float64 tensor
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    np.testing.assert_array_equal(idx.numpy(), reference.farthest_point_sample(points.astype(np.float32), 20, 1))


def test_fps_is_deterministic(rng):
    points = rng.random((3000, 3)).astype(np.float32)
    np.testing.assert_array_equal(ops.farthest_point_sample(points, 100), ops.farthest_point_sample(points, 100))


# pointnet2_ops rules (reference=True)


def test_pointnet2_thread_count_formula():
    for n in [1, 2, 3, 8, 255, 256, 511, 512, 513, 50000]:
        expected = int(math.log(n) / math.log(2.0))
        assert xmodal._backend.C.pointnet2_log2_threads(n) == min(expected, 9)


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(grid_cloud((11, 10, 6)), id="grid-660-ties"),  # N >= 512: 512 threads
        pytest.param(grid_cloud((7, 6, 7), spacing=0.5), id="grid-294"),  # 256 threads
        pytest.param(grid_cloud((5, 5, 5), duplicates=40), id="grid-duplicates"),
    ],
)
def test_reference_fps_equals_pointnet2_emulation(points):
    n = min(len(points), 60)
    idx = ops.farthest_point_sample(points, n, reference=True)
    np.testing.assert_array_equal(idx, reference.pointnet2_farthest_point_sample(points, n))


def test_reference_fps_tie_rule_differs_from_lowest_index():
    # On a lattice, pointnet2_ops' reduction picks among tied points by bit-reversed thread
    # id, not by lowest index: the two modes must differ here (and each match its reference).
    points = grid_cloud((11, 10, 6)) + np.float32(1.0)  # keep all points away from the origin
    a = ops.farthest_point_sample(points, 40, reference=True)
    b = ops.farthest_point_sample(points, 40)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, reference.pointnet2_farthest_point_sample(points, 40))
    np.testing.assert_array_equal(b, reference.farthest_point_sample(points, 40))


def test_reference_fps_skips_near_origin_points(rng):
    points = rng.random((700, 3)).astype(np.float32)
    near = rng.choice(700, 80, replace=False)
    points[near] *= 0.01  # |p|^2 <= 3e-4: never selected
    points[0] = 0  # the start may itself be at the origin
    idx = ops.farthest_point_sample(points, 50, reference=True)
    np.testing.assert_array_equal(idx, reference.pointnet2_farthest_point_sample(points, 50))
    assert not np.isin(idx[1:], np.r_[near, 0]).any()


def test_reference_fps_repeats_like_pointnet2_when_points_run_out():
    points = np.array([[1, 0, 0], [2, 0, 0], [0, 0, 0], [3, 0, 0]], np.float32)
    idx = ops.farthest_point_sample(points, 4, reference=True)
    np.testing.assert_array_equal(idx, reference.pointnet2_farthest_point_sample(points, 4))
    np.testing.assert_array_equal(idx, [0, 3, 1, 0])


def test_reference_fps_errors():
    with pytest.raises(ValueError, match="start"):
        ops.farthest_point_sample(np.ones((5, 3), np.float32), 2, start=1, reference=True)
    with pytest.raises(ValueError, match=r"\|p\|\^2"):
        ops.farthest_point_sample(np.zeros((5, 3), np.float32), 2, reference=True)
    assert ops.farthest_point_sample(np.zeros((5, 3), np.float32), 1, reference=True).tolist() == [0]
    with pytest.raises(TypeError, match="reference"):
        ops.farthest_point_sample(np.ones((5, 3), np.float32), 2, reference="yes")


@pytest.mark.parametrize(
    ("points", "n", "kwargs", "error", "match"),
    [
        (np.zeros((0, 3), np.float32), 1, {}, ValueError, "at least one point"),
        (np.zeros((4, 2), np.float32), 1, {}, ValueError, r"\(N, 3\)"),
        (np.zeros((4,), np.float32), 1, {}, ValueError, "2 dimensions"),
        (np.zeros((4, 3), np.int32), 1, {}, TypeError, "floating"),
        (np.array([[0, 0, np.nan]] * 3, np.float32), 1, {}, ValueError, "NaN"),
        (np.zeros((4, 3), np.float32), 5, {}, ValueError, "n must be in"),
        (np.zeros((4, 3), np.float32), 0, {}, ValueError, "n must be in"),
        (np.zeros((4, 3), np.float32), 2.0, {}, TypeError, "n must be an int"),
        (np.zeros((4, 3), np.float32), 2, {"start": 4}, ValueError, "start must be in"),
    ],
)
def test_fps_bad_input(points, n, kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.farthest_point_sample(points, n, **kwargs)


# --- low-dimensional kNN (the KD-tree path of xmodal.knn) ----------------------------------


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_knn_low_dim_equals_reference(rng, dim, ties):
    for trial in range(6):
        n = int(rng.integers(1, 300))
        q = int(rng.integers(0, 40))
        k = int(rng.integers(1, n + 1)) if trial else n  # k = N once
        if ties:
            bank = rng.integers(0, 4, (n, dim)).astype(np.float32)
            queries = rng.integers(0, 4, (q, dim)).astype(np.float32)
        else:
            bank = rng.standard_normal((n, dim)).astype(np.float32)
            queries = rng.standard_normal((q, dim)).astype(np.float32)
        dist, idx = xmodal.knn(queries, bank, k)
        ref_dist, ref_idx = reference.knn(queries, bank, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)


def test_knn_low_dim_object_cloud_large_k():
    points, _ = object_cloud(64)
    centers = points[::37]
    dist, idx = xmodal.knn(centers, points, 128)
    ref_dist, ref_idx = reference.knn(centers, points, 128)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


# --- grouping ----------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["object", "grid", "random"])
def test_group_points_equals_brute_force(rng, cloud):
    if cloud == "object":
        points, _ = object_cloud(64)
    elif cloud == "grid":
        points = grid_cloud((9, 8, 7), duplicates=30)
    else:
        points = rng.random((2000, 3)).astype(np.float32)
    groups = ops.group_points(points, 64, 32)
    centers, idx, hoods = reference.group_points(points, 64, 32)
    np.testing.assert_array_equal(groups.centers, centers)
    np.testing.assert_array_equal(groups.idx, idx)
    np.testing.assert_array_equal(groups.neighbourhoods, hoods)
    assert groups.neighbourhoods.shape == (64, 32, 3) and groups.neighbourhoods.dtype == np.float32


def test_group_points_matches_the_torch_broadcast_topk(rng):
    # CFM / G2SF: torch.norm(xyz[:, :, None] - centers[:, None], dim=-1) + topk(largest=False).
    points = torch.from_numpy(rng.random((3000, 3)).astype(np.float32))
    groups = ops.group_points(points, 100, 16)
    assert isinstance(groups.idx, torch.Tensor)
    d = torch.norm(points[None, :, None] - groups.centers[None, None], dim=-1)
    _, topk = torch.topk(d, 16, dim=1, largest=False, sorted=True)
    np.testing.assert_array_equal(groups.idx.numpy(), topk[0].T.numpy())  # no ties in random data
    np.testing.assert_array_equal(groups.idx[:, 0].numpy(), ops.farthest_point_sample(points, 100).numpy())


def test_group_points_reference_fps():
    points = grid_cloud((9, 8, 8)) + np.float32(0.5)
    groups = ops.group_points(points, 20, 8, reference=True)
    centers = points[reference.pointnet2_farthest_point_sample(points, 20)]
    np.testing.assert_array_equal(groups.centers, centers)
    np.testing.assert_array_equal(groups.idx, reference.knn(centers, points, 8)[1])


def test_group_points_edges_and_errors():
    points = grid_cloud((3, 3, 2))
    groups = ops.group_points(points, len(points), len(points))
    assert groups.idx.shape == (18, 18)
    assert all(sorted(row) == list(range(18)) for row in groups.idx.tolist())
    with pytest.raises(ValueError, match="group_size"):
        ops.group_points(points, 4, 19)
    with pytest.raises(ValueError, match=r"^n_groups must be in"):
        ops.group_points(points, 19, 4)
    with pytest.raises(ValueError, match="at least one point"):
        ops.group_points(np.zeros((0, 3), np.float32), 1, 1)


# --- 3-NN interpolation ----------------------------------------------------------------------


@pytest.mark.parametrize("num_centers", [1, 2, 3, 50])
def test_three_nn_equals_reference(rng, num_centers):
    points = rng.random((400, 3)).astype(np.float32)
    centers = rng.random((num_centers, 3)).astype(np.float32)
    features = rng.standard_normal((num_centers, 7)).astype(np.float32)
    out = ops.three_nn_interpolate(points, centers, features)
    assert out.dtype == np.float32 and out.shape == (400, 7)
    np.testing.assert_allclose(out, reference.three_nn_interpolate(points, centers, features), rtol=1e-6, atol=1e-7)


def test_three_nn_ties_and_coincident_points(rng):
    # Lattice points and centers: exact ties among the 3 nearest resolve to the lower center
    # index, and a point on a center gets weight ~1 (d = 0 -> 1e8).
    centers = grid_cloud((4, 4, 3), seed=1)
    points = np.concatenate([grid_cloud((5, 4, 4), seed=2) * np.float32(0.75), centers[:5]])
    features = rng.standard_normal((len(centers), 5)).astype(np.float32)
    out = ops.three_nn_interpolate(points, centers, features)
    np.testing.assert_allclose(out, reference.three_nn_interpolate(points, centers, features), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[-5:], features[:5], rtol=1e-6, atol=1e-6)


def test_three_nn_matches_the_full_sort_reference_code(rng):
    # The reference code: square_distance (N x G), sort, first 3, 1 / (d + 1e-8), normalise;
    # in float64 as G2SF does (in float32, |a|^2 + |b|^2 - 2ab cancels badly at millimetre
    # spacing and picks other neighbours).
    points, _ = object_cloud(64)
    centers = points[ops.farthest_point_sample(points, 128)]
    features = rng.standard_normal((128, 16)).astype(np.float32)
    src, dst = torch.from_numpy(points).double(), torch.from_numpy(centers).double()
    d = -2 * src @ dst.T + (src**2).sum(-1)[:, None] + (dst**2).sum(-1)[None]
    d, i = d.sort(dim=-1)
    w = 1.0 / (d[:, :3] + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    expected = (torch.from_numpy(features).double()[i[:, :3]] * w[..., None]).sum(1).numpy()
    out = ops.three_nn_interpolate(points, centers, features)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_three_nn_torch_and_edges(rng):
    points = torch.rand(50, 3, dtype=torch.float64)
    centers = torch.rand(5, 3)
    features = torch.rand(5, 3)
    out = ops.three_nn_interpolate(points, centers, features)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (50, 3)
    empty = ops.three_nn_interpolate(np.zeros((0, 3), np.float32), centers.numpy(), features.numpy())
    assert empty.shape == (0, 3)


def test_three_nn_bad_input():
    p = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="center_features"):
        ops.three_nn_interpolate(p, p, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="centers must hold"):
        ops.three_nn_interpolate(p, np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ops.three_nn_interpolate(np.full((4, 3), np.nan, np.float32), p, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="both"):
        ops.three_nn_interpolate(torch.from_numpy(p), p, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ops.three_nn_interpolate(np.zeros((4, 2), np.float32), p, np.zeros((4, 2), np.float32))


# --- points_to_grid ---------------------------------------------------------------------------


def torch_grid(features, pixel_index, height, width, out_size):
    """The reference code's path: scatter into zeros, AvgPool2d(3, 1), AdaptiveAvgPool2d."""
    f = torch.as_tensor(features)
    grid = torch.zeros(1, f.shape[1], height * width)
    grid[0, :, torch.as_tensor(pixel_index)] = f.T
    grid = grid.view(1, f.shape[1], height, width)
    return torch.nn.AdaptiveAvgPool2d(out_size)(torch.nn.AvgPool2d(3, 1)(grid))[0]


@pytest.mark.parametrize(
    ("height", "width", "out_size"),
    [(224, 224, 224), (224, 224, 56), (224, 224, 28), (31, 17, (9, 23)), (3, 3, 1), (5, 4, (6, 7))],
)
def test_points_to_grid_equals_torch_pooling(rng, height, width, out_size):
    pixel_index = np.flatnonzero(rng.random(height * width) < 0.6)
    features = rng.standard_normal((len(pixel_index), 6)).astype(np.float32)
    out = ops.points_to_grid(features, pixel_index, height, width, out_size)
    expected = torch_grid(features, pixel_index, height, width, out_size).numpy()
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, reference.points_to_grid(features, pixel_index, height, width, out_size),
                               rtol=1e-5, atol=1e-6)
    last = ops.points_to_grid(features, pixel_index, height, width, out_size, channels_last=True)
    np.testing.assert_array_equal(last, np.moveaxis(out, 0, -1))


def test_points_to_grid_object_cloud_torch_in_torch_out(rng):
    points, pixel_index = object_cloud(64)
    features = torch.from_numpy(rng.standard_normal((len(points), 12)).astype(np.float32))
    out = ops.points_to_grid(features, torch.from_numpy(pixel_index), 64, 64, 16)
    assert isinstance(out, torch.Tensor) and out.shape == (12, 16, 16)
    torch.testing.assert_close(out, torch_grid(features, pixel_index, 64, 64, 16), rtol=1e-5, atol=1e-6)


def test_points_to_grid_no_points_gives_zeros():
    out = ops.points_to_grid(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 8, 8, 4)
    np.testing.assert_array_equal(out, np.zeros((4, 4, 4), np.float32))


@pytest.mark.parametrize(
    ("pixel_index", "kwargs", "error", "match"),
    [
        (np.array([0, 1, 1]), {}, ValueError, "distinct"),
        (np.array([0, 1, 64]), {}, ValueError, "outside"),
        (np.array([0, 1, -1]), {}, ValueError, "outside"),
        (np.array([0.0, 1.0, 2.0]), {}, TypeError, "integer"),
        (np.array([0, 1]), {}, ValueError, "shape"),
        (np.array([0, 1, 2]), {"height": 2}, ValueError, "height"),
        (np.array([0, 1, 2]), {"out_size": (1, 2, 3)}, TypeError, "out_size"),
        (np.array([0, 1, 2]), {"out_size": 0}, ValueError, "out_size"),
    ],
)
def test_points_to_grid_bad_input(pixel_index, kwargs, error, match):
    args = {"height": 8, "width": 8, "out_size": 4} | kwargs
    with pytest.raises(error, match=match):
        ops.points_to_grid(np.zeros((3, 2), np.float32), pixel_index, **args)


# --- the whole point path, end to end ------------------------------------------------------


def test_point_path_end_to_end(rng):
    # Organized cloud -> groups -> per-group features -> per-point features -> grid.
    points, pixel_index = object_cloud(64)
    groups = ops.group_points(points, 128, 16)
    group_features = groups.neighbourhoods.reshape(128, -1)[:, :8].astype(np.float32)
    per_point = ops.three_nn_interpolate(points, groups.centers, group_features)
    grid = ops.points_to_grid(per_point, pixel_index, 64, 64, 16)
    expected = torch_grid(reference.three_nn_interpolate(points, groups.centers, group_features),
                          pixel_index, 64, 64, 16)
    np.testing.assert_allclose(grid, expected.numpy(), rtol=1e-5, atol=1e-6)


# --- CUDA against CPU -----------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("ref", [False, True])
def test_fps_cuda_equals_cpu(rng, ref):
    for points in (rng.random((20000, 3)).astype(np.float32), grid_cloud((11, 10, 6), duplicates=20)):
        cpu = ops.farthest_point_sample(points, 300, reference=ref)
        gpu = ops.farthest_point_sample(torch.from_numpy(points).cuda(), 300, reference=ref)
        assert gpu.is_cuda
        np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


@pytest.mark.cuda
def test_group_points_cuda_equals_cpu(rng):
    points = rng.random((5000, 3)).astype(np.float32)
    cpu = ops.group_points(points, 64, 32)
    gpu = ops.group_points(torch.from_numpy(points).cuda(), 64, 32)
    np.testing.assert_array_equal(gpu.idx.cpu().numpy(), cpu.idx)


@pytest.mark.cuda
def test_three_nn_cuda_equals_cpu(rng):
    points = grid_cloud((6, 6, 6), seed=3) * np.float32(0.7)
    centers = grid_cloud((4, 4, 3), seed=4)
    features = rng.standard_normal((len(centers), 33)).astype(np.float32)
    cpu = ops.three_nn_interpolate(points, centers, features)
    gpu = ops.three_nn_interpolate(*(torch.from_numpy(a).cuda() for a in (points, centers, features)))
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_points_to_grid_cuda_equals_cpu(rng, channels_last):
    pixel_index = np.flatnonzero(rng.random(224 * 224) < 0.5)
    features = rng.standard_normal((len(pixel_index), 9)).astype(np.float32)
    cpu = ops.points_to_grid(features, pixel_index, 224, 224, 56, channels_last=channels_last)
    gpu = ops.points_to_grid(torch.from_numpy(features).cuda(), torch.from_numpy(pixel_index).cuda(), 224, 224, 56,
                             channels_last=channels_last)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="distinct"):
        ops.points_to_grid(torch.zeros(2, 3).cuda(), torch.zeros(2, dtype=torch.int64).cuda(), 8, 8, 4)
