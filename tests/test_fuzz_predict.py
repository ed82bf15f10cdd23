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


def test_cfm_refuses_a_cloud_without_a_valid_point():
    """Found by the fuzz: an all-zero cloud made CFM score exactly 0 and say "good" (it scores
    foreground pixels only). Now a one-line ValueError naming xyz."""
    from xmodal.data import synthetic
    from xmodal.methods import CFM

    train = [synthetic.make_sample("puck", image_size=64, seed=i, split="train")[0] for i in range(3)]
    det = CFM(backbones="offline", epochs=1, progress=False, calibration=0).fit(train)
    good = train[0]
    assert det.predict(good).score > 0
    with pytest.raises(ValueError, match=r"^xyz of the sample has no valid point .*cfm scores the 3D foreground"):
        det.predict(rgb=good.rgb, xyz=np.zeros_like(good.xyz))


def test_methods_without_3d_accept_an_empty_cloud_and_3d_ones_do_not(detector):
    s = _toy.sample(2)
    empty = s.replace(xyz=np.zeros_like(s.xyz))
    detector._check_points([empty])  # the toy (like PatchCore on RGB) does not read the cloud
    detector.config["modality"] = "rgb+xyz"
    try:
        with pytest.raises(ValueError, match="has no valid point"):
            detector._check_points([empty])
        detector._check_points([s])
    finally:
        del detector.config["modality"]
