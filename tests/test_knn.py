import numpy as np
import pytest

import xmodal
from xmodal import reference

from ._knn_check import assert_knn_matches

SHAPES = [  # (Q, N, D, k)
    (0, 10, 5, 3),
    (5, 1, 7, 1),
    (9, 40, 3, 40),  # k = N
    (33, 500, 3, 1),
    (17, 300, 3, 128),
    (20, 257, 767, 9),
    (6, 129, 1152, 1),
    (130, 2100, 16, 5),  # several query blocks and bank tiles
    (3, 5000, 2, 7),  # few queries, bank split across threads
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "Q{}-N{}-D{}-k{}".format(*s))
def test_equals_float64_reference(rng, shape):
    q_count, n, d, k = shape
    queries = rng.standard_normal((q_count, d)).astype(np.float32)
    bank = rng.standard_normal((n, d)).astype(np.float32)
    dist, idx = xmodal.knn(queries, bank, k)
    ref_dist, ref_idx = reference.knn(queries, bank, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert dist.shape == idx.shape == (q_count, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_exact_ties_go_to_lower_index(rng):
    # Integer grid points: many exactly equal distances, and duplicated bank rows.
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6), np.arange(3), indexing="ij"), -1).reshape(-1, 3)
    bank = np.concatenate([grid, grid[::-1], grid[:10]]).astype(np.float32)
    queries = rng.integers(0, 6, size=(40, 3)).astype(np.float32) + 0.5 * (rng.random((40, 3)) < 0.5)
    for k in (1, 6, 27, 60):
        dist, idx = xmodal.knn(queries, bank, k)
        ref_dist, ref_idx = reference.knn(queries, bank, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)
        # within equal distances, indices ascend
        same = dist[:, 1:] == dist[:, :-1]
        assert np.all(idx[:, 1:][same] > idx[:, :-1][same])


def test_high_dim_duplicates_and_near_duplicates(rng):
    # The sgemm screening must not lose exact re-ranking when many rows are (near) equal.
    base = rng.standard_normal((50, 1152)).astype(np.float32) * 30
    bank = np.concatenate([base, base, base + 1e-3, base[::-1]]).astype(np.float32)
    queries = base[:20] + rng.standard_normal((20, 1152)).astype(np.float32) * 1e-4
    dist, idx = xmodal.knn(queries, bank, 5)
    ref_dist, ref_idx = reference.knn(queries, bank, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_distances_are_accurate_for_near_neighbours(rng):
    # |q|^2 - 2qb + |b|^2 in float32 would lose all digits here; the result must not.
    bank = (rng.standard_normal((1000, 768)) * 100).astype(np.float32)
    queries = bank[:50] + np.float32(1e-3)
    dist, idx = xmodal.knn(queries, bank, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(50))
    exact = np.sqrt(((queries.astype(np.float64) - bank[:50].astype(np.float64)) ** 2).sum(1))
    np.testing.assert_allclose(dist[:, 0], exact, rtol=1e-6)
    assert np.all(dist[:, 0] > 0.02)  # the offsets survive: about sqrt(768) * 1e-3


def test_agrees_with_sklearn_brute(rng):
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors")
    queries = rng.standard_normal((60, 96)).astype(np.float32)
    bank = rng.standard_normal((700, 96)).astype(np.float32)
    nn = sklearn_neighbors.NearestNeighbors(n_neighbors=9, algorithm="brute").fit(bank)
    ref_dist, ref_idx = nn.kneighbors(queries)
    dist, idx = xmodal.knn(queries, bank, 9)
    assert_knn_matches(dist, idx, ref_dist, ref_idx)


def test_agrees_with_faiss(rng):
    faiss = pytest.importorskip("faiss")
    queries = rng.standard_normal((100, 768)).astype(np.float32)
    bank = rng.standard_normal((3000, 768)).astype(np.float32)
    index = faiss.IndexFlatL2(768)
    index.add(bank)
    sq, ref_idx = index.search(queries, 9)
    dist, idx = xmodal.knn(queries, bank, 9)
    assert_knn_matches(dist, idx, np.sqrt(np.maximum(sq, 0)), ref_idx, rtol=1e-4, atol=1e-4)


def test_float16_bank_is_exact_against_rounded_bank(rng):
    queries = rng.standard_normal((30, 64)).astype(np.float32)
    bank16 = rng.standard_normal((400, 64)).astype(np.float16)
    dist, idx = xmodal.knn(queries, bank16, 4)
    ref_dist, ref_idx = reference.knn(queries, bank16.astype(np.float32), 4)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    low_d = xmodal.knn(queries[:, :3], bank16[:, :3], 3)
    ref = reference.knn(queries[:, :3], bank16[:, :3].astype(np.float32), 3)
    np.testing.assert_array_equal(low_d.idx, ref[1])


def test_non_contiguous_and_float64_inputs(rng):
    big = rng.standard_normal((50, 40))
    queries = big[::2, ::2]  # float64, strided
    bank = np.asfortranarray(rng.standard_normal((80, 20)))
    dist, idx = xmodal.knn(queries, bank, 3)
    ref_dist, ref_idx = reference.knn(queries.astype(np.float32), bank.astype(np.float32), 3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    queries = torch.from_numpy(rng.standard_normal((12, 10)).astype(np.float32))
    bank = torch.from_numpy(rng.standard_normal((90, 10)).astype(np.float32))
    dist, idx = xmodal.knn(queries.T.contiguous().T, bank, 4)  # non-contiguous view
    assert isinstance(dist, torch.Tensor) and dist.dtype == torch.float32
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    ref_dist, ref_idx = reference.knn(queries.numpy(), bank.numpy(), 4)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(dist.numpy(), ref_dist)


@pytest.mark.parametrize(
    ("queries", "bank", "k", "error", "match"),
    [
        (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), 5, ValueError, r"k must be in \[1, N=4\]"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), 0, ValueError, "k must be in"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), 1.5, TypeError, "k must be an int"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32), 1, ValueError, "same number of columns"),
        (np.zeros((3,), np.float32), np.zeros((4, 3), np.float32), 1, ValueError, "queries must have 2 dim"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 3, 1), np.float32), 1, ValueError, "bank must have 2 dim"),
        (np.zeros((2, 3), np.int64), np.zeros((4, 3), np.float32), 1, TypeError, "queries must be a floating"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 3), bool), 1, TypeError, "bank must be a floating"),
        (np.full((2, 3), np.nan, np.float32), np.zeros((4, 3), np.float32), 1, ValueError, "queries contains NaN"),
        (np.zeros((2, 3), np.float32), np.full((4, 3), np.inf, np.float32), 1, ValueError, "bank contains NaN"),
        (np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32), 1, ValueError, r"k must be in \[1, N=0\]"),
        (np.zeros((2, 0), np.float32), np.zeros((4, 0), np.float32), 1, ValueError, "at least one column"),
    ],
)
def test_bad_input(queries, bank, k, error, match):
    with pytest.raises(error, match=match):
        xmodal.knn(queries, bank, k)


def test_mixed_frameworks_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
        xmodal.knn(np.zeros((2, 3), np.float32), torch.zeros(4, 3), 1)


def test_thread_count_does_not_change_results(rng):
    queries = rng.standard_normal((70, 33)).astype(np.float32)
    bank = rng.standard_normal((3000, 33)).astype(np.float32)
    before = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        one = xmodal.knn(queries, bank, 6)
        xmodal.set_num_threads(3)
        three = xmodal.knn(queries, bank, 6)
    finally:
        xmodal.set_num_threads(before)
    np.testing.assert_array_equal(one.idx, three.idx)
    np.testing.assert_array_equal(one.dist, three.dist)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    for q_count, n, d, k in [(300, 5000, 3, 128), (200, 9000, 768, 9), (7, 100, 1152, 1)]:
        queries = rng.standard_normal((q_count, d)).astype(np.float32)
        bank = rng.standard_normal((n, d)).astype(np.float32)
        cpu = xmodal.knn(queries, bank, k)
        gpu = xmodal.knn(torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda(), k)
        np.testing.assert_array_equal(gpu.idx.cpu().numpy(), cpu.idx)
        np.testing.assert_array_equal(gpu.dist.cpu().numpy(), cpu.dist)
        half = xmodal.knn(torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda().half(), k)
        cpu_half = xmodal.knn(queries, bank.astype(np.float16), k)
        np.testing.assert_array_equal(half.idx.cpu().numpy(), cpu_half.idx)


# --- huge and tiny finite inputs (issue 10 item 5) -------------------------------------------
# The float32 screening overflows above norms of ~1.8e19 and loses precision to underflow on
# tiny values; the contract (exact for any finite input) must still hold.


def _assert_equals_reference(queries, bank, k):
    dist, idx = xmodal.knn(queries, bank, k)
    with np.errstate(over="ignore"):  # distances above FLT_MAX round to inf, in the reference too
        ref_dist, ref_idx = reference.knn(queries, bank.astype(np.float32), k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


@pytest.mark.parametrize("k", [1, 2])
def test_norms_beyond_float32_range_reproducer(k):
    queries = np.array([[2e19, 0, 0, 0, 0]], np.float32)
    bank = np.array([[0] * 5, [1.9e19, 0, 0, 0, 0]], np.float32)
    _dist, idx = xmodal.knn(queries, bank, k)
    assert idx[0, 0] == 1  # distance 1e18, not the origin at 2e19
    _assert_equals_reference(queries, bank, k)


@pytest.mark.parametrize("scale", [6e17, 1e18, 1e30, 1e36])
def test_d768_bank_at_huge_scale(rng, scale):
    bank = (rng.standard_normal((300, 768)) * scale).astype(np.float32)
    queries = np.concatenate([bank[:10] * np.float32(1.001), (rng.standard_normal((10, 768)) * scale)]).astype(
        np.float32)
    _assert_equals_reference(queries, bank, 3)


@pytest.mark.parametrize("dim", [3, 4, 5, 64, 768])
def test_mixed_tiny_and_huge_rows(rng, dim):
    # Row scales spread log-uniformly over 70 decades within one bank and one query set, with
    # near-duplicates at every scale.
    scales = 10.0 ** rng.uniform(-35, 35, size=(400, 1))
    bank = (rng.standard_normal((400, dim)) * scales).astype(np.float32)
    near = bank[::20] * np.float32(1 + 1e-3)
    queries = np.concatenate([near, rng.standard_normal((20, dim)) * 10.0 ** rng.uniform(-35, 35, (20, 1))])
    _assert_equals_reference(queries.astype(np.float32), bank, 4)


@pytest.mark.parametrize("dim", [3, 4, 6, 130])
def test_values_near_float32_max(rng, dim):
    # Differences overflow float32 and most distances exceed FLT_MAX: they round to inf and
    # tie, so the lowest bank indices win, as in the reference.
    bank = (rng.choice([-1.0, 1.0], size=(60, dim)) * rng.uniform(1e38, 3.4e38, size=(60, dim))).astype(np.float32)
    bank[7] = 0
    queries = np.concatenate([bank[:5], -bank[5:10], np.zeros((1, dim))]).astype(np.float32)
    _assert_equals_reference(queries, bank, 5)


@pytest.mark.parametrize("dim", [4, 5, 300])
def test_subnormal_and_tiny_values(rng, dim):
    bank = (rng.standard_normal((200, dim)) * 1e-41).astype(np.float32)  # float32 subnormals
    bank[:50] = (rng.standard_normal((50, dim)) * 1e-25).astype(np.float32)
    queries = np.concatenate([bank[::10], (rng.standard_normal((5, dim)) * 1e-41)]).astype(np.float32)
    _assert_equals_reference(queries, bank, 6)


def test_float16_bank_with_huge_queries(rng):
    bank = (rng.standard_normal((300, 32)) * 1000).astype(np.float16)
    queries = (rng.standard_normal((8, 32)) * 1e25).astype(np.float32)
    queries[:4] = bank[:4].astype(np.float32)
    _assert_equals_reference(queries, bank, 3)
    low_d = (rng.standard_normal((8, 4)) * 1e25).astype(np.float32)
    _assert_equals_reference(low_d, bank[:, :4], 3)


@pytest.mark.cuda
def test_cuda_huge_and_tiny_inputs_exact_or_refused(rng):
    # The GPU screens at a power-of-two scale chosen on the device; where its candidate margin
    # cannot prove the answer (distances that round to float32 subnormals or inf) it refuses.
    # It must never return a wrong answer.
    torch = pytest.importorskip("torch")
    scales = 10.0 ** rng.uniform(-35, 35, size=(600, 1))
    cases = [
        (np.array([[2e19, 0, 0, 0, 0]]), np.array([[0] * 5, [1.9e19, 0, 0, 0, 0]]), 1),
        (rng.standard_normal((30, 768)) * 1e18, rng.standard_normal((500, 768)) * 1e18, 3),
        (rng.standard_normal((30, 64)) * 1e-30, rng.standard_normal((500, 64)) * 1e-30, 3),
        (rng.standard_normal((30, 64)) * scales[:30], rng.standard_normal((600, 64)) * scales, 4),
    ]
    for queries, bank, k in cases:
        queries, bank = queries.astype(np.float32), bank.astype(np.float32)
        cpu = xmodal.knn(queries, bank, k)
        try:
            gpu = xmodal.knn(torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda(), k)
        except RuntimeError as exc:
            if "cannot be guaranteed exact" not in str(exc):
                raise
            continue
        np.testing.assert_array_equal(gpu.idx.cpu().numpy(), cpu.idx)
        np.testing.assert_array_equal(gpu.dist.cpu().numpy(), cpu.dist)
