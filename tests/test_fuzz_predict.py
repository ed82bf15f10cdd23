"""Issue 10 part 4: Detector.predict (the toy detector of tests/_toy.py: the base class's input
handling, calibration and verdict, no backbone) against the fuzz harness, plus regressions."""

from __future__ import annotations

import numpy as np
import pytest

from tests import _fuzz, _toy

torch = pytest.importorskip("torch")


def test_every_predict_case_is_a_reference_result_or_a_named_error():
    rows = _fuzz.assert_clean("predict", hypothesis=15, min_cases=50)
    assert {r["mutation"] for r in rows} >= {"NaN", "+inf", "torch meta (alone)", "all points missing (all zero)"}


@pytest.fixture(scope="module")
def detector():
    return _toy.Toy(calibration=0.25).fit([_toy.sample(i) for i in range(8)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_rejects_non_finite_points(detector, bad):
    s = _toy.sample(1)
    xyz = s.xyz.copy()
    xyz[3, 4, 2] = bad
    with pytest.raises(ValueError, match=r"^Sample.xyz contains NaN or infinite values; missing points must be"):
        detector.predict(rgb=s.rgb, xyz=xyz)


def test_predict_rejects_meta_tensors(detector):
    s = _toy.sample(1)
    with pytest.raises(TypeError, match=r"^xyz must be a tensor on the CPU or a CUDA device"):
        detector.predict(rgb=s.rgb, xyz=torch.zeros(32, 32, 3, device="meta"))
