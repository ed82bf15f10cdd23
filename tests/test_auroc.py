"""xmodal.ops.auroc against sklearn.metrics.roc_auc_score (and the Mann-Whitney reference)."""

import numpy as np
import pytest

import xmodal
from xmodal import reference

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def sk(scores, labels):
    return sklearn_metrics.roc_auc_score(np.ravel(labels), np.ravel(scores))


@pytest.mark.parametrize("n", [2, 3, 17, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_without_ties(rng, n, dtype):
    scores = rng.standard_normal(n).astype(dtype)
    labels = rng.random(n) < 0.3
    labels[0], labels[1] = True, False
    assert xmodal.ops.auroc(scores, labels) == pytest.approx(sk(scores, labels), abs=1e-12)
    assert xmodal.ops.auroc(scores, labels) == pytest.approx(reference.auroc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("levels", [1, 2, 5, 50])
def test_ties(rng, levels):
    scores = rng.integers(0, levels, size=5000).astype(np.float32)
    labels = rng.random(5000) < 0.4
    assert xmodal.ops.auroc(scores, labels) == pytest.approx(sk(scores, labels), abs=1e-12)


def test_signed_zeros_tie(rng):
    scores = np.array([0.0, -0.0, 0.0, -0.0, 1.0], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 1])
    assert xmodal.ops.auroc(scores, labels) == pytest.approx(sk(scores, labels), abs=1e-15)


def test_a_million_pixels_as_maps_and_lists(rng):
    maps = rng.random((16, 256, 256), dtype=np.float32)
    masks = rng.random(maps.shape) < 0.02
    maps[masks] += 0.3 * rng.random(int(masks.sum()), dtype=np.float32)
    maps[rng.random(maps.shape) < 0.3] = 0.0  # heavy ties at zero
    want = sk(maps, masks)
    assert xmodal.ops.auroc(maps, masks) == pytest.approx(want, abs=1e-12)
    assert xmodal.ops.auroc(list(maps), list(masks)) == pytest.approx(want, abs=1e-12)
    assert xmodal.ops.auroc([maps[:3], maps[3:]], [masks[:3], masks[3:]]) == pytest.approx(want, abs=1e-12)


def test_separable_classes(rng):
    scores = np.concatenate([rng.random(500), 2 + rng.random(50)])
    labels = np.r_[np.zeros(500), np.ones(50)]
    assert xmodal.ops.auroc(scores, labels) == 1.0
    assert xmodal.ops.auroc(-scores, labels) == 0.0


def test_label_and_score_kinds(rng):
    torch = pytest.importorskip("torch")
    scores = rng.random(300)
    labels = rng.random(300) < 0.5
    want = sk(scores, labels)
    for y in (labels, labels.astype(np.int64), labels.astype(np.float32), labels.astype(np.uint8), list(labels)):
        assert xmodal.ops.auroc(scores, np.asarray(y)) == pytest.approx(want, abs=1e-12)
    assert xmodal.ops.auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(want, abs=1e-12)
    assert xmodal.ops.auroc(list(scores), labels) == pytest.approx(want, abs=1e-12)
    ints = rng.integers(0, 10, 300)
    assert xmodal.ops.auroc(ints, labels) == pytest.approx(sk(ints, labels), abs=1e-12)
    assert isinstance(xmodal.ops.auroc(scores, labels), float)


@pytest.mark.parametrize(
    ("scores", "labels", "error", "match"),
    [
        (np.array([0.1, 0.2]), np.array([1, 1]), ValueError, "both classes"),
        (np.array([0.1, 0.2]), np.array([0, 0]), ValueError, "both classes"),
        (np.array([0.1, np.nan]), np.array([0, 1]), ValueError, "NaN"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 1]), ValueError, "shape"),
        (np.array([0.1, 0.2]), np.array([0, 2]), ValueError, "0 and 1"),
        (np.array([0.1, 0.2]), np.array([0, 255], dtype=np.uint8), ValueError, "0 and 1"),
        (np.array([0.1, 0.2]), np.array(["a", "b"]), TypeError, "labels"),
        (np.array([], dtype=np.float32), np.array([], dtype=bool), ValueError, "both classes"),
    ],
)
def test_bad_input(scores, labels, error, match):
    with pytest.raises(error, match=match):
        xmodal.ops.auroc(scores, labels)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    scores = np.round(rng.random((4, 100, 100)) * 30).astype(np.float32)
    labels = rng.random(scores.shape) < 0.1
    got = xmodal.ops.auroc(torch.from_numpy(scores).cuda(), torch.from_numpy(labels).cuda())
    assert got == pytest.approx(xmodal.ops.auroc(scores, labels), abs=1e-12)


def test_concentrated_scores_and_huge_tie_bucket(rng):
    scores = (0.5 + 1e-4 * rng.random(300_000)).astype(np.float32)
    labels = rng.random(300_000) < 0.3
    assert xmodal.ops.auroc(scores, labels) == pytest.approx(sk(scores, labels), abs=1e-12)
    ties = rng.random(2_400_000).astype(np.float32)
    ties[rng.random(ties.size) < 0.6] = 0.25  # 1.4 M equal scores in one bucket, both classes
    labels = rng.random(ties.size) < 0.5
    assert xmodal.ops.auroc(ties, labels) == pytest.approx(sk(ties, labels), abs=1e-12)
