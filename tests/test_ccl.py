"""xmodal.ops.connected_components: membership equals scipy.ndimage.label (8-connectivity),
labels numbered in raster order of each component's first pixel."""

import numpy as np
import pytest

import xmodal
from xmodal import reference

ndimage = pytest.importorskip("scipy.ndimage")
EIGHT = np.ones((3, 3), dtype=int)


def raster_relabel(labels):
    """scipy labels renumbered 1..K in raster order of each component's first pixel."""
    flat = labels.ravel()
    _, first = np.unique(flat, return_index=True)
    order = np.argsort(first)
    ids = np.unique(flat)[order]
    ids = ids[ids != 0]
    mapping = np.zeros(flat.max() + 1, dtype=np.int32)
    mapping[ids] = np.arange(1, len(ids) + 1)
    return mapping[labels]


def check(masks):
    labels, num = xmodal.ops.connected_components(masks)
    assert labels.dtype == np.int32 and labels.shape == masks.shape
    for i in range(masks.shape[0]):
        want, count = ndimage.label(masks[i] != 0, structure=EIGHT)
        assert num[i] == count
        np.testing.assert_array_equal(labels[i], raster_relabel(want))


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.5, 0.7, 1.0])
def test_random_masks(rng, density):
    check(rng.random((4, 37, 53)) < density)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 40), (2, 40, 1), (1, 2, 2), (3, 5, 7)])
def test_edge_shapes(rng, shape):
    for density in (0.3, 0.6, 1.0):
        check(rng.random(shape) < density)


def test_diagonal_and_anti_diagonal_touching():
    m = np.zeros((1, 8, 8), dtype=bool)
    m[0, 1, 1] = m[0, 2, 2] = True  # diagonal
    m[0, 1, 6] = m[0, 2, 5] = True  # anti-diagonal
    m[0, 5, 1] = m[0, 6, 3] = True  # two apart: separate
    _labels, num = xmodal.ops.connected_components(m)
    assert num[0] == 4
    check(m)


def test_spirals_and_combs_need_deep_merges():
    # A comb: vertical teeth joined only at the bottom row, so every tooth is first seen as a
    # separate set and merged late; a serpentine: one long path.
    comb = np.zeros((1, 60, 61), dtype=bool)
    comb[0, :, ::2] = True
    comb[0, -1, :] = True
    check(comb)
    snake = np.zeros((1, 41, 41), dtype=bool)
    snake[0, ::4, :] = True
    for k in range(10):  # join line 4k to line 4k + 4 at alternating ends
        snake[0, 4 * k + 1 : 4 * k + 4, -1 if k % 2 == 0 else 0] = True
    check(snake)
    _labels, num = xmodal.ops.connected_components(snake)
    assert num[0] == 1


def test_big_random_mask_and_reference(rng):
    m = rng.random((2, 400, 300)) < 0.45  # near the percolation threshold: large, ragged sets
    check(m)
    small = rng.random((30, 30)) < 0.4
    labels, num = xmodal.ops.connected_components(small)
    ref_labels, ref_num = reference.connected_components(small)
    assert num == ref_num
    np.testing.assert_array_equal(labels, ref_labels)


def test_kinds_and_dtypes(rng):
    torch = pytest.importorskip("torch")
    m = rng.random((3, 20, 20)) < 0.4
    want, want_num = xmodal.ops.connected_components(m)
    for variant in (m.astype(np.uint8) * 7, m.astype(np.float32), m.astype(np.int64)):
        labels, num = xmodal.ops.connected_components(variant)
        np.testing.assert_array_equal(labels, want)
    labels, num = xmodal.ops.connected_components(torch.from_numpy(m))
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int32
    np.testing.assert_array_equal(labels.numpy(), want)
    np.testing.assert_array_equal(num.numpy(), want_num)
    labels2d, count = xmodal.ops.connected_components(m[1])
    assert isinstance(count, int) and count == want_num[1]
    np.testing.assert_array_equal(labels2d, want[1])
    l2, c2 = xmodal.ops.connected_components(torch.from_numpy(m[1]))
    assert isinstance(l2, torch.Tensor) and c2 == want_num[1]


def test_bad_input():
    with pytest.raises(ValueError, match="dimensions"):
        xmodal.ops.connected_components(np.zeros(5))
    with pytest.raises(ValueError, match="dimensions"):
        xmodal.ops.connected_components(np.zeros((1, 2, 3, 4)))
    with pytest.raises(TypeError, match="masks"):
        xmodal.ops.connected_components(np.array([["a"]]))
    with pytest.raises(TypeError, match="list"):
        xmodal.ops.connected_components([np.zeros((3, 3))])


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    m = rng.random((5, 123, 77)) < 0.45
    labels, num = xmodal.ops.connected_components(torch.from_numpy(m).cuda())
    want, want_num = xmodal.ops.connected_components(m)
    np.testing.assert_array_equal(labels.cpu().numpy(), want)
    np.testing.assert_array_equal(num.cpu().numpy(), want_num)
