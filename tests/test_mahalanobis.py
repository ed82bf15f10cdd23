import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

import xmodal
from xmodal import reference

UNIT_ROUNDOFF = 2.0**-24  # float32


def random_covariances(rng, positions, dim, condition=None):
    """SPD matrices; with ``condition``, eigenvalues log-spaced over [1, condition] in a random basis."""
    if condition is None:
        a = rng.standard_normal((positions, dim, 2 * dim))
        return a @ a.transpose(0, 2, 1) / (2 * dim) + 0.05 * np.eye(dim)
    covs = []
    for _ in range(positions):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        eigenvalues = np.logspace(0, np.log10(condition), dim)
        covs.append((q * eigenvalues) @ q.T)
    return np.stack(covs)


def packed(lower):
    rows, cols = np.tril_indices(lower.shape[-1])
    return np.ascontiguousarray(lower[:, rows, cols], dtype=np.float32)


def problem(rng, batch, positions, dim, condition=None, scale=1.0):
    cov = random_covariances(rng, positions, dim, condition)
    mean = rng.standard_normal((positions, dim)).astype(np.float32)
    x = (mean + scale * rng.standard_normal((batch, positions, dim))).astype(np.float32)
    return x, mean, cov


def relative_error(got, want):
    return float(np.max(np.abs(got / want - 1.0))) if np.size(want) else 0.0


# --- the kernel -------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "positions", "dim"), [(4, 6, 17), (37, 3, 5), (1, 1, 1), (2, 5, 130), (3, 1, 64)])
def test_full_equals_scipy_and_the_float64_solve(rng, batch, positions, dim):
    x, mean, cov = problem(rng, batch, positions, dim)
    factors = xmodal.ops.cholesky_factors(cov, regularization=0.0)
    dist = xmodal.ops.mahalanobis(x, mean, factors)
    assert dist.shape == (batch, positions)
    assert dist.dtype == np.float32
    # scipy on the float64 covariances: differs only by the float32 rounding of the factors.
    inverse = np.linalg.inv(cov)
    want = np.array([[scipy_mahalanobis(x[b, p], mean[p], inverse[p]) for p in range(positions)]
                     for b in range(batch)])
    assert relative_error(dist, want) < 1e-5
    # With the same float32 factors the kernel is the float64 solve rounded once to float32.
    exact = reference.mahalanobis_from_factors(x, mean, factors)
    assert relative_error(dist, exact) <= 2 * UNIT_ROUNDOFF


@pytest.mark.parametrize(("batch", "positions", "dim"), [(4, 6, 17), (3, 50, 130), (1, 1, 1), (2, 33, 64)])
def test_shared_equals_scipy(rng, batch, positions, dim):
    x, mean, cov = problem(rng, batch, positions, dim)
    factors = xmodal.ops.cholesky_factors(cov[0], regularization=0.0)
    assert factors.shape == (1, dim * (dim + 1) // 2)
    dist = xmodal.ops.mahalanobis(x, mean, factors)
    inverse = np.linalg.inv(cov[0])
    want = np.array([[scipy_mahalanobis(x[b, p], mean[p], inverse) for p in range(positions)] for b in range(batch)])
    assert relative_error(dist, want) < 1e-5
    assert relative_error(dist, reference.mahalanobis(x, mean, cov[0])) < 1e-5


def test_ill_conditioned_covariances(rng):
    # Eigenvalues over [1, 1e6] (PaDiM's 0.01 I bounds the condition number of real fits
    # similarly): kappa(L) = 1e3.
    dim, condition = 48, 1e6
    x, mean, cov = problem(rng, 3, 4, dim, condition=condition, scale=30.0)
    factors = xmodal.ops.cholesky_factors(cov, regularization=0.0)
    dist = xmodal.ops.mahalanobis(x, mean, factors)
    # Full: still the float64 solve with the stored factor, rounded once.
    assert relative_error(dist, reference.mahalanobis_from_factors(x, mean, factors)) <= 2 * UNIT_ROUNDOFF
    # Against the unrounded covariance, the only error is the factor's float32 rounding
    # (first order: at most kappa(L) d u; 6e-8 measured).
    assert relative_error(dist, reference.mahalanobis(x, mean, cov)) < 1e-6
    shared = xmodal.ops.cholesky_factors(cov[1], regularization=0.0)
    dist_shared = xmodal.ops.mahalanobis(x, mean, shared)
    # Shared: float32 sgemm updates. Their worst-case bound (d u kappa(L) = 3e-3 here) is far
    # from what happens (5e-8 measured); 1e-6 still catches a wrong block or a lost term.
    assert relative_error(dist_shared, reference.mahalanobis_from_factors(x, mean, shared)) < 1e-6
    assert relative_error(dist_shared, reference.mahalanobis(x, mean, cov[1])) < 1e-6


def test_one_dimensional_is_the_standardised_difference(rng):
    x = rng.standard_normal((5, 7, 1)).astype(np.float32)
    mean = rng.standard_normal((7, 1)).astype(np.float32)
    sigma = rng.uniform(0.5, 2.0, (7, 1)).astype(np.float32)
    dist = xmodal.ops.mahalanobis(x, mean, sigma)  # the 1 x 1 factor is the standard deviation
    want = np.abs(x[..., 0].astype(np.float64) - mean[:, 0]) / sigma[:, 0]
    assert relative_error(dist, want) <= UNIT_ROUNDOFF


def test_empty_batch_and_one_position(rng):
    mean = rng.standard_normal((1, 9)).astype(np.float32)
    factors = xmodal.ops.cholesky_factors(random_covariances(rng, 1, 9))
    assert xmodal.ops.mahalanobis(np.zeros((0, 1, 9), np.float32), mean, factors).shape == (0, 1)
    x = rng.standard_normal((3, 1, 9)).astype(np.float32)
    full = xmodal.ops.mahalanobis(x, mean, factors)
    np.testing.assert_allclose(full, reference.mahalanobis_from_factors(x, mean, factors), rtol=2e-7)


def test_the_point_at_the_mean_has_distance_zero(rng):
    _, mean, cov = problem(rng, 1, 4, 6)
    for factors in (xmodal.ops.cholesky_factors(cov), xmodal.ops.cholesky_factors(cov[0])):
        np.testing.assert_array_equal(xmodal.ops.mahalanobis(mean[None], mean, factors), 0.0)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x, mean, cov = problem(rng, 2, 5, 11)
    factors = xmodal.ops.cholesky_factors(torch.from_numpy(cov))
    assert isinstance(factors, torch.Tensor)
    assert factors.dtype == torch.float32
    dist = xmodal.ops.mahalanobis(torch.from_numpy(x), torch.from_numpy(mean), factors)
    assert isinstance(dist, torch.Tensor)
    assert dist.dtype == torch.float32
    np.testing.assert_array_equal(dist.numpy(), xmodal.ops.mahalanobis(x, mean, factors.numpy()))
    # float64 inputs are converted explicitly (documented), with the same result
    dist64 = xmodal.ops.mahalanobis(torch.from_numpy(x).double(), torch.from_numpy(mean).double(), factors)
    np.testing.assert_array_equal(dist64.numpy(), dist.numpy())


def test_results_do_not_depend_on_the_thread_count(rng):
    x, mean, cov = problem(rng, 20, 40, 70)
    full, shared = xmodal.ops.cholesky_factors(cov), xmodal.ops.cholesky_factors(cov[0])
    threads = xmodal.get_num_threads()
    try:
        xmodal.set_num_threads(1)
        one = [xmodal.ops.mahalanobis(x, mean, f) for f in (full, shared)]
        xmodal.set_num_threads(2)
        two = [xmodal.ops.mahalanobis(x, mean, f) for f in (full, shared)]
    finally:
        xmodal.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("covariance", ["full", "shared"])
def test_statistics_do_not_depend_on_the_thread_count(rng, covariance):
    batches = feature_batches(rng, [7, 5], positions=40, dim=33)
    threads = xmodal.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            xmodal.set_num_threads(count)
            stats = xmodal.ops.GaussianStats(covariance, buffer_bytes=0)
            for batch in batches:
                stats.update(batch)
            results.append((stats.covariance(), stats.cholesky_factors()))
    finally:
        xmodal.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_input_names_the_argument(rng):
    x, mean, cov = problem(rng, 2, 3, 4)
    factors = xmodal.ops.cholesky_factors(cov)
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(B, P, d\)"):
        xmodal.ops.mahalanobis(x[0], mean, factors)
    with pytest.raises(ValueError, match=r"mean must have shape \(P, d\) = \(3, 4\)"):
        xmodal.ops.mahalanobis(x, mean[:2], factors)
    with pytest.raises(ValueError, match=r"factors must have shape \(3, 10\) .* or \(1, 10\)"):
        xmodal.ops.mahalanobis(x, mean, factors[:2])
    with pytest.raises(ValueError, match=r"factors must have shape"):
        xmodal.ops.mahalanobis(x, mean, factors[:, :9])
    empty = np.zeros((3, 0), np.float32)
    with pytest.raises(ValueError, match="d >= 1"):
        xmodal.ops.mahalanobis(np.zeros((2, 3, 0), np.float32), empty, empty)
    with pytest.raises(TypeError, match="x must be a floating-point array; got dtype int64"):
        xmodal.ops.mahalanobis(x.astype(np.int64), mean, factors)
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        xmodal.ops.mahalanobis(bad, mean, factors)
    with pytest.raises(ValueError, match="mean contains NaN"):
        xmodal.ops.mahalanobis(x, np.full_like(mean, np.inf), factors)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="x and mean must both be numpy arrays or both torch tensors"):
        xmodal.ops.mahalanobis(x, torch.from_numpy(mean), factors)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_invalid_factor_diagonal_is_rejected_naming_the_position(rng, shared, value):
    x, mean, cov = problem(rng, 2, 4, 5)
    factors = xmodal.ops.cholesky_factors(cov[:1] if shared else cov)
    row = 3
    factors[0 if shared else 2, row * (row + 1) // 2 + row] = value
    position = 0 if shared else 2
    with pytest.raises(ValueError, match=rf"factors: the Cholesky factor of position {position} has diagonal entry"):
        xmodal.ops.mahalanobis(x, mean, factors)


@pytest.mark.parametrize("shared", [False, True])
def test_nan_inside_a_factor_is_rejected(rng, shared):
    x, mean, cov = problem(rng, 2, 4, 5)
    factors = xmodal.ops.cholesky_factors(cov[:1] if shared else cov)
    factors[0 if shared else 1, 7] = np.nan  # row 3, column 1: off the diagonal
    with pytest.raises(ValueError, match=r"factors: the distance at position .* is not finite"):
        xmodal.ops.mahalanobis(x, mean, factors)


@pytest.mark.cuda
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_matches_cpu(rng, shared):
    torch = pytest.importorskip("torch")
    x, mean, cov = problem(rng, 9, 300, 550 if not shared else 130)
    factors = xmodal.ops.cholesky_factors(cov[:1] if shared else cov)
    cpu = xmodal.ops.mahalanobis(x, mean, factors)
    gpu = xmodal.ops.mahalanobis(torch.from_numpy(x).cuda(), torch.from_numpy(mean).cuda(),
                                 torch.from_numpy(factors).cuda())
    assert gpu.is_cuda
    assert relative_error(gpu.cpu().numpy(), cpu) < 1e-5
    bad = torch.from_numpy(factors).cuda()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="position 0"):
        xmodal.ops.mahalanobis(torch.from_numpy(x).cuda(), torch.from_numpy(mean).cuda(), bad)


# --- Cholesky factors -------------------------------------------------------------------------


def test_cholesky_factors_are_the_packed_regularised_factors(rng):
    cov = random_covariances(rng, 5, 8)
    factors = xmodal.ops.cholesky_factors(cov)  # PaDiM's 0.01 I by default
    want = packed(np.linalg.cholesky(cov + 0.01 * np.eye(8)))
    np.testing.assert_array_equal(factors, want)
    np.testing.assert_array_equal(xmodal.ops.cholesky_factors(cov[2], regularization=0.01), want[2:3])


def test_regularisation_makes_a_few_shot_covariance_usable(rng):
    # Fewer images than features (PaDiM on a small training set): the sample covariance is
    # singular, Sigma + 0.01 I is not.
    features = rng.standard_normal((5, 3, 20))
    _, cov = reference.gaussian_statistics(features)
    with pytest.raises(ValueError, match=r"covariance of position 0 is not positive definite after adding 0\*I"):
        xmodal.ops.cholesky_factors(cov, regularization=0.0)
    factors = xmodal.ops.cholesky_factors(cov)
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    mean = features.mean(axis=0).astype(np.float32)
    want = reference.mahalanobis(x, mean, cov + 0.01 * np.eye(20))
    assert relative_error(xmodal.ops.mahalanobis(x, mean, factors), want) < 1e-4


def test_cholesky_factors_reject_bad_covariances(rng):
    cov = random_covariances(rng, 4, 6)
    indefinite = cov.copy()
    indefinite[3] -= 10 * np.eye(6)
    with pytest.raises(ValueError, match=r"position 3 is not positive definite .*smallest eigenvalue -"):
        xmodal.ops.cholesky_factors(indefinite)
    many = np.concatenate([cov] * 8)  # 32 positions, factored in parallel: the lowest bad one is named
    many[[29, 9, 17]] -= 10 * np.eye(6)
    with pytest.raises(ValueError, match="position 9 is not positive definite"):
        xmodal.ops.cholesky_factors(many)
    asymmetric = cov.copy()
    asymmetric[1, 0, 5] += 1.0
    with pytest.raises(ValueError, match="covariance of position 1 is not symmetric"):
        xmodal.ops.cholesky_factors(asymmetric)
    with pytest.raises(ValueError, match="covariance contains NaN"):
        xmodal.ops.cholesky_factors(np.full((6, 6), np.nan))
    with pytest.raises(ValueError, match=r"covariance must have shape \(P, d, d\) or \(d, d\)"):
        xmodal.ops.cholesky_factors(cov[:, :, :5])
    with pytest.raises(TypeError, match="covariance must be a floating-point array"):
        xmodal.ops.cholesky_factors(np.eye(3, dtype=np.int32))
    with pytest.raises(ValueError, match="regularization must be a finite number in"):
        xmodal.ops.cholesky_factors(cov, regularization=-0.1)


# --- streaming statistics ---------------------------------------------------------------------


def feature_batches(rng, sizes, positions=6, dim=9, offset=1e3):
    # A large common offset: the naive sum-of-squares formula would lose ~6 digits here.
    scale = rng.uniform(0.5, 3.0, dim)
    return [offset + scale * rng.standard_normal((n, positions, dim)) for n in sizes]


@pytest.mark.parametrize("buffer_bytes", [0, 5000, 1 << 30])
def test_streaming_statistics_equal_numpy(rng, buffer_bytes):
    batches = feature_batches(rng, [3, 0, 1, 7, 2, 11])
    stats = xmodal.ops.GaussianStats(buffer_bytes=buffer_bytes)
    for batch in batches:
        stats.update(batch.astype(np.float32) if batch.shape[0] == 7 else batch)
    batches[3] = batches[3].astype(np.float32).astype(np.float64)
    everything = np.concatenate(batches)
    assert stats.count == everything.shape[0]
    _, cov = reference.gaussian_statistics(everything)
    np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-12)
    for p in range(everything.shape[1]):
        want = np.cov(everything[:, p, :], rowvar=False)  # numpy's default: unbiased (ddof=1)
        assert np.max(np.abs(stats.covariance()[p] - want)) <= 1e-10 * np.max(np.abs(want))
    np.testing.assert_allclose(stats.covariance(), cov, rtol=0, atol=1e-10 * np.abs(cov).max())
    np.testing.assert_array_equal(stats.cholesky_factors(0.01), xmodal.ops.cholesky_factors(stats.covariance()))


def test_shared_statistics_pool_the_per_position_covariances(rng):
    batches = feature_batches(rng, [4, 5, 1])
    stats = xmodal.ops.GaussianStats(covariance="shared")
    for batch in batches:
        stats.update(batch)
    everything = np.concatenate(batches)
    _, cov = reference.gaussian_statistics(everything)
    want = cov.mean(axis=0)
    assert stats.covariance().shape == (9, 9)
    assert np.max(np.abs(stats.covariance() - want)) <= 1e-10 * np.max(np.abs(want))
    np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-12)
    assert stats.cholesky_factors().shape == (1, 45)
    assert stats.nbytes == (6 * 9 + 45) * 8  # means + one packed scatter matrix


@pytest.mark.parametrize("covariance", ["full", "shared"])
def test_merge_equals_one_pass(rng, covariance):
    batches = feature_batches(rng, [5, 3, 8])
    one = xmodal.ops.GaussianStats(covariance)
    for batch in batches:
        one.update(batch)
    a, b, empty = (xmodal.ops.GaussianStats(covariance, buffer_bytes=size) for size in (0, 1 << 20, 0))
    a.update(batches[0])
    b.update(batches[1]).update(batches[2])
    a.merge(b).merge(empty)
    empty.merge(a)
    for merged in (a, empty):
        assert merged.count == 16
        np.testing.assert_allclose(merged.mean, one.mean, rtol=1e-12)
        scale = np.abs(one.covariance()).max()
        np.testing.assert_allclose(merged.covariance(), one.covariance(), rtol=0, atol=1e-10 * scale)
    other = "shared" if covariance == "full" else "full"
    with pytest.raises(ValueError, match=f"cannot merge covariance='{other}' statistics into '{covariance}' ones"):
        a.merge(xmodal.ops.GaussianStats(other).update(batches[0]))


@pytest.mark.parametrize("buffer_bytes", [0, 2000])
def test_statistics_memory_does_not_grow_and_inputs_are_untouched(rng, buffer_bytes):
    torch = pytest.importorskip("torch")
    stats = xmodal.ops.GaussianStats(buffer_bytes=buffer_bytes)
    batch = feature_batches(rng, [4], positions=5, dim=7)[0]
    stats.update(batch)
    statistics = 5 * 7 * 8 + 5 * 28 * 8  # means + packed scatter matrices, float64
    keep = batch.copy()
    tensor = torch.from_numpy(batch.copy())
    for _ in range(20):
        stats.update(batch)
        stats.update(tensor)
        # merged once the buffer holds buffer_bytes: at most that plus one batch is pending
        assert statistics <= stats.nbytes < statistics + buffer_bytes + batch.nbytes
    assert stats.count == 4 * 41
    np.testing.assert_array_equal(batch, keep)
    np.testing.assert_array_equal(tensor.numpy(), keep)
    # every image appears 41 times: the mean is unchanged and the covariance scales by (n-1)/(N-1)
    ref_mean, ref_cov = reference.gaussian_statistics(batch)
    np.testing.assert_allclose(stats.mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), ref_cov * 3 * 41 / (4 * 41 - 1), rtol=1e-9)


def test_statistics_bad_input(rng):
    stats = xmodal.ops.GaussianStats()
    with pytest.raises(ValueError, match="at least 2 images; it has seen 0"):
        stats.covariance()
    with pytest.raises(ValueError, match="at least 1 image; it has seen 0"):
        _ = stats.mean
    stats.update(np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="at least 2 images; it has seen 1"):
        stats.cholesky_factors()
    with pytest.raises(ValueError, match=r"x must have P=3, d=4 like the earlier batches; got P=3, d=5"):
        stats.update(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(B, P, d\)"):
        stats.update(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="x must be a floating-point array; got dtype int64"):
        stats.update(np.zeros((2, 3, 4), np.int64))
    bad = np.zeros((2, 3, 4))
    bad[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        stats.update(bad)
    assert stats.count == 1
    with pytest.raises(ValueError, match="covariance must be one of"):
        xmodal.ops.GaussianStats(covariance="diagonal")
    with pytest.raises(ValueError, match=r"buffer_bytes must be in \[0, inf\]; got -1"):
        xmodal.ops.GaussianStats(buffer_bytes=-1)
    with pytest.raises(TypeError, match="other must be a GaussianStats"):
        stats.merge(np.zeros(3))
