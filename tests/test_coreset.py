import numpy as np
import pytest

import xmodal
from xmodal import reference
from xmodal._backend import C
from xmodal.ops import jl_dimension, projection_matrix
from xmodal.ops.coreset import SparseRows, project_sparse

from ._coreset_check import assert_farthest_first


@pytest.mark.parametrize(("n_points", "dim", "n", "start"), [(1, 4, 1, 0), (50, 3, 50, 7), (3000, 16, 300, 11),
                                                               (5000, 301, 120, 0), (777, 1, 40, 776)])
def test_equals_plain_float64_loop(rng, n_points, dim, n, start):
    x = rng.standard_normal((n_points, dim)).astype(np.float32)
    idx = xmodal.greedy_coreset(x, n, start)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    assert idx[0] == start
    assert len(set(idx.tolist())) == n
    np.testing.assert_array_equal(idx, reference.greedy_coreset(x, n, start))


def test_exact_on_clustered_features_where_pruning_skips_most_rows(rng):
    # Tight clusters in a low-dimensional subspace (like CNN patch features): the kernel's
    # triangle-inequality pruning skips most rows late in the selection; the picks must still be
    # exactly the plain loop's, including near-ties inside clusters.
    centers = rng.standard_normal((40, 6)) * 10
    latent = centers[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 6)) * 0.3
    x = (latent @ rng.standard_normal((6, 64)) + 0.01 * rng.standard_normal((6000, 64))).astype(np.float32)
    x[100:110] = x[5]  # duplicates of one point
    for start in (0, 5, 5999):
        np.testing.assert_array_equal(xmodal.greedy_coreset(x, 700, start), reference.greedy_coreset(x, 700, start))


def test_ties_and_duplicates_lowest_index_and_distinct():
    # Integer grid with every point twice: exact ties everywhere; more picks than distinct points.
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    x = np.concatenate([grid, grid]).astype(np.float32)
    idx = xmodal.greedy_coreset(x, len(x), 5)
    np.testing.assert_array_equal(idx, reference.greedy_coreset(x, len(x), 5))
    assert sorted(idx.tolist()) == list(range(len(x)))


def test_selection_is_farthest_first(rng):
    # Property check independent of the reference: each pick maximises the distance to the set.
    x = rng.standard_normal((400, 5)).astype(np.float32)
    idx = xmodal.greedy_coreset(x, 30, 3)
    x64 = x.astype(np.float64)
    for step in range(1, 30):
        chosen = x64[idx[:step]]
        d = ((x64[:, None, :] - chosen[None]) ** 2).sum(-1).min(1)
        assert d[idx[step]] == d.max()


def test_thread_count_does_not_change_selection(rng):
    x = rng.standard_normal((20000, 8)).astype(np.float32)
    before = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        one = xmodal.greedy_coreset(x, 200, 0)
        xmodal.set_num_threads(2)
        two = xmodal.greedy_coreset(x, 200, 0)
    finally:
        xmodal.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((300, 6)).astype(np.float32))
    idx = xmodal.greedy_coreset(x, 20, 2)
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    np.testing.assert_array_equal(idx.numpy(), reference.greedy_coreset(x.numpy(), 20, 2))


@pytest.mark.parametrize(
    ("x", "n", "start", "error", "match"),
    [
        (np.zeros((5, 2), np.float32), 6, 0, ValueError, r"n must be in \[1, N=5\]"),
        (np.zeros((5, 2), np.float32), 0, 0, ValueError, "n must be in"),
        (np.zeros((5, 2), np.float32), 2, 5, ValueError, r"start must be in \[0, N-1=4\]"),
        (np.zeros((5, 2), np.float32), 2, -1, ValueError, "start must be in"),
        (np.zeros((5,), np.float32), 2, 0, ValueError, "x must have 2 dimensions"),
        (np.zeros((5, 2), np.int32), 2, 0, TypeError, "x must be a floating"),
        (np.full((5, 2), np.nan, np.float32), 2, 0, ValueError, "x contains NaN"),
        (np.zeros((0, 2), np.float32), 1, 0, ValueError, "non-empty"),
    ],
)
def test_greedy_bad_input(x, n, start, error, match):
    with pytest.raises(error, match=match):
        xmodal.greedy_coreset(x, n, start)


def test_jl_dimension_matches_sklearn():
    random_projection = pytest.importorskip("sklearn.random_projection")
    for n in (20_000, 50_000, 156_800, 200_000, 1_024_000):
        assert jl_dimension(n) == int(random_projection.johnson_lindenstrauss_min_dim(n, eps=0.9))
    assert jl_dimension(200_000) == 301  # the figure anomalib.md quotes


def test_sparse_projection_statistics():
    rng = np.random.default_rng(0)
    m = projection_matrix(50_000, 1152, "sparse", 128, rng)
    out_dim = jl_dimension(50_000)
    assert m.shape == (out_dim, 1152)
    density = 1 / np.sqrt(1152)
    nonzero = m != 0
    assert abs(nonzero.mean() - density) < 0.1 * density
    values = np.unique(np.abs(m[nonzero]))
    np.testing.assert_allclose(values, np.sqrt(1 / density) / np.sqrt(out_dim), rtol=1e-6)
    # Johnson-Lindenstrauss: norms preserved in expectation
    x = rng.standard_normal((200, 1152))
    ratio = np.linalg.norm(x @ m.T, axis=1) / np.linalg.norm(x, axis=1)
    assert abs(ratio.mean() - 1) < 0.05


def _sequential_projection(x, matrix):
    """The contract of project_sparse spelled out: per output, float64 products of the nonzeros
    added in ascending column order, rounded once to float32."""
    out = np.zeros((x.shape[0], matrix.shape[0]), dtype=np.float64)
    for j, k in zip(*np.nonzero(matrix), strict=True):  # row-major: columns ascend within a row
        out[:, j] += x[:, k].astype(np.float64) * np.float64(matrix[j, k])
    return out.astype(np.float32)


def test_sparse_product_is_the_ordered_float64_sum_for_any_batching(rng):
    x = (rng.standard_normal((203, 300)) * 10.0 ** rng.integers(-3, 4, (203, 1))).astype(np.float32)
    matrix = projection_matrix(5000, 300, "sparse", 128, np.random.default_rng(5))
    matrix[3] = 0  # an output without nonzeros
    sparse = SparseRows(matrix)
    want = _sequential_projection(x, matrix)
    got = project_sparse(x, sparse)
    assert got.dtype == np.float32 and got.shape == (203, matrix.shape[0])
    assert np.array_equal(got, want) and not np.any(got[:, 3])
    # the bits do not depend on how the rows are batched (blocks of 8 inside, short tails)
    batched = np.concatenate([project_sparse(x[a:b], sparse) for a, b in ((0, 1), (1, 12), (12, 200), (200, 203))])
    assert np.array_equal(batched, got)
    # and they are the float64 product, rounded (a dense float32 GEMM is not: it rounds as it sums)
    exact = x.astype(np.float64) @ matrix.T.astype(np.float64)
    np.testing.assert_allclose(got, exact, rtol=2**-23, atol=1e-30 + 1e-12 * np.abs(exact).max())


def test_sparse_product_is_parallel_and_exact_on_many_rows(rng):
    x = rng.standard_normal((5000, 512)).astype(np.float32)  # 625 blocks of 8 rows: worth 2 threads
    matrix = projection_matrix(5000, 512, "sparse", 128, np.random.default_rng(2)) * 3  # any values
    sparse = SparseRows(matrix)
    before = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        one = project_sparse(x, sparse)
        xmodal.set_num_threads(2)
        two = project_sparse(x, sparse)
    finally:
        xmodal.set_num_threads(before)
    assert np.array_equal(one, _sequential_projection(x, matrix)) and np.array_equal(two, one)


def test_sparse_product_rejects_a_malformed_matrix():
    x = np.ones((4, 5), np.float32)
    y = np.empty((4, 2), np.float32)
    ok = (np.array([0, 1, 3]), np.array([4, 0, 2], np.int32), np.ones(3, np.float32))
    C.sparse_project_cpu(x, ok[0], ok[1], ok[2], y)
    assert np.array_equal(y, [[1, 2]] * 4)
    for indptr, indices, match in [([0, 4, 3], [0, 1, 2], "indptr must be non-decreasing"),
                                   ([0, 1, 3], [0, 3, 1], "indices of row 1 must ascend"),
                                   ([0, 1, 3], [0, 1, 5], r"within \[0, D=5\)"),
                                   ([0, 1, 2], [0, 1, 2], r"indptr\[-1\] must be the number of nonzeros 3")]:
        with pytest.raises(ValueError, match=match):
            C.sparse_project_cpu(x, np.array(indptr), np.array(indices, np.int32), ok[2], y)


def test_sum_squares_is_float64_in_a_fixed_order(rng):
    for count in (0, 1, 7, 8, 9, 1001):
        x = (rng.standard_normal(count) * 1e3).astype(np.float32)
        total, squares = C.sum_squares_cpu(x)
        wide = x.astype(np.float64)
        assert total == pytest.approx(wide.sum(), rel=1e-13, abs=1e-9)
        assert squares == pytest.approx(np.square(wide).sum(), rel=1e-13, abs=0)
        lanes = np.zeros((2, 8))  # lane l adds elements l, l + 8, ... in order; fixed tree at the end
        for i, v in enumerate(wide):
            lanes[:, i % 8] += (v, v * v)
        tree = ((lanes[:, 0] + lanes[:, 4]) + (lanes[:, 2] + lanes[:, 6])) + (
            (lanes[:, 1] + lanes[:, 5]) + (lanes[:, 3] + lanes[:, 7]))
        assert (total, squares) == (tree[0], tree[1])


def test_linear_projection_is_pytorch_linear_init():
    m = projection_matrix(1000, 1536, "linear", 128, np.random.default_rng(1))
    assert m.shape == (128, 1536)
    bound = 1 / np.sqrt(1536)
    assert np.abs(m).max() <= bound and np.abs(m).max() > 0.99 * bound
    assert projection_matrix(1000, 64, "linear", 128, np.random.default_rng(1)) is None


def test_coreset_ratio_projection_and_determinism(rng):
    x = rng.standard_normal((2000, 400)).astype(np.float32)
    a = xmodal.coreset(x, ratio=0.1, projection="sparse", seed=3)
    b = xmodal.coreset(x, ratio=0.1, projection="sparse", seed=3)
    c = xmodal.coreset(x, ratio=0.1, projection="sparse", seed=4)
    assert len(a) == 200 and np.array_equal(a, b) and not np.array_equal(a, c)
    # equals greedy selection on the documented projection
    rng_seeded = np.random.default_rng(3)
    start = int(rng_seeded.integers(2000))
    matrix = projection_matrix(2000, 400, "sparse", 128, rng_seeded)
    projected = (x.astype(np.float64) @ matrix.T.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(a, reference.greedy_coreset(projected, 200, start))
    d = xmodal.coreset(x, n=50, projection=None, start=0)
    np.testing.assert_array_equal(d, reference.greedy_coreset(x, 50, 0))
    e = xmodal.coreset(x, n=50, projection="linear", proj_dim=64, start=9, seed=1)
    assert e[0] == 9 and len(set(e.tolist())) == 50


def test_coreset_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((500, 300)).astype(np.float32)
    idx_t = xmodal.coreset(torch.from_numpy(x), ratio=0.05, seed=2)
    idx_n = xmodal.coreset(x, ratio=0.05, seed=2)
    assert isinstance(idx_t, torch.Tensor)
    # the sparse product is the same kernel for torch and numpy: same projection, same selection
    np.testing.assert_array_equal(idx_t.numpy(), idx_n)
    idx_t = xmodal.coreset(torch.from_numpy(x), n=20, projection="linear", proj_dim=64, seed=2)
    # float32 GEMM order may differ between torch and numpy; the selection must not
    np.testing.assert_array_equal(idx_t.numpy(), xmodal.coreset(x, n=20, projection="linear", proj_dim=64, seed=2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of ratio and n"),
        ({"ratio": 0.1, "n": 3}, "exactly one of ratio and n"),
        ({"ratio": 0.0}, r"ratio must be a number in \(0, 1\]"),
        ({"ratio": 1.5}, "ratio must be"),
        ({"n": 3, "projection": "pca"}, "projection must be"),
        ({"n": 3, "start": "first"}, "start must be 'random' or an int"),
    ],
)
def test_coreset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        xmodal.coreset(np.ones((10, 4), np.float32), **kwargs)


def _farthest_first_cases(rng):
    """(name, x) inputs for the farthest-first checks: ordinary features and the ranges where
    float32 sums overflow (norms above ~1e19) or underflow (values near 1e-20 and below)."""
    base = rng.standard_normal((3000, 24))
    mixed = base * 10.0 ** rng.uniform(-30, 25, size=(3000, 1))
    return [
        ("normal", base.astype(np.float32)),
        ("huge", (base * 1e25).astype(np.float32)),
        ("tiny", (base * 1e-30).astype(np.float32)),
        ("mixed", mixed.astype(np.float32)),
    ]


def test_farthest_first_check_accepts_cpu_and_catches_wrong_picks(rng):
    # The check the CUDA test relies on, proven here on the exact CPU kernel, including the
    # huge and tiny ranges; and it must fail on a selection that is not farthest-first.
    for name, x in _farthest_first_cases(rng):
        idx = xmodal.greedy_coreset(x, 60, 7)
        assert_farthest_first(x, idx, 7, rtol=1e-12)
        wrong = idx.copy()
        wrong[5] = next(i for i in range(len(x)) if i not in set(idx.tolist()))
        with pytest.raises(AssertionError, match="step 5"):
            assert_farthest_first(x, wrong, 7, rtol=1e-6)
        with pytest.raises(AssertionError, match="start"):
            assert_farthest_first(x, idx, 8, rtol=1e-6)
        del name


@pytest.mark.cuda
def test_cuda_picks_are_farthest_within_float32_rounding(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((20000, 128)).astype(np.float32)
    gpu = xmodal.greedy_coreset(torch.from_numpy(x).cuda(), 500, 0).cpu().numpy()
    # float32 accumulation on the GPU: each pick within float32 rounding of the farthest.
    assert_farthest_first(x, gpu, 0, rtol=2 * 128 * 2.0**-24)
    for _name, xs in _farthest_first_cases(rng):
        gpu = xmodal.greedy_coreset(torch.from_numpy(xs).cuda(), 60, 7).cpu().numpy()
        assert_farthest_first(xs, gpu, 7, rtol=2 * xs.shape[1] * 2.0**-24)
