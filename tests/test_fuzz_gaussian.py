"""Issue 10 part 4: GaussianStats, cholesky_factors, mahalanobis and the Linear/BatchNorm folding
against the fuzz harness (tests/_fuzz.py), plus regressions for the defects it found."""

from __future__ import annotations

import numpy as np
import pytest

from tests import _fuzz
from xmodal.ops import GaussianStats, cholesky_factors, fold_linear_batchnorm, fold_linears

torch = pytest.importorskip("torch")


def test_every_gaussian_case_is_a_reference_result_or_a_named_error():
    rows = _fuzz.assert_clean("gaussian", hypothesis=20, min_cases=250)
    assert {r["spec"] for r in rows} >= {"GaussianStats.update", "cholesky_factors", "mahalanobis",
                                        "fold_linear_batchnorm", "fold_linears"}


def _linear(out=3, inp=2):
    rng = np.random.default_rng(0)
    return rng.normal(size=(out, inp)).astype(np.float32), rng.normal(size=out).astype(np.float32)


def _bn(out=3, **changes):
    state = {"running_mean": np.zeros(out, np.float32), "running_var": np.ones(out, np.float32),
             "weight": np.ones(out, np.float32), "bias": np.zeros(out, np.float32)}
    return {**state, **changes}


def test_fold_rejects_meta_tensors():
    w = torch.zeros(3, 2, device="meta")
    with pytest.raises(TypeError, match=r"^linear weight must be a tensor on the CPU or a CUDA device"):
        fold_linear_batchnorm((w, None), _bn())
    with pytest.raises(TypeError, match=r"^first weight must be a tensor on the CPU or a CUDA device"):
        fold_linears((w, None), (torch.zeros(4, 3), None))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fold_rejects_non_finite_parameters(bad):
    w, b = _linear()
    w[0, 0] = bad
    with pytest.raises(ValueError, match=r"^linear weight contains NaN or infinite values"):
        fold_linear_batchnorm((w, b), _bn())
    mean = np.zeros(3, np.float32)
    mean[1] = bad
    with pytest.raises(ValueError, match=r"^batchnorm running_mean contains NaN or infinite values"):
        fold_linear_batchnorm(_linear(), _bn(running_mean=mean))
    with pytest.raises(ValueError, match=r"^second weight contains NaN or infinite values"):
        fold_linears(_linear(4, 3), (w, b))


def test_fold_rejects_a_negative_variance():
    var = np.array([1.0, -2.0, 1.0], np.float32)
    with pytest.raises(ValueError, match=r"^batchnorm running_var \+ eps must be > 0"):
        fold_linear_batchnorm(_linear(), _bn(running_var=var))


def test_fold_rejects_integer_biases_instead_of_truncating():
    w, _ = _linear()
    with pytest.raises(TypeError, match=r"^linear bias must be a floating-point array; got dtype int64"):
        fold_linear_batchnorm((w, np.array([1, 2, 3])), _bn())
    with pytest.raises(TypeError, match=r"^batchnorm running_var must be a floating-point array"):
        fold_linear_batchnorm((w, None), _bn(running_var=np.array([1, 2, 3])))


def test_fold_requires_running_statistics():
    with pytest.raises(ValueError, match=r"^batchnorm must have a 'running_mean' entry"):
        fold_linear_batchnorm(_linear(), _bn(running_mean=None))


def test_gaussian_stats_and_cholesky_reject_meta_tensors():
    with pytest.raises(TypeError, match=r"^x must be a tensor on the CPU or a CUDA device"):
        GaussianStats().update(torch.zeros(2, 3, 4, device="meta"))
    with pytest.raises(TypeError, match=r"^covariance must be a tensor on the CPU or a CUDA device"):
        cholesky_factors(torch.zeros(3, 3, device="meta"))
