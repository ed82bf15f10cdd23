"""Huge and tiny finite inputs across the kernels that compute in float32 (issue 10 item 5).

knn has its own cases in test_knn.py and the coreset in test_coreset.py. Here: the point-cloud
kernels reject coordinates whose float32 differences would overflow (documented bound 2^127)
and are exact right below it; the pooled grid, AUROC and PRO/AUPRO (which sort by order-
preserving integer keys) stay exact up to the largest finite values.
"""

import numpy as np
import pytest

import xmodal
from xmodal import ops, reference

BOUND = np.float32(2.0**127)  # the point kernels' documented coordinate bound
BELOW = np.nextafter(BOUND, np.float32(0))


def _cloud(rng, n, scale):
    return (rng.uniform(-1, 1, size=(n, 3)) * scale).astype(np.float32)


@pytest.mark.parametrize("bad", [BOUND, -BOUND, np.float32(3.4e38)])
def test_point_kernels_reject_coordinates_beyond_the_bound(rng, bad):
    points = _cloud(rng, 50, 1.0)
    points[17, 1] = bad
    with pytest.raises(ValueError, match=r"points has a coordinate of magnitude >= 2\^127"):
        ops.farthest_point_sample(points, 5)
    with pytest.raises(ValueError, match=r"points has a coordinate of magnitude >= 2\^127"):
        ops.three_nn_interpolate(points, points[:4].copy(), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"centers has a coordinate of magnitude >= 2\^127"):
        ops.three_nn_interpolate(points[:4].copy(), points, np.ones((50, 2), np.float32))


def test_point_kernels_exact_right_below_the_bound(rng):
    # Coordinates up to the largest float below 2^127 with both signs: differences reach
    # FLT_MAX but never overflow, and everything matches the float64 references.
    points = _cloud(rng, 400, 1.0) * BELOW
    points[:3] = [[BELOW, -BELOW, BELOW], [-BELOW, BELOW, -BELOW], [0, 0, 0]]
    for start in (0, 2):
        idx = ops.farthest_point_sample(points, 60, start)
        np.testing.assert_array_equal(idx, reference.farthest_point_sample(points, 60, start))
    centers = points[::37].copy()
    features = rng.standard_normal((len(centers), 5)).astype(np.float32)
    out = ops.three_nn_interpolate(points, centers, features)
    np.testing.assert_allclose(out, reference.three_nn_interpolate(points, centers, features), rtol=1e-6, atol=1e-6)


def test_knn_on_point_sets_near_float32_max(rng):
    # D <= 3 takes the KD-tree (float64 arithmetic): exact for any finite input, and distances
    # above FLT_MAX round to inf and tie by index, as in the reference.
    points = (rng.choice([-1.0, 1.0], size=(300, 3)) * rng.uniform(1e37, 3.4e38, size=(300, 3))).astype(np.float32)
    for dim in (1, 2, 3):
        dist, idx = xmodal.knn(points[:40, :dim], points[:, :dim], 7)
        with np.errstate(over="ignore"):
            ref_dist, ref_idx = reference.knn(points[:40, :dim], points[:, :dim], 7)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)


def test_points_to_grid_with_features_near_float32_max(rng):
    # Outputs are weighted averages of the features, so nothing overflows while
    # max|features| <= FLT_MAX / 2 (the documented bound).
    features = (rng.choice([-1.0, 1.0], size=(30, 4)) * 1.7e38).astype(np.float32)
    pixel_index = rng.choice(8 * 9, size=30, replace=False).astype(np.int64)
    out = ops.points_to_grid(features, pixel_index, 8, 9, out_size=(3, 4))
    ref = reference.points_to_grid(features, pixel_index, 8, 9, (3, 4))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * 1.7e38)


def _maps(rng):
    maps = rng.random((3, 20, 24)).astype(np.float32)
    masks = np.zeros((3, 20, 24), np.uint8)
    masks[0, 3:9, 4:12] = 1
    masks[1, 10:18, 2:5] = 1
    maps[masks > 0] += 0.3
    return maps, masks


def test_auroc_and_pro_depend_only_on_the_order_of_huge_scores(rng):
    # Multiplying by a power of two is exact, so the order (and every curve) must be unchanged,
    # up to the largest finite float32 and float64 scores.
    maps, masks = _maps(rng)
    for huge, plain in [
        (maps * np.float32(2.0**127), maps),
        (-(maps * np.float32(2.0**127)), -maps),
        (maps.astype(np.float64) * 2.0**1000, maps.astype(np.float64)),
        (-(maps.astype(np.float64) * 2.0**1000), -maps.astype(np.float64)),
    ]:
        assert ops.auroc(huge.ravel(), masks.ravel()) == ops.auroc(plain.ravel(), masks.ravel())
        for t in (None, 99):
            for got, want in zip(ops.pro_curve(huge, masks, t), ops.pro_curve(plain, masks, t), strict=False):
                np.testing.assert_array_equal(got, want)
            assert ops.aupro(huge, masks, num_thresholds=t) == ops.aupro(plain, masks, num_thresholds=t)


def test_auroc_of_extreme_scores_matches_sklearn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    scores = rng.choice([-1.0, 1.0], size=5000) * 10.0 ** rng.uniform(-300, 308, size=5000)
    scores[:10] = [np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324, -5e-324, 0, -0.0, 1e308, 1e308,
                   -1e-308, 1e-308]
    labels = (rng.random(5000) < 0.3).astype(np.uint8)
    with np.errstate(over="ignore", invalid="ignore"):  # sklearn's finiteness check sums the scores
        expected = metrics.roc_auc_score(labels, scores)
        s32 = scores.astype(np.float32)  # the float32 extremes (and many ties at 0 and +-FLT_MAX)
        s32 = np.where(np.isfinite(s32), s32, np.sign(s32) * np.finfo(np.float32).max).astype(np.float32)
        expected32 = metrics.roc_auc_score(labels, s32)
    assert ops.auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert ops.auroc(s32, labels) == pytest.approx(expected32, abs=1e-12)


@pytest.mark.cuda
def test_cuda_point_kernels_reject_and_accept_as_the_cpu(rng):
    torch = pytest.importorskip("torch")
    points = _cloud(rng, 300, 1.0) * BELOW
    gpu = ops.farthest_point_sample(torch.from_numpy(points).cuda(), 40, 3).cpu().numpy()
    np.testing.assert_array_equal(gpu, ops.farthest_point_sample(points, 40, 3))
    points[5, 2] = BOUND
    with pytest.raises(ValueError, match=r"points has a coordinate of magnitude >= 2\^127"):
        ops.farthest_point_sample(torch.from_numpy(points).cuda(), 40, 3)
    with pytest.raises(ValueError, match=r"centers has a coordinate of magnitude >= 2\^127"):
        ops.three_nn_interpolate(torch.zeros(4, 3).cuda(), torch.from_numpy(points).cuda(), torch.ones(300, 2).cuda())
