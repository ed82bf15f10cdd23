"""xmodal.ops.pro_curve / aupro against the float64 references of both official algorithms."""

import numpy as np
import pytest

import xmodal
from xmodal import reference

LIMITS = (0.3, 0.1, 0.05, 0.01)
TOL = 1e-9


def blob_masks(rng, n, h, w, p_defect=0.6, max_blobs=3):
    """Masks with random elliptic blobs in about p_defect of the images."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if rng.random() >= p_defect:
            continue
        for _ in range(rng.integers(1, max_blobs + 1)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(1, max(2, h / 6)), rng.uniform(1, max(2, w / 6))
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if not masks.any():
        masks[0, h // 2, w // 2] = True
    return masks


def anomaly_maps(rng, masks, dtype=np.float32, zeros=0.0, levels=None):
    """Noise plus a random lift inside the blobs; optionally a share of exact zeros (as CFM's
    masked background) and quantisation to `levels` values (heavy ties)."""
    maps = rng.random(masks.shape) + masks * rng.uniform(0.0, 1.0, size=(masks.shape[0], 1, 1))
    if levels is not None:
        maps = np.round(maps * levels) / levels
    if zeros:
        maps[rng.random(masks.shape) < zeros] = 0.0
    return maps.astype(dtype)


def check_against_reference(maps, masks, limits=LIMITS, thresholds=(None, 100, 99, 7)):
    for t in thresholds:
        got = xmodal.ops.aupro(maps, masks, limits=limits, num_thresholds=t)
        want = reference.aupro(maps, masks, limits=limits, num_thresholds=t)
        assert list(got) == list(dict.fromkeys(limits))
        for limit in limits:
            assert got[limit] == pytest.approx(want[limit], abs=TOL), (t, limit)
        fpr, pro = xmodal.ops.pro_curve(maps, masks, num_thresholds=t)
        if t is None:
            ref_fpr, ref_pro = reference.pro_curve_exact(maps, masks)
        else:
            ref_fpr, ref_pro = reference.pro_curve_sampled(maps, masks, t)
        assert fpr.dtype == np.float64 and pro.dtype == np.float64
        assert fpr.shape == ref_fpr.shape
        np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=TOL)
        np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=TOL)


@pytest.mark.parametrize("shape", [(3, 17, 23), (8, 64, 64), (4, 96, 128)])
def test_random_blobs_match_reference(rng, shape):
    masks = blob_masks(rng, *shape)
    check_against_reference(anomaly_maps(rng, masks), masks)


def test_float64_maps(rng):
    masks = blob_masks(rng, 5, 40, 30)
    check_against_reference(anomaly_maps(rng, masks, dtype=np.float64), masks)


@pytest.mark.parametrize(("zeros", "levels"), [(0.6, None), (0.3, 8), (0.0, 3)])
def test_heavy_ties(rng, zeros, levels):
    masks = blob_masks(rng, 6, 48, 48)
    check_against_reference(anomaly_maps(rng, masks, zeros=zeros, levels=levels), masks)


def test_negative_zero_ties_with_zero(rng):
    masks = blob_masks(rng, 4, 32, 32)
    maps = anomaly_maps(rng, masks, zeros=0.5)
    maps[:, ::2] *= -1.0  # half of the zeros become -0.0, which must tie with +0.0
    assert np.signbit(maps[maps == 0]).any()
    check_against_reference(maps, masks)


def test_constant_maps(rng):
    masks = blob_masks(rng, 3, 20, 20)
    maps = np.full(masks.shape, 0.25, dtype=np.float32)
    check_against_reference(maps, masks)
    fpr, pro = xmodal.ops.pro_curve(maps, masks)
    np.testing.assert_array_equal(fpr, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(pro, [0.0, 1.0, 1.0])


def test_one_region_and_images_without_anomalies(rng):
    masks = np.zeros((5, 30, 30), dtype=bool)
    masks[2, 10:14, 5:20] = True
    check_against_reference(anomaly_maps(rng, masks), masks)


def test_diagonal_touching_regions_are_one_region(rng):
    mask = np.zeros((1, 12, 12), dtype=np.uint8)
    for k in range(8):
        mask[0, 2 + k, 2 + k] = 255  # a diagonal line: one 8-connected region
    mask[0, 1, 10] = 1
    mask[0, 2, 11] = 1
    maps = anomaly_maps(rng, mask.astype(bool))
    check_against_reference(maps, mask)
    # With two regions, a perfect score on the long diagonal alone gives PRO 1/2 at FPR 0.
    scores = np.zeros((1, 12, 12), dtype=np.float32)
    scores[0][np.eye(12, k=0, dtype=bool) & (mask[0] > 0)] = 1.0
    fpr, pro = xmodal.ops.pro_curve(scores, mask)
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(0.5)


def test_list_of_different_sizes(rng):
    shapes = [(30, 40), (17, 17), (64, 20), (30, 40)]
    masks = [blob_masks(rng, 1, h, w, p_defect=0.8)[0] for h, w in shapes]
    maps = [anomaly_maps(rng, m[None])[0] for m in masks]
    check_against_reference(maps, masks)
    # A list of (N, H, W) arrays is the same as the list of their images.
    stacked = xmodal.ops.aupro([maps[0][None], maps[1][None], maps[2], maps[3]],
                               [masks[0][None], masks[1][None], masks[2], masks[3]])
    assert stacked == xmodal.ops.aupro(maps, masks)


def test_limits_hitting_curve_points_exactly():
    # 1024 OK pixels with distinct scores: exact-curve FPRs are k / 1024, so 0.25 and 0.5 are
    # curve points (no interpolation); sampled with T = 1024 likewise.
    rng = np.random.default_rng(7)
    maps = rng.permutation(1088).astype(np.float32).reshape(1, 34, 32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[0, 5:9, 3:19] = True  # 64 anomalous pixels -> 1024 OK
    limits = (0.25, 0.5, 1.0, 0.3)
    check_against_reference(maps, masks, limits=limits, thresholds=(None, 1024, 100))


def test_limit_one_and_unsorted_duplicate_limits(rng):
    masks = blob_masks(rng, 4, 25, 25)
    maps = anomaly_maps(rng, masks)
    check_against_reference(maps, masks, limits=(1.0, 0.05, 0.3, 0.05, 0.7))


def test_more_thresholds_than_ok_pixels(rng):
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1:5, 1:5] = True  # 20 OK pixels
    check_against_reference(anomaly_maps(rng, masks), masks, thresholds=(50, 2, 3))


def test_perfect_and_inverted_detectors(rng):
    masks = blob_masks(rng, 4, 32, 32)
    perfect = masks.astype(np.float32) + 0.01 * rng.random(masks.shape, dtype=np.float32)
    assert xmodal.ops.aupro(perfect, masks)[0.3] == pytest.approx(1.0)
    assert xmodal.ops.aupro(-perfect, masks)[0.3] == pytest.approx(0.0)
    check_against_reference(perfect, masks)


def test_torch_inputs_and_mask_dtypes(rng):
    torch = pytest.importorskip("torch")
    masks = blob_masks(rng, 4, 32, 32)
    maps = anomaly_maps(rng, masks)
    want = xmodal.ops.aupro(maps, masks)
    assert xmodal.ops.aupro(torch.from_numpy(maps), torch.from_numpy(masks)) == want
    assert xmodal.ops.aupro(maps, masks.astype(np.uint8) * 255) == want
    assert xmodal.ops.aupro(maps, masks.astype(np.float32)) == want
    assert xmodal.ops.aupro(maps.astype(np.float16).astype(np.float32), masks)  # runs
    fpr, _pro = xmodal.ops.pro_curve(torch.from_numpy(maps), torch.from_numpy(masks), num_thresholds=99)
    assert isinstance(fpr, np.ndarray) and fpr.shape == (100,)


def test_integer_maps_are_exact(rng):
    masks = blob_masks(rng, 3, 20, 20)
    maps = rng.integers(0, 50, size=masks.shape).astype(np.int32)
    check_against_reference(maps, masks, thresholds=(None, 100))


def test_non_contiguous_inputs(rng):
    masks = blob_masks(rng, 4, 40, 40)
    maps = anomaly_maps(rng, masks)
    view_maps, view_masks = maps[:, ::2, 1::2], masks[:, ::2, 1::2]
    assert not view_maps.flags.c_contiguous
    got = xmodal.ops.aupro(view_maps, view_masks)
    assert got == xmodal.ops.aupro(np.ascontiguousarray(view_maps), np.ascontiguousarray(view_masks))


def test_bootstrap_multiplicity_equals_replicated_images(rng):
    from xmodal.ops import aupro_bootstrap

    masks = blob_masks(rng, 5, 24, 24)
    maps = anomaly_maps(rng, masks, levels=16)
    multiplicity = np.array([[1, 1, 1, 1, 1], [2, 0, 1, 3, 1], [0, 0, 5, 0, 0], [0, 0, 0, 0, 0]])
    for t in (None, 100):
        out = aupro_bootstrap(maps, masks, multiplicity, limits=LIMITS, num_thresholds=t)
        for row, m in zip(out, multiplicity, strict=False):
            images = [i for i, k in enumerate(m) for _ in range(k)]
            has_region = any(masks[i].any() for i in images)
            if not images or not has_region:
                assert np.isnan(row).all()
                continue
            want = xmodal.ops.aupro(maps[images], masks[images], limits=LIMITS, num_thresholds=t)
            np.testing.assert_allclose(row, list(want.values()), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda m, g: (m, np.zeros_like(g)), ValueError, "no anomalous pixel"),
        (lambda m, g: (m, np.ones_like(g)), ValueError, "normal"),
        (lambda m, g: (np.where(g, np.nan, m), g), ValueError, "NaN"),
        (lambda m, g: (np.where(g, np.inf, m), g), ValueError, "infinite"),
        (lambda m, g: (m, g[:, :-1]), ValueError, "shape"),
        (lambda m, g: (m[0, 0], g[0, 0]), ValueError, "dimensions"),
        (lambda m, g: (m.astype(complex), g), TypeError, "real"),
        (lambda m, g: ([], []), ValueError, "at least one"),
        (lambda m, g: (list(m), list(g)[:-1]), ValueError, "same number"),
        (lambda m, g: (m, "mask"), TypeError, "dtype"),
    ],
)
def test_bad_input(rng, change, error, match):
    masks = blob_masks(rng, 3, 10, 10)
    maps, masks = change(anomaly_maps(rng, masks), masks)
    with pytest.raises(error, match=match):
        xmodal.ops.aupro(maps, masks)


@pytest.mark.parametrize("limits", [(0.0,), (1.5,), (-0.1, 0.3), (), (float("nan"),)])
def test_bad_limits(rng, limits):
    masks = blob_masks(rng, 2, 10, 10)
    with pytest.raises(ValueError, match="limits"):
        xmodal.ops.aupro(anomaly_maps(rng, masks), masks, limits=limits)


@pytest.mark.parametrize(("t", "error"),
                         [(1, ValueError), (0, ValueError), (-5, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_num_thresholds(rng, t, error):
    masks = blob_masks(rng, 2, 10, 10)
    with pytest.raises(error, match="num_thresholds"):
        xmodal.ops.pro_curve(anomaly_maps(rng, masks), masks, num_thresholds=t)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    shapes = [(6, 64, 48), (1, 33, 17)]
    for n, h, w in shapes:
        masks = blob_masks(rng, n, h, w)
        maps = anomaly_maps(rng, masks, zeros=0.4, levels=32)
        for t in (None, 99):
            cpu = xmodal.ops.pro_curve(maps, masks, num_thresholds=t)
            gpu = xmodal.ops.pro_curve(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda(), num_thresholds=t)
            np.testing.assert_allclose(gpu[0], cpu[0], rtol=0, atol=1e-12)
            np.testing.assert_allclose(gpu[1], cpu[1], rtol=0, atol=1e-12)
            a = xmodal.ops.aupro(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda(), num_thresholds=t)
            b = xmodal.ops.aupro(maps, masks, num_thresholds=t)
            assert a == pytest.approx(b, abs=1e-12)


def test_concentrated_scores(rng):
    # All scores within [0.5, 0.5005]: one top-16-bit float bucket; the fitted bucket map must
    # still give exact results (and spread them over many buckets).
    masks = blob_masks(rng, 6, 40, 40)
    maps = (np.float32(0.5) + np.float32(0.0005) * anomaly_maps(rng, masks) / 2).astype(np.float32)
    check_against_reference(maps, masks)


def test_huge_tie_bucket_uses_the_parallel_sort(rng):
    # 1.2 M OK pixels share one score: a single bucket larger than 2^20 items.
    masks = blob_masks(rng, 4, 600, 600, p_defect=1.0, max_blobs=2)
    maps = anomaly_maps(rng, masks, levels=1000)
    tie = rng.random(maps.shape) < 0.85
    maps[tie & ~masks] = 0.75
    check_against_reference(maps, masks, thresholds=(None, 100))
