"""G2SF end to end on the synthetic generator (offline backbones, a short fuser training)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xmodal  # noqa: E402
from xmodal.cli import main  # noqa: E402
from xmodal.data import MVTec3D, synthetic  # noqa: E402
from xmodal.data.synthetic import DEFECTS  # noqa: E402
from xmodal.methods import G2SF  # noqa: E402
from xmodal.methods._store import FeatureStore  # noqa: E402
from xmodal.methods.g2sf.patches import patch_labels  # noqa: E402

SMALL = {"backbones": "offline", "n_synthetic": 12, "epochs": 3, "fuser_max_patches": 6000, "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.make_dataset(root, categories=["puck"], n_train=8, n_test=2, n_test_good=6, image_size=128, seed=3,
                           n_validation=6)
    return root


@pytest.fixture(scope="module")
def fitted(dataset):
    return G2SF(**SMALL).fit(MVTec3D(dataset, "puck", "train"))


@pytest.fixture(scope="module")
def report(fitted, dataset):
    return xmodal.evaluate(fitted, MVTec3D(dataset, "puck", "test"), protocol="m3dm", progress_bar=False,
                           keep_results=True)


def test_detects_rgb_only_3d_only_and_both_defects(report, dataset):
    assert report["I-AUROC"] >= 0.9, report
    assert report["P-AUROC"] >= 0.9, report
    assert report["protocol"] == "m3dm" and report["samples"] == 6 + 7 * 2
    test = MVTec3D(dataset, "puck", "test")
    scores = np.array([r.score for r in report["results"]])
    defects = [e.defect for e in test.entries]
    good = scores[[d == "good" for d in defects]]
    for kind in ("rgb", "3d", "both"):
        bad = scores[[DEFECTS.get(d) == kind for d in defects]]
        # the share of (good, defective) pairs ranked right: I-AUROC of this defect kind
        assert (bad[:, None] > good[None, :]).mean() >= 0.75, (kind, bad, good)


def test_fit_records_banks_and_fuser_training(fitted):
    info = fitted.info
    assert info["backbones"] == "offline" and info["features"]["xyz_grid"] == 56 and info["features"]["grid"] == 28
    assert 0 < info["bank_rows"]["img"] <= 0.1 * 8 * 784 + 1  # 10 % coresets of the training patches
    assert 0 < info["bank_rows"]["pcd"] < 0.1 * 8 * 56 * 56
    assert info["fuser_used_patches"] <= 6000 and info["fuser_anomalous_patches"] > 0
    assert len(info["fuser_history"]) == 3 and 0 <= info["fuser_best_epoch"] < 3
    best = min(h["validation"] for h in info["fuser_history"])
    assert info["fuser_best_validation"] == best  # selected on the synthetic validation split
    assert fitted.info["calibration"]["source"].startswith("6 good images of the validation split")
    assert np.all(fitted.mu > 0)


def test_native_and_torch_fusers_agree(fitted, dataset):
    sample = MVTec3D(dataset, "puck", "test")[7]
    feats = fitted._features([sample])
    from xmodal.methods.g2sf.patches import neighbours

    mean, std = fitted.img_stats
    p = neighbours(feats, 0, fitted.banks, mean, std, 6, False)
    native = fitted.patch_scores(p, fuser="native").numpy()
    unfused = fitted.patch_scores(p, fuser="torch").numpy()
    np.testing.assert_allclose(native, unfused, rtol=1e-4, atol=1e-5)
    # background cells: w = 1, the IMG term only (PCD distance 0 without background rows)
    bg = ~p.foreground.numpy()
    sigma = fitted.lspn.sigma().detach().numpy()
    plain = (sigma[0] * p.dist_img.numpy() / fitted.mu[0]).min(axis=1)
    np.testing.assert_allclose(native[bg], plain[bg], rtol=1e-5)
    result = fitted.predict(sample)
    assert result.map.shape == (224, 224) and result.extras["patch"].shape == (56, 56)
    assert result.score == pytest.approx(float(result.extras["patch"].max()))


def test_save_load_identical_scores(fitted, dataset, tmp_path):
    samples = [MVTec3D(dataset, "puck", "test")[i] for i in (0, 9)]
    before = fitted.predict_batch(samples)
    path = fitted.save(tmp_path / "model")
    loaded = xmodal.load(path)
    assert isinstance(loaded, G2SF) and loaded.config == fitted.config
    after = loaded.predict_batch(samples)
    for a, b in zip(before, after, strict=True):
        assert a.score == b.score and a.is_anomalous == b.is_anomalous
        np.testing.assert_array_equal(a.map, b.map)
    names = json.loads((path / "config.json").read_text())["method"]
    assert names == "g2sf"
    assert not list(path.glob("*.pkl")) and (path / "model.safetensors").exists()


def test_cli_tests_and_predicts_a_saved_model(fitted, dataset, tmp_path, capsys):
    model = fitted.save(tmp_path / "model")
    code = main(["test", "--model", str(model), "--data", str(dataset), "--category", "puck", "--out",
                 str(tmp_path / "out"), "--quiet", "--protocol", "m3dm"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| I-AUROC |" in out and "g2sf" in out
    rgb = dataset / "puck" / "test" / "dent" / "rgb" / "000.png"
    xyz = dataset / "puck" / "test" / "dent" / "xyz" / "000.tiff"
    assert main(["predict", "--model", str(model), str(rgb), str(xyz), "--quiet"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out.splitlines()[0])["score"])


def test_reference_options_run(dataset):
    """pcd_background=True, the joint direction and the code's loss weights (a tiny fit)."""
    det = G2SF(**{**SMALL, "n_synthetic": 4, "epochs": 1, "fuser_max_patches": 1500}, pcd_background=True,
               direction="joint", loss_weights="code", fuser="torch", calibration=0)
    det.fit(MVTec3D(dataset, "puck", "train"))
    assert det.lspn.direction == "joint" and det.threshold is None
    result = det.predict(MVTec3D(dataset, "puck", "test")[0])
    assert np.isfinite(result.score) and np.isfinite(result.map).all()


def test_options_are_checked():
    for kwargs, match in (({"loss_weights": "new"}, "loss_weights"), ({"direction": "both"}, "direction"),
                          ({"neighbors": 0}, "neighbors"), ({"stored_neighbors": 5}, "stored_neighbors"),
                          ({"fuser": "gpu"}, "fuser"), ({"coreset_ratio": 0}, "coreset_ratio"),
                          ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"neighbors": 25}, "stored_neighbors")):
        with pytest.raises(ValueError, match=match):
            G2SF(**kwargs)
    with pytest.raises(TypeError):
        G2SF(unknown_option=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        G2SF().predict(rgb=np.zeros((8, 8, 3), np.uint8), xyz=np.zeros((8, 8, 3), np.float32))


def test_patch_labels_dilate_then_pool():
    mask = np.zeros((224, 224), bool)
    mask[101, 101] = True
    labels = patch_labels(mask, 56).reshape(56, 56)
    # nearest 224 -> 56 samples pixel 4k + 2: pixel 101 alone would vanish; dilated 3x3 it covers
    # 100..102, so cell 25 (pixel 102) is labelled, and only that cell
    assert labels[25, 25] and labels.sum() == 1
    assert not patch_labels(np.zeros((128, 128), bool), 56).any()


def test_feature_store_gather_in_ram_and_spilled(tmp_path):
    g = np.random.default_rng(0)
    parts = [g.normal(size=(n, 5)).astype(np.float32) for n in (3, 0, 7, 4)]
    everything = np.concatenate(parts)
    rows = g.integers(0, len(everything), 25)
    for budget in (1 << 20, 64):  # all in RAM / spilled to memory maps after the first image
        store = FeatureStore(budget, tmp_path)
        for p in parts:
            store.append(p)
        np.testing.assert_array_equal(store.gather(rows), everything[rows])
        with pytest.raises(IndexError):
            store.gather([len(everything)])
        store.close()
