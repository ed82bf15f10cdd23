"""BridgeNet end to end on the synthetic generator: detection (both, RGB-only, depth-only),
few-shot, calibration, save/load, CLI, bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xmodal  # noqa: E402
from xmodal.data import MVTec3D  # noqa: E402
from xmodal.methods import BridgeNet  # noqa: E402

# Small and fast settings for a CPU test run (the paper's: 576, 1536, 1536, 160 epochs, lr 5e-5).
FAST = {"backbones": "offline", "image_size": 96, "embed_dim": 256, "hidden": 256, "progress": False}


@pytest.fixture(scope="module")
def dataset(puck_dataset):
    return puck_dataset


@pytest.fixture(scope="module")
def fitted(dataset):
    det = BridgeNet(**FAST, **TRAINING, seed=0)
    return det.fit(MVTec3D(dataset, "puck", "train"))


@pytest.fixture(scope="module")
def report(fitted, dataset):
    return xmodal.evaluate(fitted, MVTec3D(dataset, "puck", "test"), progress_bar=False, keep_results=True)


TRAINING = {"epochs": 30, "lr": 1e-3}


def test_detects_synthetic_defects(report):
    assert report["samples"] == 6 + 7 * 2 and report["backbones"] == "offline"
    # Measured (loaded 2-core machine, 60 optimisation steps; the paper trains ~16k): I-AUROC 0.70,
    # P-AUROC 0.85 with these settings. Under-trained, but clearly above chance (0.5).
    assert report["I-AUROC"] >= 0.6, report
    assert report["P-AUROC"] >= 0.7, report


def test_map_geometry_and_score(fitted, dataset):
    from xmodal.methods.postprocess import gaussian_blur, upsample_bilinear

    sample = MVTec3D(dataset, "puck", "test")[0]
    res = fitted.predict(sample)
    assert res.map.shape == (96, 96) and res.map.dtype == np.float32
    patch = res.extras["patch_scores"]
    assert patch.shape == (12, 12) and res.score == pytest.approx(float(patch.max()))
    expected = gaussian_blur(upsample_bilinear(patch, 96), 4.0, mode="reflect").numpy()
    np.testing.assert_allclose(res.map, expected, atol=1e-6)
    assert fitted.target_mask(sample).shape == (96, 96)
    assert fitted.map_on_image(res, sample).shape == sample.shape


def test_folded_inference_equals_the_torch_heads(fitted, dataset):
    sample = MVTec3D(dataset, "puck", "test")[5]
    joint, _ = fitted._features([sample])
    with torch.no_grad():
        expected = fitted.heads.eval()(joint).numpy()
    np.testing.assert_allclose(fitted.predict(sample).extras["patch_scores"].ravel(), expected, atol=2e-6)


def test_calibrated_on_the_validation_split(fitted):
    calibration = fitted.info["calibration"]
    assert calibration["source"].startswith("8 good images of the validation split")
    assert fitted.threshold is not None and fitted.info["selected_epoch"] == TRAINING["epochs"]
    assert len(fitted.info["loss_per_epoch"]) == TRAINING["epochs"]


def test_save_load_predict_identical(fitted, dataset, tmp_path):
    sample = MVTec3D(dataset, "puck", "test")[3]
    before = fitted.predict(sample)
    path = fitted.save(tmp_path / "model")
    loaded = xmodal.load(path)
    assert isinstance(loaded, BridgeNet) and loaded.config == fitted.config
    after = loaded.predict(sample)
    np.testing.assert_array_equal(after.map, before.map)
    assert after.score == before.score and after.threshold == before.threshold


@pytest.mark.parametrize("modality", ["rgb", "depth"])
def test_single_modality_variants(dataset, modality):
    """The RGB-only and 3D-only variants feed one modality's features to the heads. (Their
    detection after this short training is reported in the note, not asserted: RGB-only scored
    0.5 on the synthetic colour defects, which carry no texture.)"""
    det = BridgeNet(**FAST, epochs=2, lr=1e-3, modality=modality, calibration=0)
    det.fit(MVTec3D(dataset, "puck", "train"))
    assert det.modalities == (modality,) and det.heads.adaptor.in_features == 256
    sample = MVTec3D(dataset, "puck", "test")[7]
    joint, grid = det._features([sample])
    assert joint.shape == (grid * grid, 256)
    res = det.predict(sample)
    assert np.isfinite(res.score) and res.map.shape == (96, 96)


def test_depth_only_variant_finds_3d_defects(dataset):
    """3D-only BridgeNet (depth image only) on the synthetic 3D-only defects (dent, bump, hole)
    against the good parts: measured 1.000 with these settings."""
    det = BridgeNet(**FAST, **TRAINING, modality="depth", calibration=0, seed=0)
    det.fit(MVTec3D(dataset, "puck", "train"))
    test = MVTec3D(dataset, "puck", "test")
    keep = [i for i, e in enumerate(test.entries) if e.defect in ("good", "dent", "bump", "hole")]
    scores = np.asarray([det.predict(test[i]).score for i in keep])
    labels = np.asarray([test.entries[i].label for i in keep])
    assert xmodal.ops.auroc(scores, labels) >= 0.9


def test_few_shot_one_image(dataset):
    det = BridgeNet(**FAST, epochs=2, shots=1, repeats=3, calibration=0, seed=1)
    det.fit(MVTec3D(dataset, "puck", "train"))
    assert len(det.info["shots"]) == 1 and det.info["train_images"] == 8
    assert len(det.info["loss_per_epoch"]) == 2
    assert np.isfinite(det.predict(MVTec3D(dataset, "puck", "test")[0]).score)


def test_paper_backbone_with_random_weights_reads_no_file(dataset, monkeypatch):
    # the other methods' rule: random weights need no weight file (tests, benchmarks, exports)
    monkeypatch.delenv("XMODAL_WEIGHTS", raising=False)
    det = BridgeNet(backbones="paper", random_weights=True, image_size=32, embed_dim=16, hidden=16, epochs=1,
                    calibration=0, progress=False)
    det.fit([MVTec3D(dataset, "puck", "train")[i] for i in range(2)])
    assert det.info["backbones"] == "paper" and det.extractor.describe()["backbone"] == "wide_resnet50_2"
    assert np.isfinite(det.predict(MVTec3D(dataset, "puck", "test")[0]).score)


def test_selection_on_validation_never_sees_test_data(dataset):
    det = BridgeNet(**FAST, epochs=3, selection="validation", seed=2)
    det.fit(MVTec3D(dataset, "puck", "train"))
    values = det.info["validation_per_epoch"]
    assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert det.info["selected_epoch"] == int(np.argmax(values)) + 1


def test_options_and_errors(dataset):
    with pytest.raises(ValueError, match="image_size must be a multiple of 16"):
        BridgeNet(image_size=100)
    with pytest.raises(ValueError, match="modality must be one of"):
        BridgeNet(modality="thermal")
    assert BridgeNet(modality="rgb+xyz").config["modality"] == "both"
    assert BridgeNet(modality="xyz").config["modality"] == "depth"
    with pytest.raises(ValueError, match="shots"):
        BridgeNet(shots=0)
    with pytest.raises(ValueError, match="selection"):
        BridgeNet(selection="test")
    with pytest.raises(ValueError, match="needs calibration images"):
        BridgeNet(selection="validation", calibration=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        BridgeNet(nonsense=1)
    with pytest.raises(ValueError, match="shots=20"):
        BridgeNet(**FAST, shots=20, epochs=1, calibration=0).fit(MVTec3D(dataset, "puck", "train"))
    with pytest.raises(RuntimeError, match="not fitted"):
        BridgeNet().predict(rgb=np.zeros((8, 8, 3), np.uint8), xyz=np.zeros((8, 8, 3), np.float32))
    paper = BridgeNet()
    assert paper.config["image_size"] == 576 and paper.config["epochs"] == 160 and paper.map_size == 576
    assert paper.config["hidden"] == 1536 and not paper.config["adaptor_bias"]


def test_cli_options_and_test(fitted, dataset, tmp_path, capsys):
    from xmodal.cli import _method_options, build_parser, main

    args = build_parser().parse_args(["fit", "--method", "bridgenet", "--data", str(dataset), "--category", "puck",
                                      "--out", "m", "--epochs", "3", "--modality", "xyz", "--shots", "5"])
    options = _method_options(args)
    assert options["epochs"] == 3 and options["shots"] == 5 and options["modality"] == "xyz"
    assert BridgeNet(**options).config["modality"] == "depth"
    model = fitted.save(tmp_path / "model")
    code = main(["test", "--model", str(model), "--data", str(dataset), "--category", "puck", "--out",
                 str(tmp_path / "report"), "--quiet"])
    assert code == 0 and "| I-AUROC |" in capsys.readouterr().out
    assert "bridgenet" in (tmp_path / "report" / "report.md").read_text()
