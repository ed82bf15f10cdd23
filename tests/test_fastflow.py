"""FastFlow: the flow's likelihood against a direct computation, training likelihood rising,
detection of RGB-visible synthetic defects, save/load, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xmodal
from tests import _flow_data
from xmodal.methods import FastFlow, create, method_names
from xmodal.methods.fastflow import _make_net


@pytest.fixture(scope="module")
def fitted():
    det = FastFlow(backbones="offline", input_size=128, epochs=25, batch_size=8, progress=False, seed=0)
    _flow_data.fit_one_thread(det, _flow_data.train(16))
    return det


def test_net_invertible_and_likelihood_equals_direct_computation():
    torch.manual_seed(0)
    net = _make_net([3, 4], [4, 2], steps=4, hidden_ratio=1.0, clamp=2.0, conv3x3_only=False, seed=0).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    feats = [torch.randn(1, 3, 4, 4, dtype=torch.float64), torch.randn(1, 4, 2, 2, dtype=torch.float64)]
    with torch.no_grad():
        outputs = net(feats)
    for level, (f, (z, logdet)) in enumerate(zip(feats, outputs, strict=True)):
        with torch.no_grad():
            normed = net.norms[level](f)
        torch.testing.assert_close(net.flows[level].inverse(z), normed, rtol=1e-9, atol=1e-9)
        jac = torch.autograd.functional.jacobian(lambda v, lv=level: net.flows[lv](v)[0].reshape(-1), normed)
        _, direct_logdet = torch.linalg.slogdet(jac.reshape(normed.numel(), normed.numel()))
        direct = -0.5 * float((z**2).sum()) - 0.5 * z.numel() * math.log(2 * math.pi) + float(direct_logdet)
        ours = float(xmodal.methods._flows.coupling.log_likelihood(z, logdet)[0])
        assert ours == pytest.approx(direct, rel=1e-9)


def test_training_likelihood_rises(fitted):
    loss = fitted.info["train_loss"]
    assert len(loss) == 25
    assert np.mean(loss[-3:]) < np.mean(loss[:3])  # the loss is the negative log-likelihood


def test_detects_rgb_defects(fitted):
    auroc = _flow_data.image_auroc(fitted, _flow_data.with_defects())
    print(f"FastFlow offline I-AUROC on RGB-visible synthetic defects: {auroc:.3f}")
    assert auroc >= 0.8
    result = fitted.predict(_flow_data.with_defects(good=1, per_defect=0)[0])
    assert result.map.shape == (128, 128) and result.map.dtype == np.float32
    assert result.score == pytest.approx(float(result.map.max()))
    assert result.threshold is not None and result.normalized_score is not None


def test_save_load_identical(fitted, tmp_path):
    samples = _flow_data.with_defects(good=2, per_defect=1)
    before = fitted.predict_batch(samples)
    fitted.save(tmp_path / "model")
    loaded = xmodal.load(tmp_path / "model")
    assert type(loaded) is FastFlow and loaded.config == fitted.config
    for a, b in zip(before, loaded.predict_batch(samples), strict=True):
        assert a.score == b.score
        np.testing.assert_array_equal(a.map, b.map)
    assert loaded.extra_parameters == fitted.info["extra_parameters"] > 0


def test_probability_map_mode_orders_like_reference():
    det = FastFlow(backbones="offline", input_size=64, epochs=1, batch_size=4, progress=False, calibration=0,
                   map_mode="probability", flow_steps=2)
    det.fit(_flow_data.train(4, size=64))
    result = det.predict(_flow_data.train(1, size=64)[0])
    assert float(result.map.max()) <= 0.0 and float(result.map.min()) >= -1.0


def test_registry_and_bad_input():
    assert "fastflow" in method_names()
    assert isinstance(create("fastflow", progress=False), FastFlow)
    with pytest.raises(ValueError, match="map_mode"):
        FastFlow(map_mode="max")
    with pytest.raises(ValueError, match="epochs"):
        FastFlow(epochs=0)
    with pytest.raises(ValueError, match="backbones"):
        FastFlow(backbones="resnet")
    with pytest.raises(TypeError, match="unexpected keyword argument 'flowsteps'"):
        FastFlow(flowsteps=3)
    with pytest.raises(RuntimeError, match="not fitted"):
        FastFlow().predict(_flow_data.train(1, size=64)[0])


def test_cli_fit_and_test(tmp_path, capsys):
    from xmodal.cli import main
    from xmodal.data import synthetic

    synthetic.make_dataset(tmp_path / "data", categories=("puck",), n_train=4, n_test=2, image_size=64)
    out = tmp_path / "model"
    assert main(["fit", "--method", "fastflow", "--backbones", "offline", "--epochs", "1", "--data",
                 str(tmp_path / "data"), "--category", "puck", "--out", str(out), "--quiet"]) == 0
    assert isinstance(xmodal.load(out), FastFlow) and xmodal.load(out).config["epochs"] == 1
    assert main(["test", "--model", str(out), "--data", str(tmp_path / "data"), "--category", "puck"]) == 0
    assert (out / "report.json").is_file()
    capsys.readouterr()
