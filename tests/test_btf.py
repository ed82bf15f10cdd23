"""BTF: its features against float64 references and BTF's own formulation, scores against the
float64 PatchCore score, 3D-only defects found with no weights, calibration, save/load, the
command line, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xmodal
from xmodal import reference
from xmodal.data import preprocess as pp
from xmodal.data import synthetic
from xmodal.methods import BTF, load
from xmodal.methods.btf import btf_input, fpfh_patches

torch = pytest.importorskip("torch")

SIZE = 200  # a multiple of 100: the preprocessing pads nothing
THREE_D = ("dent", "bump", "hole")


def _make(defect, split, index, size=SIZE, category="puck"):
    return synthetic.make_sample(category, defect, image_size=size, split=split, index=index)[0]


@pytest.fixture(scope="module")
def train_samples():
    return [_make("good", "train", i) for i in range(8)]


@pytest.fixture(scope="module")
def validation_samples():
    return [_make("good", "validation", i) for i in range(4)]


@pytest.fixture(scope="module")
def test_samples():
    return [_make("good", "test", i) for i in range(4)] + [_make(d, "test", i) for d in THREE_D for i in range(2)]


@pytest.fixture(scope="module")
def xyz_model(train_samples, validation_samples, tmp_path_factory):
    """Fitted with no weight file anywhere and no way to build a network: the 3D half needs none."""
    from xmodal import backbones

    def refuse(*args, **kwargs):
        raise AssertionError("BTF with modality='xyz' built a network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XMODAL_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))
        patch.setattr(backbones, "create", refuse)
        det = BTF(modality="xyz", progress=False).fit(train_samples, validation=validation_samples)
        assert det.extractor.network is None
    return det


@pytest.fixture(scope="module")
def xyz_results(xyz_model, test_samples):
    return xyz_model.predict_batch(test_samples)


# --- features -------------------------------------------------------------------------------


def test_fpfh_patches_equal_the_float64_pipeline():
    """Normals (0.1 m, 30), FPFH (0.25 m, 100), scatter, 3x3 pool, adaptive pool to 28, all in
    float64 by xmodal.reference, on a window of a preprocessed part (small enough for numpy)."""
    xyz = pp.resize_organized(btf_input(_make("dent", "test", 0)).xyz, 224).copy()
    window = np.zeros(xyz.shape[:2], dtype=bool)
    window[96:126, 100:128] = True
    xyz[~window] = 0
    got, points = fpfh_patches(xyz)
    flat = xyz.reshape(-1, 3)
    pixels = np.flatnonzero(np.all(flat != 0, axis=1))
    assert points == pixels.size > 500
    normals = reference.estimate_normals(flat[pixels], 30, 0.1)
    features = reference.fpfh(flat[pixels], normals, 100, 0.25)
    want = reference.points_to_grid(features, pixels, 224, 224, 28).transpose(1, 2, 0)
    assert got.shape == (28, 28, 33) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    assert (want[..., :11].sum(axis=-1) > 0).sum() >= 9  # the window covers several cells


def test_patches_are_rgb_then_fpfh_pooled_as_btf_does(train_samples):
    """[RGB | FPFH] per cell; the RGB half is BTF's AdaptiveAvgPool2d(28)(AvgPool2d(3, 1)(stage))
    of each network stage, in BTF's module form."""
    det = BTF(modality="rgb+xyz", backbones="offline", progress=False, calibration=0).fit(train_samples[:2])
    sample = train_samples[0]
    patches = det._features([sample])
    info = det.info["features"]
    assert info["rgb"] == "efficientnet_lite0" and (info["rgb_channels"], info["xyz_channels"]) == (120, 33)
    assert patches.rows.shape == (1, 28 * 28, 153)
    fpfh, points = fpfh_patches(btf_input(sample).xyz)
    assert patches.points == [points]
    assert torch.equal(patches.rows[0, :, 120:], torch.from_numpy(fpfh.reshape(-1, 33)))
    network = det.extractor.network
    image = pp.resize_rgb(btf_input(sample).rgb, 224).astype(np.float32) / 255
    x = xmodal.backbones.normalize(torch.from_numpy(image).permute(2, 0, 1)[None], network)
    pool = torch.nn.Sequential(torch.nn.AvgPool2d(3, stride=1), torch.nn.AdaptiveAvgPool2d((28, 28)))
    with torch.no_grad():
        want = torch.cat([pool(stage) for stage in network(x).values()], dim=1)[0]
    got = patches.rows[0, :, :120].T.reshape(120, 28, 28)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(det.bank) == int(0.1 * 2 * 784) and det.bank.dim == 153


def test_background_removal_blacks_out_and_pads():
    sample = _make("good", "test", 0, size=128)
    prepared = btf_input(sample)
    assert prepared.xyz.shape == (200, 200, 3)  # zero padding to a multiple of 100
    removed = prepared.xyz[36:164, 36:164]
    kept = np.all(removed != 0, axis=-1)
    assert 0 < kept.mean() < 0.5  # the plane is gone, the part stays
    assert not prepared.rgb[36:164, 36:164][~kept].any()  # RGB of removed points blacked out
    assert not prepared.xyz[:36].any() and not prepared.rgb[:36].any()
    again = btf_input(prepared)  # no plane left to fit: used as it is
    assert np.array_equal(again.xyz, prepared.xyz)
    assert btf_input(sample, "keep") is sample


# --- the detector ---------------------------------------------------------------------------


def test_xyz_alone_finds_3d_defects_without_weights(xyz_model, xyz_results, test_samples):
    assert xyz_model.info["backbones"] == "none" and xyz_model.info["features"]["rgb_weights"] is None
    assert xyz_model.extractor.network is None
    labels = np.array([s.label for s in test_samples])
    assert xmodal.ops.auroc([r.score for r in xyz_results], labels) >= 0.95


def test_scores_equal_the_float64_reference(xyz_model, xyz_results, test_samples):
    """BTF's score: distance to the nearest bank row per cell, the largest re-weighted with the 2
    bank rows nearest its match and D = sqrt(33), no epsilon."""
    from xmodal.methods.postprocess import gaussian_blur, upsample_bilinear

    bank = xyz_model.bank.to_numpy()
    for sample, result in zip(test_samples[3:6], xyz_results[3:6], strict=False):
        fpfh, _ = fpfh_patches(btf_input(sample).xyz)
        score, dist = reference.patchcore_score(fpfh.reshape(-1, 33), bank, num_neighbors=3, reweight="m3dm")
        assert result.score == pytest.approx(score, rel=1e-9)
        assert np.array_equal(result.extras["patch"].reshape(-1), dist)
        want = gaussian_blur(upsample_bilinear(dist.reshape(28, 28), 224), 4.0).numpy()
        assert result.map.shape == (224, 224) and np.allclose(result.map, want, atol=1e-5)


def test_calibrated_verdicts(xyz_model, xyz_results, test_samples):
    from xmodal.evaluation import classification_at

    assert xyz_model.info["calibration"]["source"] == "4 good validation images given to fit"
    labels = np.array([s.label for s in test_samples])
    scores = np.array([r.score for r in xyz_results])
    assert classification_at(scores, labels, xyz_model.threshold)["F1"] >= 0.9
    for label, result in zip(labels, xyz_results, strict=False):
        assert result.threshold == xyz_model.threshold
        if label == 0:
            assert not result.is_anomalous and result.normalized_map.max() < 0.5


def test_save_load_gives_identical_predictions(tmp_path, xyz_model, xyz_results, test_samples):
    xyz_model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    again = load(tmp_path / "model")
    assert isinstance(again, BTF) and again.config == xyz_model.config and again.threshold == xyz_model.threshold
    for before, after in zip(xyz_results[3:7], again.predict_batch(test_samples[3:7]), strict=False):
        assert after.score == before.score and after.normalized_score == before.normalized_score
        assert np.array_equal(after.map, before.map)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["info"]["features"]["channels"] = 34
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="bank"):
        load(tmp_path / "model")


def test_evaluate_and_geometry_of_padded_images(xyz_model):
    """128-pixel images are padded to 200 by the preprocessing: the map covers the padded
    square, the ground truth is padded the same way, map_on_image undoes it."""
    samples = [_make("good", "test", 0, size=128), _make("bump", "test", 0, size=128)]
    report = xmodal.evaluate(xyz_model, samples, protocol="m3dm", progress_bar=False)
    assert report["protocol"] == "m3dm" and report["I-AUROC"] == 1.0
    bump = samples[1]
    target = xyz_model.target_mask(bump)
    assert np.array_equal(target, pp.resize_gt(pp.pad_to_multiple(bump.gt), 224))
    result = xyz_model.predict(bump)
    on_image = xyz_model.map_on_image(result, bump)
    assert on_image.shape == (128, 128)
    assert bump.gt[np.unravel_index(on_image.argmax(), on_image.shape)]


def test_numpy_and_torch_inputs(xyz_model, test_samples):
    s = test_samples[4]
    a = xyz_model.predict(s)
    b = xyz_model.predict(rgb=s.rgb, xyz=s.xyz.astype(np.float64))
    c = xyz_model.predict((torch.from_numpy(s.rgb), torch.from_numpy(s.xyz)))
    assert a.score == b.score == c.score and np.array_equal(a.map, c.map)


def test_paper_backbone_with_random_weights():
    train = [_make("good", "train", 0, size=100)]
    det = BTF(backbones="paper", random_weights=True, progress=False, calibration=0).fit(train)
    assert det.info["features"]["rgb"] == "wide_resnet50_2"
    assert det.bank.features.shape == (int(0.1 * 784), 1536 + 33)
    assert np.isfinite(det.predict(train[0]).score)


def test_streaming_fit_under_max_memory(train_samples):
    det = BTF(modality="xyz", progress=False, max_memory=300_000, calibration=0).fit(train_samples[:4])
    assert det.info["fit_mode"].startswith("streaming") and det.info["bank_rows"] == int(0.1 * 4 * 784)


def test_command_line(tmp_path, capsys):
    from xmodal.cli import main

    data = tmp_path / "data"
    synthetic.make_dataset(data, categories=["puck"], n_train=4, n_test=1, n_test_good=1, image_size=100, seed=3,
                           defects=("dent",))
    model = tmp_path / "model"
    args = ["--data", str(data), "--category", "puck", "--quiet"]
    assert main(["fit", "--method", "btf", "--modality", "xyz", "--out", str(model), *args]) == 0
    assert "fitted btf" in capsys.readouterr().out
    assert main(["test", "--model", str(model), "--out", str(tmp_path / "report"), *args]) == 0
    assert "| I-AUROC |" in capsys.readouterr().out
    folder = data / "puck" / "test" / "dent"
    assert main(["predict", "--model", str(model), str(folder / "rgb" / "000.png"), str(folder / "xyz" / "000.tiff"),
                 "--quiet"]) == 0
    verdict = json.loads(capsys.readouterr().out.splitlines()[0])
    assert verdict["method"] == "btf" and verdict["verdict"] in ("good", "anomalous")


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"modality": "depth"}, ValueError, "modality must be one of"),
    ({"background": "crop"}, ValueError, "background must be one of"),
    ({"backbones": "fast"}, ValueError, "backbones must be one of"),
    ({"fpfh_radius": 0}, ValueError, "fpfh_radius must be"),
    ({"normal_radius": "0.1"}, TypeError, "normal_radius must be a number"),
    ({"fpfh_max_nn": 0}, ValueError, "fpfh_max_nn must be"),
    ({"normal_max_nn": 2.5}, TypeError, "normal_max_nn must be an int"),
    ({"grid": 300}, ValueError, "grid must be"),
    ({"coreset_ratio": 0}, ValueError, "coreset_ratio must be"),
    ({"projection": "pca"}, ValueError, "projection must be one of"),
    ({"reweight": "m3dm", "num_neighbors": 1}, ValueError, "num_neighbors must be >= 2"),
    ({"sigma": -1}, ValueError, "sigma must be"),
    ({"max_memory": 10**9, "coreset_ratio": None}, ValueError, "needs a coreset_ratio"),
    ({"batch_size": 0}, ValueError, "batch_size must be"),
    ({"num_group": 4}, TypeError, "unexpected keyword argument 'num_group'"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        BTF(**kwargs)


def test_bad_inputs(xyz_model, train_samples):
    with pytest.raises(RuntimeError, match="not fitted"):
        BTF().predict(train_samples[0])
    s = train_samples[0]
    with pytest.raises(TypeError, match="rgb must be a uint8"):
        xyz_model.predict(rgb=s.rgb.astype(np.float32), xyz=s.xyz)
    with pytest.raises(TypeError, match="xyz must be a floating"):
        xyz_model.predict(rgb=s.rgb, xyz=s.xyz.astype(np.int32))
    bad = s.xyz.copy()
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        xyz_model.predict(rgb=s.rgb, xyz=bad)
    empty = s.replace(xyz=np.zeros_like(s.xyz))
    with pytest.raises(ValueError, match="no training sample has 3D points"):
        BTF(modality="xyz", progress=False, calibration=0).fit([empty])
    result = xyz_model.predict(empty)  # no 3D data at test time: every cell is a background cell
    assert result.extras["points"] == 0 and np.isfinite(result.score)
