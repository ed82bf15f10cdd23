"""Normals and FPFH (xmodal.ops.estimate_normals / fpfh / organized_fpfh) against the float64
reference, open3d (when installed) and geometric truths (planes, spheres, rotations)."""

import numpy as np
import pytest

from xmodal import ops, reference

torch = pytest.importorskip("torch")

# --- clouds -------------------------------------------------------------------------------


def unit_rows(rng, n):
    v = rng.standard_normal((n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def grid_cloud(rng, shape=(6, 5, 4), duplicates=0):
    """Integer lattice (exactly tied distances everywhere), shuffled, optionally with duplicates."""
    pts = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    if duplicates:
        pts = np.concatenate([pts, pts[rng.choice(len(pts), duplicates)]])
    return pts[rng.permutation(len(pts))].astype(np.float32)


def surface_cloud(size=40, seed=0, noise=1e-5):
    """Foreground of an organized cloud of a bumpy dome seen from the origin (camera frame)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    half = size / 2
    r2 = ((u - half) / (0.48 * size)) ** 2 + ((v - half) / (0.4 * size)) ** 2
    x = (u - half) / half * 0.05
    y = (v - half) / half * 0.05
    z = 0.4 - 0.02 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.002 * np.sin(u / 4) + noise * rng.standard_normal(u.shape)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    return xyz[r2 < 1]


def sphere_cloud(n, radius=0.3, centre=(0.1, -0.2, 0.5), seed=0):
    rng = np.random.default_rng(seed)
    direction = unit_rows(rng, n).astype(np.float64)
    return (np.asarray(centre) + radius * direction).astype(np.float32), np.asarray(centre), direction


# --- tie-aware comparison -------------------------------------------------------------------
#
# A pair feature that lies on a bin edge (or a swap decision that is a tie, or a Darboux frame
# that is undefined) goes to either bin depending on the last bit of its arithmetic: numpy and
# the kernels (which contract to FMA and bin theta by cosine comparisons) may disagree there.
# Such pairs are found with the float64 reference; a point may differ from the reference only
# if its SPFH or a neighbour's contains one, and their share is bounded by each test.


def spfh_fragile(points, normals, rows, delta=1e-9):
    """(N,) bool: the point's SPFH has a pair within `delta` of a binning decision."""
    p = points.astype(np.float64)
    n = normals.astype(np.float32).astype(np.float64)
    fragile = np.zeros(len(points), dtype=bool)
    for i, row in enumerate(rows):
        j = row[1:]
        if len(j) == 0:
            continue
        theta, alpha, phi = reference.fpfh_pair_features(np.repeat(points[i][None], len(j), 0),
                                                         np.repeat(normals[i][None], len(j), 0), points[j], normals[j])
        dp = p[j] - p[i]
        d = np.linalg.norm(dp, axis=1)
        along1, along2 = np.abs(dp @ n[i]), np.abs((dp * n[j]).sum(1))
        source = np.where((along1 < along2)[:, None], n[j], n[i])
        edge = [11 * (theta + np.pi) / (2 * np.pi), 11 * (alpha + 1) / 2, 11 * (phi + 1) / 2]
        near_edge = np.zeros(len(j), dtype=bool)
        for s in edge:
            near_edge |= (np.abs(s - np.round(s)) < 11 * delta) & (np.round(s) >= 1) & (np.round(s) <= 10)
        wraps = np.pi - np.abs(theta) < delta
        # Equal or opposite normals tie exactly, and every implementation resolves that alike.
        same_axis = (n[j] == n[i]).all(axis=1) | (n[j] == -n[i]).all(axis=1)
        swap_tie = (np.abs(along1 - along2) <= delta * np.maximum(along1 + along2, 1e-300)) & ~same_axis
        frame = np.linalg.norm(np.cross(dp, source), axis=1) <= delta * np.maximum(d, 1e-300)
        fragile[i] = np.any((near_edge | wraps | swap_tie | frame) & (d > 0))
    return fragile


def fpfh_fragile(points, normals, rows, delta=1e-9):
    own = spfh_fragile(points, normals, rows, delta)
    return np.array([own[row].any() for row in rows], dtype=bool)


def assert_fpfh_matches(features, expected, fragile, max_fragile_share):
    """Rows agree to float32 rounding (1 ulp) except fragile ones, whose share is bounded."""
    assert features.dtype == np.float32 and features.shape == expected.shape
    rounded = expected.astype(np.float32)
    ulps = np.abs(features.view(np.int32).astype(np.int64) - rounded.view(np.int32).astype(np.int64))
    bad = (ulps > 1).any(axis=1)
    assert not (bad & ~fragile).any(), f"rows {np.flatnonzero(bad & ~fragile)[:10]} differ and are not fragile"
    assert fragile.mean() <= max_fragile_share, f"{fragile.mean():.4f} of the rows are fragile"


def check_fpfh(points, normals, max_nn, radius=np.inf, max_fragile_share=0.0, **kwargs):
    if np.isinf(radius):
        features = ops.fpfh(points, k=max_nn, normals=normals, **kwargs)
    else:
        features = ops.fpfh(points, radius=radius, max_nn=max_nn, normals=normals, **kwargs)
    expected = reference.fpfh(points, normals, max_nn, radius)
    rows = reference.fpfh_neighbourhoods(points, max_nn, radius)
    assert_fpfh_matches(features, expected, fpfh_fragile(points, normals, rows), max_fragile_share)
    return features, expected


# --- FPFH against the reference -------------------------------------------------------------


@pytest.mark.parametrize(("num_points", "k"), [(1, 10), (2, 2), (3, 30), (7, 7), (50, 1), (300, 20), (600, 100)])
def test_fpfh_random_cloud_equals_reference(rng, num_points, k):
    points = rng.random((num_points, 3)).astype(np.float32)
    check_fpfh(points, unit_rows(rng, num_points), k)


@pytest.mark.parametrize(("radius", "max_nn"), [(0.08, 30), (0.2, 15), (0.5, 1000), (1e-4, 10)])
def test_fpfh_radius_equals_reference(rng, radius, max_nn):
    points = rng.random((600, 3)).astype(np.float32)
    features, _expected = check_fpfh(points, unit_rows(rng, 600), max_nn, radius)
    if radius == 1e-4:  # every point isolated: no neighbour, all zeros
        assert not features.any()


@pytest.mark.parametrize("duplicates", [0, 30])
@pytest.mark.parametrize("k", [7, 19, 27])
def test_fpfh_lattice_ties_equal_reference(rng, duplicates, k):
    # Exactly tied distances at the k-th neighbour everywhere: lower indices win, in both.
    points = grid_cloud(rng, duplicates=duplicates)
    check_fpfh(points, unit_rows(rng, len(points)), k)
    check_fpfh(points, unit_rows(rng, len(points)), 3 * k, radius=1.8)


def test_fpfh_with_estimated_normals_equals_reference(rng):
    points = surface_cloud(40)
    features, normals = ops.fpfh(points, k=25, normal_k=12, return_normals=True)
    np.testing.assert_array_equal(normals, ops.estimate_normals(points, k=12))  # one search for both
    expected = reference.fpfh(points, normals, 25)
    rows = reference.fpfh_neighbourhoods(points, 25)
    assert_fpfh_matches(features, expected, fpfh_fragile(points, normals, rows), 0.0)
    # Random cloud: normals of random neighbourhoods, antiparallel neighbours included.
    points = rng.random((400, 3)).astype(np.float32)
    features, normals = ops.fpfh(points, radius=0.2, max_nn=30, normal_k=10, return_normals=True)
    expected = reference.fpfh(points, normals, 30, 0.2)
    rows = reference.fpfh_neighbourhoods(points, 30, 0.2)
    assert_fpfh_matches(features, expected, fpfh_fragile(points, normals, rows), 0.05)


def test_fpfh_default_normal_neighbourhood_is_the_feature_one(rng):
    points = rng.random((300, 3)).astype(np.float32)
    features, normals = ops.fpfh(points, radius=0.25, max_nn=20, return_normals=True)
    np.testing.assert_array_equal(normals, ops.estimate_normals(points, radius=0.25, max_nn=20))
    np.testing.assert_array_equal(features, ops.fpfh(points, radius=0.25, max_nn=20, normals=normals))


def test_fpfh_blocks_sum_to_200_and_isolated_points_are_zero(rng):
    points = np.concatenate([rng.random((200, 3)), [[5.0, 5.0, 5.0]]]).astype(np.float32)
    features = ops.fpfh(points, radius=0.3, max_nn=25, normal_k=10)
    blocks = features.reshape(-1, 3, 11).sum(axis=2)
    np.testing.assert_allclose(blocks[:-1], 200.0, rtol=1e-5)
    assert not features[-1].any()
    assert (features >= 0).all()


def test_fpfh_coincident_points(rng):
    # All pairs have zero features (middle bins); every neighbour sits at distance 0, so the
    # FPFH is the SPFH alone, as in open3d.
    points = np.full((12, 3), 0.5, np.float32)
    features, normals = ops.fpfh(points, k=5, return_normals=True)
    expected = np.zeros(33, np.float32)
    expected[[5, 16, 27]] = 100
    np.testing.assert_array_equal(features, np.tile(expected, (12, 1)))
    np.testing.assert_array_equal(normals, np.tile(np.float32([0, 0, -1]), (12, 1)))  # (0, 0, 1), facing the origin
    np.testing.assert_allclose(features, reference.fpfh(points, normals, 5), rtol=1e-6)


def test_fpfh_empty_and_single_point():
    for kind in (np.zeros((0, 3), np.float32), torch.zeros(0, 3)):
        features, normals = ops.fpfh(kind, k=10, return_normals=True)
        assert tuple(features.shape) == (0, 33) and tuple(normals.shape) == (0, 3)
        assert tuple(ops.estimate_normals(kind, k=3).shape) == (0, 3)
    features, normals = ops.fpfh(np.float32([[1, 2, 3]]), k=10, return_normals=True)
    assert not features.any()
    np.testing.assert_array_equal(normals, [[0, 0, -1]])


def test_fpfh_torch_in_torch_out(rng):
    points = rng.random((300, 3))  # float64: converted once
    features, normals = ops.fpfh(torch.from_numpy(points), k=15, return_normals=True)
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    assert isinstance(normals, torch.Tensor) and normals.shape == (300, 3)
    expected, expected_normals = ops.fpfh(points.astype(np.float32), k=15, return_normals=True)
    np.testing.assert_array_equal(features.numpy(), expected)
    np.testing.assert_array_equal(normals.numpy(), expected_normals)
    given = ops.fpfh(torch.from_numpy(points), k=15, normals=normals)
    np.testing.assert_array_equal(given.numpy(), expected)


def test_fpfh_is_deterministic_across_thread_counts(rng):
    import xmodal

    points = surface_cloud(60, seed=3)
    before = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        one = ops.fpfh(points, k=40, normal_k=15)
        xmodal.set_num_threads(2)
        two = ops.fpfh(points, k=40, normal_k=15)
    finally:
        xmodal.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


# --- normals ----------------------------------------------------------------------------------


def covariances(points, rows):
    p = points.astype(np.float64)
    out = []
    for row in rows:
        c = p[row] - p[row].mean(axis=0)
        out.append(c.T @ c / len(row))
    return np.array(out)


def test_normals_are_smallest_eigenvectors(rng):
    # Any cloud, conditioned or not: n is a unit eigenvector of the covariance whose Rayleigh
    # quotient is the smallest eigenvalue, to float32 rounding of n.
    for points, k in [(rng.random((500, 3)).astype(np.float32), 8), (surface_cloud(30), 20),
                      (grid_cloud(rng, (5, 5, 5), duplicates=20), 10)]:
        normals = ops.estimate_normals(points, k=k).astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
        for n, cov in zip(normals, covariances(points, reference.fpfh_neighbourhoods(points, k)), strict=False):
            scale = np.abs(cov).max()
            smallest = np.linalg.eigvalsh(cov)[0]
            assert n @ cov @ n <= smallest + 1e-6 * scale
            assert np.linalg.norm(cov @ n - (n @ cov @ n) * n) <= 1e-6 * scale


@pytest.mark.parametrize("radius", [np.inf, 0.006])
def test_normals_equal_reference_where_well_conditioned(radius):
    points = surface_cloud(50, seed=1)
    if np.isinf(radius):
        normals = ops.estimate_normals(points, k=16)
    else:
        normals = ops.estimate_normals(points, radius=radius, max_nn=40)
    expected = reference.estimate_normals(points, 16 if np.isinf(radius) else 40, radius)
    rows = reference.fpfh_neighbourhoods(points, 16 if np.isinf(radius) else 40, radius)
    eig = np.array([np.linalg.eigvalsh(c) for c in covariances(points, rows)])
    conditioned = (eig[:, 1] - eig[:, 0]) > 1e-3 * eig[:, 2]
    assert conditioned.mean() > 0.95
    np.testing.assert_allclose(normals[conditioned], expected[conditioned], atol=2e-6)


def test_normals_of_planes(rng):
    # Axis-aligned lattice plane: the covariance is exactly planar, the normal exactly the axis.
    u, v = np.mgrid[0:20, 0:15].reshape(2, -1)
    plane = np.stack([u * 0.01, v * 0.01, np.full(u.shape, 0.5)], -1).astype(np.float32)
    np.testing.assert_array_equal(ops.estimate_normals(plane, k=9), np.tile(np.float32([0, 0, -1]), (len(plane), 1)))
    # Tilted noisy plane seen from a viewpoint behind it: normals = the plane normal, facing it.
    normal = np.array([0.3, -0.5, 0.81])
    normal /= np.linalg.norm(normal)
    e1 = np.cross(normal, [1.0, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    st = rng.uniform(-1, 1, (2000, 2))
    points = (st[:, :1] * e1 + st[:, 1:] * e2 + 1e-4 * rng.standard_normal((2000, 1)) * normal).astype(np.float32)
    viewpoint = 5 * normal
    for normals in (ops.estimate_normals(points, k=30, viewpoint=viewpoint),
                    ops.estimate_normals(points, radius=0.15, max_nn=50, viewpoint=viewpoint)):
        assert (normals @ normal > 0.999).all()


def test_normals_of_a_sphere_face_the_viewpoint():
    points, centre, direction = sphere_cloud(4000)
    inward = ops.estimate_normals(points, k=20, viewpoint=centre)
    assert ((inward * -direction).sum(axis=1) > 0.99).all()
    viewpoint = np.array([0.0, 0.0, 0.0])  # a camera outside the sphere
    normals = ops.estimate_normals(points, k=20, viewpoint=viewpoint)
    assert ((normals * (viewpoint - points)).sum(axis=1) >= 0).all()
    assert (np.abs((normals * direction).sum(axis=1)) > 0.99).all()
    unoriented = ops.estimate_normals(points, k=20, viewpoint=None)
    np.testing.assert_array_equal(np.abs(unoriented), np.abs(normals))


def test_normals_of_degenerate_neighbourhoods():
    # A line: any direction orthogonal to it is an eigenvector of the (double) smallest eigenvalue.
    line = (np.arange(30)[:, None] * np.float32([0.3, 0.4, 0.0]) + 1).astype(np.float32)
    normals = ops.estimate_normals(line, k=5)
    np.testing.assert_allclose(normals @ np.float32([0.6, 0.8, 0.0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    # Fewer than 3 points in the neighbourhood: (0, 0, 1), oriented.
    two = np.float32([[0, 0, 1], [0, 0, 2], [9, 9, -9]])
    np.testing.assert_array_equal(ops.estimate_normals(two, radius=1.5, max_nn=10),
                                  [[0, 0, -1], [0, 0, -1], [0, 0, 1]])


# --- rotation invariance --------------------------------------------------------------------


def test_fpfh_invariant_under_exact_rotations():
    # 90-degree rotations permute and negate coordinates exactly in float32: the cloud is the
    # same up to its frame, so normals rotate exactly and the histograms are identical.
    points = surface_cloud(50, seed=2)
    viewpoint = np.array([0.01, -0.02, 0.0])
    features, normals = ops.fpfh(points, k=30, normal_k=12, viewpoint=viewpoint, return_normals=True)
    rotations = [np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]), np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]),
                 np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]])]
    for rotation in rotations:
        turned = (points @ rotation.T).astype(np.float32)
        f2, n2 = ops.fpfh(turned, k=30, normal_k=12, viewpoint=rotation @ viewpoint, return_normals=True)
        np.testing.assert_allclose(n2, normals @ rotation.T, atol=1e-7)
        equal = (np.abs(f2 - features) <= 1e-4 * np.maximum(features, 1)).all(axis=1)
        assert equal.mean() >= 0.999


def test_fpfh_invariant_under_rotations():
    # A general rotation moves the float32 coordinates by their rounding, which moves pair
    # features that sit near a bin edge to the next bin: the histograms agree up to such moves.
    points = surface_cloud(60, seed=4).astype(np.float64)
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    centre = points.mean(axis=0)
    viewpoint = np.zeros(3)
    features = ops.fpfh(points.astype(np.float32), k=40, normal_k=15, viewpoint=viewpoint)
    turned = ((points - centre) @ rotation.T + centre).astype(np.float32)
    rotated = ops.fpfh(turned, k=40, normal_k=15, viewpoint=(viewpoint - centre) @ rotation.T + centre)
    difference = np.abs(rotated - features)
    # One pair moving to a neighbouring bin changes an SPFH by 100 / 39 = 2.6 in two bins, and
    # an FPFH by at most that.
    assert difference.max() <= 2 * 100 / 39 + 1e-3
    assert np.median(difference.max(axis=1)) <= 1e-3
    assert (difference.max(axis=1) <= 1e-3).mean() >= 0.5
    assert difference.mean() <= 0.02


# --- organized clouds: BTF's per-sample features --------------------------------------------


def test_organized_fpfh_and_btf_pooling(rng):
    size = 48
    xyz = np.zeros((size, size, 3), np.float32)
    valid = np.zeros((size, size), bool)
    valid[6:40, 4:44] = True
    valid[rng.random((size, size)) < 0.1] = False
    xyz[valid] = rng.random((valid.sum(), 3)).astype(np.float32) * 0.05 + np.float32([0, 0, 0.4])
    xyz[3, 3] = [0.0, 0.1, 0.4]  # one zero coordinate: not valid (the BTF / MVTec rule)
    result = ops.organized_fpfh(xyz, k=30, normal_k=10)
    np.testing.assert_array_equal(result.pixel_index, np.flatnonzero(valid))
    np.testing.assert_array_equal(result.features, ops.fpfh(xyz[valid], k=30, normal_k=10))
    # BTF: the features on the full grid (zeros elsewhere), AvgPool2d(3, 1), AdaptiveAvgPool2d(28).
    full = torch.zeros(33, size * size)
    full[:, torch.from_numpy(result.pixel_index)] = torch.from_numpy(result.features).T
    btf = torch.nn.AdaptiveAvgPool2d(28)(torch.nn.AvgPool2d(3, stride=1)(full.reshape(1, 33, size, size)))[0]
    pooled = ops.points_to_grid(result.features, result.pixel_index, size, size, out_size=28)
    np.testing.assert_allclose(pooled, btf.numpy(), rtol=1e-5, atol=1e-4)
    # torch in, torch out
    tensor = ops.organized_fpfh(torch.from_numpy(xyz), k=30, normal_k=10)
    np.testing.assert_array_equal(tensor.features.numpy(), result.features)
    np.testing.assert_array_equal(tensor.pixel_index.numpy(), result.pixel_index)


def test_organized_fpfh_without_valid_points():
    result = ops.organized_fpfh(np.zeros((8, 8, 3), np.float32), k=5)
    assert result.features.shape == (0, 33) and result.pixel_index.shape == (0,)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "kwargs", "error", "match"),
    [
        (np.zeros((5, 3), np.int32), {"k": 3}, TypeError, "floating"),
        ("cloud", {"k": 3}, TypeError, "floating"),
        (np.zeros((5, 2), np.float32), {"k": 3}, ValueError, r"\(N, 3\)"),
        (np.zeros((5,), np.float32), {"k": 3}, ValueError, "2 dimensions"),
        (np.float32([[0, 0, np.nan]]), {"k": 3}, ValueError, "NaN"),
        (np.float32([[0, 0, np.inf]]), {"k": 3}, ValueError, "NaN or inf"),
        (np.zeros((5, 3), np.float32), {}, ValueError, "exactly one of k"),
        (np.zeros((5, 3), np.float32), {"k": 3, "radius": 0.1}, ValueError, "got both"),
        (np.zeros((5, 3), np.float32), {"k": 0}, ValueError, "k must be in"),
        (np.zeros((5, 3), np.float32), {"k": 2.5}, TypeError, "k must be an int"),
        (np.zeros((5, 3), np.float32), {"radius": 0.0}, ValueError, "radius"),
        (np.zeros((5, 3), np.float32), {"radius": float("nan")}, ValueError, "radius"),
        (np.zeros((5, 3), np.float32), {"radius": "big"}, TypeError, "radius"),
        (np.zeros((5, 3), np.float32), {"radius": 0.1, "max_nn": 0}, ValueError, "max_nn"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normal_k": 3, "normal_radius": 0.1}, ValueError, "normal_k"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normal_k": -1}, ValueError, "normal_k"),
        (np.zeros((5, 3), np.float32), {"k": 3, "viewpoint": (0, 0)}, TypeError, "viewpoint"),
        (np.zeros((5, 3), np.float32), {"k": 3, "viewpoint": (0, 0, np.nan)}, ValueError, "viewpoint"),
        (np.zeros((5, 3), np.float32), {"k": 3, "return_normals": 1}, TypeError, "return_normals"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normals": np.zeros((4, 3), np.float32)}, ValueError,
         "one row per point"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normals": np.zeros((5, 3), np.int64)}, TypeError, "normals"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normals": np.full((5, 3), np.nan, np.float32)}, ValueError, "normals"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normals": torch.zeros(5, 3)}, TypeError, "both be numpy"),
        (np.zeros((5, 3), np.float32), {"k": 3, "normals": np.zeros((5, 3), np.float32), "normal_k": 4}, ValueError,
         "given normals"),
    ],
)
def test_fpfh_bad_input(points, kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.fpfh(points, **kwargs)


def test_estimate_normals_and_organized_bad_input():
    with pytest.raises(ValueError, match="exactly one of k"):
        ops.estimate_normals(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="max_nn"):
        ops.estimate_normals(np.zeros((4, 3), np.float32), radius=1.0, max_nn=-2)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ops.organized_fpfh(np.zeros((4, 4, 2), np.float32), k=3)
    with pytest.raises(ValueError, match="3 dimensions"):
        ops.organized_fpfh(np.zeros((16, 3), np.float32), k=3)
    with pytest.raises(ValueError, match="NaN"):
        ops.organized_fpfh(np.full((4, 4, 3), np.nan, np.float32), k=3)


# --- open3d (optional peer) -------------------------------------------------------------------


def test_fpfh_agrees_with_open3d():
    o3d = pytest.importorskip("open3d")
    points = surface_cloud(70, seed=6)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    for ours_kwargs, param in [({"k": 20}, o3d.geometry.KDTreeSearchParamKNN(20)),
                               ({"radius": 0.006, "max_nn": 40}, o3d.geometry.KDTreeSearchParamHybrid(0.006, 40))]:
        # Normals: open3d's estimate + orientation towards the camera at the origin.
        cloud.normals = o3d.utility.Vector3dVector(np.zeros((0, 3)))
        cloud.estimate_normals(param)
        cloud.orient_normals_towards_camera_location(np.zeros(3))
        theirs_normals = np.asarray(cloud.normals)
        normals = ops.estimate_normals(points, **ours_kwargs)
        assert np.median((normals * theirs_normals).sum(axis=1)) > 1 - 1e-9
        assert ((normals * theirs_normals).sum(axis=1) > 0.999).mean() > 0.999
        # FPFH on the same normals and neighbourhoods.
        cloud.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
        theirs = np.asarray(o3d.pipelines.registration.compute_fpfh_feature(cloud, param).data).T
        ours = ops.fpfh(points, normals=normals, **ours_kwargs)
        close = np.abs(ours - theirs) <= 1e-3 * np.maximum(theirs, 1)
        assert close.all(axis=1).mean() > 0.999
        assert np.abs(ours - theirs).mean() < 1e-3


# --- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_fpfh_cuda_equals_cpu(rng):
    points = surface_cloud(60, seed=8)
    normals = ops.estimate_normals(points, k=15)
    gpu_normals = ops.estimate_normals(torch.from_numpy(points).cuda(), k=15)
    assert gpu_normals.is_cuda
    np.testing.assert_allclose(gpu_normals.cpu().numpy(), normals, atol=1e-6)
    # Same normals: the same neighbourhoods and per-point math; FMA contraction on the device
    # only matters on a bin edge.
    rows = reference.fpfh_neighbourhoods(points, 30)
    gpu = ops.fpfh(torch.from_numpy(points).cuda(), k=30, normals=torch.from_numpy(normals).cuda())
    assert gpu.is_cuda
    fragile = fpfh_fragile(points, normals, rows)
    assert_fpfh_matches(gpu.cpu().numpy(), ops.fpfh(points, k=30, normals=normals).astype(np.float64), fragile, 0.001)
    features, both = ops.fpfh(torch.from_numpy(points).cuda(), radius=0.01, max_nn=40, normal_k=15,
                              return_normals=True)
    cpu_features = ops.fpfh(points, radius=0.01, max_nn=40, normals=both.cpu().numpy())
    rows = reference.fpfh_neighbourhoods(points, 40, 0.01)
    assert_fpfh_matches(features.cpu().numpy(), cpu_features.astype(np.float64),
                        fpfh_fragile(points, both.cpu().numpy(), rows), 0.001)
