import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xmodal  # noqa: E402
from xmodal.data import MVTec3D, synthetic  # noqa: E402
from xmodal.methods import CFM  # noqa: E402


@pytest.fixture(scope="module")
def dataset(puck_dataset):
    return puck_dataset


@pytest.fixture(scope="module")
def fitted(dataset):
    det = CFM(backbones="offline", epochs=12, progress=False, seed=7)
    return det.fit(MVTec3D(dataset, "puck", "train"))


@pytest.fixture(scope="module")
def report(fitted, dataset):
    return xmodal.evaluate(fitted, MVTec3D(dataset, "puck", "test"), progress_bar=False, keep_results=True)


def test_detects_synthetic_defects(report):
    # A real detection check: every defect type (3D-only, RGB-only and both) against good parts.
    assert report["I-AUROC"] >= 0.9, report
    assert report["P-AUROC"] >= 0.9, report
    assert report["samples"] == 6 + 7 * 2 and report["backbones"] == "offline"


def test_calibrated_verdicts_separate_good_from_defective(fitted, report, dataset):
    """Calibrated on the 8 good images of the synthetic validation split; judged on the test split."""
    calibration = fitted.info["calibration"]
    assert calibration["source"].startswith("8 good images of the validation split")
    assert report["at_threshold"]["threshold"] == fitted.threshold
    assert report["at_threshold"]["F1"] >= 0.9, report["at_threshold"]
    labels = MVTec3D(dataset, "puck", "test").labels
    for label, result in zip(labels, report["results"], strict=False):
        assert result.is_anomalous == (result.score > fitted.threshold)
        if label == 0:  # a good part is cool everywhere on the fit-time scale
            assert result.normalized_map.max() < 0.5 and result.normalized_score < 0.5


def test_records_the_backbone_choice(fitted):
    assert fitted.info["backbones"] == "offline"
    assert "offline" in fitted.info["backbones_reason"]
    assert fitted.info["features"]["rgb"] == "efficientnet_lite0"
    assert fitted.info["features"]["rgb_weights"].endswith(".pth")  # the shipped ImageNet weights


def test_save_load_predict_identical(fitted, dataset, tmp_path):
    sample = MVTec3D(dataset, "puck", "test")[3]
    before = fitted.predict(sample)
    path = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = xmodal.load(path)
    after = loaded.predict(sample)
    assert isinstance(loaded, CFM) and loaded.config == fitted.config
    np.testing.assert_array_equal(after.map, before.map)
    assert after.score == before.score
    fitted.save(path)  # overwriting an existing model directory works
    assert xmodal.load(path).predict(sample).score == before.score


def test_map_is_product_of_discrepancies_then_box_blur(fitted, dataset):
    from xmodal.methods.postprocess import box_blur_cfm

    res = fitted.predict(MVTec3D(dataset, "puck", "test")[0])
    assert res.map.shape == (224, 224) and res.map.dtype == np.float32
    psi = res.extras["d_2d"] * res.extras["d_3d"] * res.extras["foreground"]
    np.testing.assert_allclose(res.map, box_blur_cfm(torch.from_numpy(psi)).numpy(), atol=1e-6)
    assert res.score == pytest.approx(float(res.map.max()))
    assert np.all(res.extras["d_2d"][~res.extras["foreground"]] == 0)


def test_numpy_and_torch_inputs_from_a_pipeline(fitted, dataset):
    sample = MVTec3D(dataset, "puck", "test")[1]
    ref = fitted.predict(sample)
    from_arrays = fitted.predict(rgb=sample.rgb, xyz=sample.xyz.astype(np.float64))
    from_pair = fitted.predict((torch.from_numpy(sample.rgb), torch.from_numpy(sample.xyz)))
    np.testing.assert_array_equal(from_arrays.map, ref.map)
    np.testing.assert_array_equal(from_pair.map, ref.map)
    batch = fitted.predict_batch([sample, sample])
    np.testing.assert_allclose(batch[0].map, ref.map, atol=1e-5)


def test_map_on_image_undoes_square_pad(fitted):
    sample, _ = synthetic.make_sample("puck", "stain", image_size=96, seed=1)
    wide = xmodal.data.Sample(rgb=np.ascontiguousarray(sample.rgb[:64]), xyz=np.ascontiguousarray(sample.xyz[:64]))
    res = fitted.predict(wide)
    assert fitted.map_on_image(res, wide).shape == (64, 96)
    assert fitted.target_mask(wide).shape == (224, 224)


def test_options_and_errors(dataset):
    with pytest.raises(ValueError, match="aggregation must be one of"):
        CFM(aggregation="mean")
    with pytest.raises(ValueError, match="pruning must be one of"):
        CFM(pruning="XL")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        CFM(epochs=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        CFM().predict(rgb=np.zeros((8, 8, 3), np.uint8), xyz=np.zeros((8, 8, 3), np.float32))
    det = CFM(progress=False)
    det.fitted = True
    with pytest.raises(TypeError, match="rgb must be a uint8"):
        det.predict(rgb=np.zeros((8, 8, 3), np.float32), xyz=np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="backbones must be one of"):
        CFM(backbones="imagenet", progress=False).fit(MVTec3D(dataset, "puck", "train"))
    from xmodal.backbones import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"dino_vitb8|pointmae"):
        CFM(backbones="paper", weights_dir=str(dataset), progress=False).fit(MVTec3D(dataset, "puck", "train"))


def test_variants_run(dataset):
    train = list(MVTec3D(dataset, "puck", "train"))[:3]
    test = MVTec3D(dataset, "puck", "test")[0]
    for options in ({"aggregation": "sum"}, {"aggregation": "max"}, {"mlp": "encoder_decoder"}):
        det = CFM(backbones="offline", epochs=1, progress=False, calibration=0, **options).fit(train)
        assert np.isfinite(det.predict(test).score)
    net = xmodal.methods.cfm.mapping_network(768, 1152, "encoder_decoder")
    widths = [m.out_features for m in net if isinstance(m, torch.nn.Linear)]
    assert widths == [384, 192, 192, 384, 1152]  # CFM supplementary §B


def test_models_of_earlier_versions_load(fitted, dataset, tmp_path):
    """A model directory as xmodal wrote it before calibration, PointMAEOptions and max_memory:
    it loads without warnings and predicts the same, with no verdict."""
    import json
    import warnings

    from safetensors.numpy import load_file, save_file

    path = fitted.save(tmp_path / "old")
    document = json.loads((path / "config.json").read_text())
    config = document["config"]
    config["max_cache_bytes"] = config.pop("max_memory")
    config.update(config.pop("pointmae"))
    for key in ("calibration", "tmp_dir"):
        config.pop(key)
    document["info"].pop("calibration")
    (path / "config.json").write_text(json.dumps(document))
    state = {k: v for k, v in load_file(str(path / "model.safetensors")).items() if not k.startswith("calibration.")}
    save_file(state, str(path / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = xmodal.load(path)
    sample = MVTec3D(dataset, "puck", "test")[2]
    result = old.predict(sample)
    assert result.score == fitted.predict(sample).score and result.threshold is None and result.is_anomalous is None
    assert old.config["max_memory"] == fitted.config["max_memory"] and old.pointmae == fitted.pointmae


def test_load_rejects_weights_of_another_shape(fitted, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = fitted.save(tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["mlp_2d3d.2.weight"] = state["mlp_2d3d.2.weight"][:, :-1].copy()
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model.safetensors: array 'mlp_2d3d.2.weight' is float32 \(\d+, \d+\), "
                                         r"expected a numeric \(\d+, \d+\)") as exc:
        xmodal.load(path)
    assert "\n" not in str(exc.value)


def test_fit_reads_the_dataset_lazily(dataset):
    class NoIteration(MVTec3D):
        def __iter__(self):
            raise AssertionError("the training set was iterated whole")

    train = NoIteration(dataset, "puck", "train")
    det = CFM(backbones="offline", epochs=1, progress=False, max_memory=0).fit(train)  # features spill to disk
    assert det.info["train_images"] == 8 and det.info["calibration"]["images"] == 8


def test_load_rejects_corrupt_model(tmp_path, fitted):
    path = fitted.save(tmp_path / "m")
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt model weights"):
        xmodal.load(path)
    (path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt model config"):
        xmodal.load(path)
    with pytest.raises(ValueError, match="model directory not found"):
        xmodal.load(tmp_path / "missing")
