"""PaDiM: its statistics against numpy, its distances against scipy, RGB-visible synthetic
defects found, calibration, save/load, the shared covariance, depth, the command line, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal import reference
from xmodal.data import synthetic
from xmodal.methods import PaDiM, load
from xmodal.methods.padim import draw_channels

torch = pytest.importorskip("torch")

SIZE = 128
RGB_DEFECTS = ("stain", "discoloration", "crack", "contamination")  # visible in the RGB image
D = 24  # a small channel subset keeps the float64 references fast


def _make(defect, split, index, category="puck"):
    return synthetic.make_sample(category, defect, image_size=SIZE, split=split, index=index)[0]


@pytest.fixture(scope="module")
def train_samples():
    return [_make("good", "train", i) for i in range(10)]


@pytest.fixture(scope="module")
def validation_samples():
    return [_make("good", "validation", i) for i in range(4)]


@pytest.fixture(scope="module")
def test_samples():
    return [_make("good", "test", i) for i in range(6)] + [_make(d, "test", i) for d in RGB_DEFECTS for i in range(3)]


@pytest.fixture(scope="module")
def model(train_samples, validation_samples):
    return PaDiM(backbones="offline", progress=False).fit(train_samples, validation=validation_samples)


@pytest.fixture(scope="module")
def results(model, test_samples):
    return model.predict_batch(test_samples)


@pytest.fixture(scope="module")
def small(train_samples):
    """d = 24 channels, no calibration: the model the float64 checks use."""
    return PaDiM(backbones="offline", n_features=D, progress=False, calibration=0).fit(train_samples)


def _embeddings(det, samples) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([det.extractor(samples[i : i + 4]).double().numpy() for i in range(0, len(samples), 4)])


# --- the paper's pieces against float64 / peer references -------------------------------------


def test_channel_subset_is_seeded_distinct_and_sorted():
    a, b = draw_channels(1792, 550, 0), draw_channels(1792, 550, 0)
    assert np.array_equal(a, b) and a.shape == (550,) and np.all(np.diff(a) > 0) and a.max() < 1792
    assert not np.array_equal(a, draw_channels(1792, 550, 1))


def test_embedding_is_the_selected_channels_of_the_upsampled_maps(small, train_samples):
    """Layers upsampled (nearest) to the first map's grid, concatenated, channels selected: the
    extractor selects before upsampling, which must give the same tensor."""
    import torch.nn.functional as F

    ex = small.extractor
    with torch.no_grad():
        maps = list(ex.network(ex.images(train_samples[:2])).values())
        full = torch.cat([maps[0]] + [F.interpolate(m, size=maps[0].shape[-2:], mode="nearest") for m in maps[1:]], 1)
        expected = full[:, torch.from_numpy(small.channels)].permute(0, 2, 3, 1).reshape(2, 56 * 56, D)
        assert torch.equal(ex(train_samples[:2]), expected)
    assert full.shape[1] == 144 and ex.grid == 56


def test_streaming_statistics_equal_numpy_mean_and_cov(small, train_samples):
    x = _embeddings(small, train_samples)  # (N, P, d)
    mean, cov = reference.gaussian_statistics(x, regularization=0.01)
    np.testing.assert_allclose(small.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    lower = reference.unpack_lower(small.factors.numpy(), D)
    rebuilt = lower @ lower.transpose(0, 2, 1)
    positions = np.random.default_rng(0).choice(x.shape[1], 64, replace=False)
    for p in positions:  # numpy's own np.cov, not the reference's loop
        expected = np.cov(x[:, p, :], rowvar=False) + 0.01 * np.eye(D)
        np.testing.assert_allclose(rebuilt[p], expected, rtol=2e-5, atol=2e-6 * np.abs(expected).max())
    np.testing.assert_allclose(rebuilt, cov, rtol=1e-4, atol=1e-5 * np.abs(cov).max())


def test_distances_equal_scipy_mahalanobis(small, test_samples):
    from scipy.linalg import inv
    from scipy.spatial.distance import mahalanobis

    train = _embeddings(small, [test_samples[0]])  # any features: the kernel is what is checked
    x = _embeddings(small, test_samples[6:8])
    lower = reference.unpack_lower(small.factors.numpy(), D)
    with torch.no_grad():
        grid = small._features(test_samples[6:8]).grid.reshape(2, -1).numpy()
    mean = small.mean.numpy().astype(np.float64)
    for p in np.random.default_rng(1).choice(x.shape[1], 48, replace=False):
        vi = inv(lower[p] @ lower[p].T)
        for b in range(2):
            expected = mahalanobis(x[b, p], mean[p], vi)
            assert grid[b, p] == pytest.approx(expected, rel=2e-4)
    assert train.shape[1] == x.shape[1]


def test_map_is_the_upsampled_blurred_grid_and_score_its_maximum(small, test_samples):
    from scipy.ndimage import gaussian_filter

    res = small.predict(test_samples[7])
    grid = res.extras["grid"].astype(np.float64)
    up = torch.nn.functional.interpolate(torch.from_numpy(grid)[None, None], size=224, mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(res.map, gaussian_filter(up, 4, mode="mirror", truncate=4.0), rtol=1e-4,
                               atol=1e-4 * grid.max())
    assert res.score == float(res.map.max()) and res.map.shape == (224, 224) and res.map.dtype == np.float32


def test_shared_covariance_pools_the_positions(train_samples):
    det = PaDiM(backbones="offline", n_features=D, covariance="shared", progress=False, calibration=0)
    det.fit(train_samples[:6])
    x = _embeddings(det, train_samples[:6])
    centred = x - x.mean(axis=0)
    pooled = np.einsum("npi,npj->ij", centred, centred) / (x.shape[1] * (x.shape[0] - 1)) + 0.01 * np.eye(D)
    lower = reference.unpack_lower(det.factors.numpy(), D)[0]
    np.testing.assert_allclose(lower @ lower.T, pooled, rtol=1e-4, atol=1e-6 * np.abs(pooled).max())
    assert det.factors.shape == (1, D * (D + 1) // 2)
    size = det.info["model_size"]
    assert size["values"] == 56 * 56 * D + D * (D + 1) // 2 and size["covariance"] == "shared"


# --- detection, calibration, persistence ------------------------------------------------------


def test_detects_rgb_visible_defects(model, results, test_samples):
    from xmodal.ops import auroc

    labels = np.array([s.label for s in test_samples])
    i_auroc = auroc(np.array([r.score for r in results]), labels)
    print(f"PaDiM (EfficientNet-Lite0, d=100) I-AUROC on RGB-visible synthetic defects: {i_auroc:.3f}")
    assert i_auroc >= 0.9
    inside, outside = [], []
    for s, r in zip(test_samples, results, strict=True):
        if s.label:
            mask = model.target_mask(s)
            inside.append(r.map[mask].mean())
            outside.append(r.map[~mask].mean())
    assert np.mean(np.array(inside) > np.array(outside)) >= 0.9


def test_model_size_is_reported(model):
    size = model.info["model_size"]
    assert (size["positions"], size["dim"]) == (56 * 56, 100)
    assert size["values"] == 3136 * 100 + 3136 * 5050 and size["bytes"] == 4 * size["values"]
    assert size["inverse_covariance_bytes"] == 4 * (3136 * 100 + 3136 * 100 * 100)
    assert model.model_size() == size


def test_calibrated_verdicts(model, results, test_samples):
    assert model.threshold is not None and model.info["calibration"]["source"]
    good = [r for s, r in zip(test_samples, results, strict=True) if not s.label]
    assert all(r.normalized_score is not None and r.is_anomalous == (r.score > model.threshold) for r in results)
    assert np.mean([not r.is_anomalous for r in good]) >= 0.5


def test_save_load_gives_identical_predictions(tmp_path, model, results, test_samples):
    path = model.save(tmp_path / "padim")
    again = load(path)
    assert isinstance(again, PaDiM) and again.config == model.config
    assert np.array_equal(again.channels, model.channels)
    for s, r in zip(test_samples[5:9], results[5:9], strict=True):
        other = again.predict(s)
        assert other.score == r.score and np.array_equal(other.map, r.map) and other.threshold == r.threshold
    saved = json.loads((path / "config.json").read_text())
    assert saved["info"]["model_size"]["dim"] == 100


def test_depth_modality_scores_the_depth_image(train_samples):
    det = PaDiM(modality="depth", backbones="offline", n_features=D, progress=False, calibration=0)
    det.fit(train_samples[:4])
    flat = det.predict(_make("good", "test", 0)).score
    bump = det.predict(_make("bump", "test", 0)).score  # a 3D-only defect: invisible in RGB
    assert np.isfinite(flat) and bump > flat
    assert det.extractor.modality == "depth"


def test_image_size_sets_the_grid(train_samples):
    det = PaDiM(backbones="offline", n_features=D, image_size=112, progress=False, calibration=0)
    det.fit(train_samples[:3])
    assert det.mean.shape == (28 * 28, D) and det.extractor.grid == 28
    res = det.predict(train_samples[0])
    assert res.extras["grid"].shape == (28, 28) and res.map.shape == (224, 224)


def test_paper_backbone_with_random_weights(train_samples):
    det = PaDiM(backbones="paper", random_weights=True, progress=False, calibration=0, n_features=32)
    det.fit(train_samples[:3])
    assert det.info["features"]["network"] == "wide_resnet50_2" and det.info["features"]["network_channels"] == 1792
    assert det.mean.shape == (3136, 32) and np.isfinite(det.predict(train_samples[0]).score)


def test_command_line(tmp_path, capsys):
    from xmodal.cli import main

    data = tmp_path / "data"
    synthetic.make_dataset(data, categories=["puck"], n_train=4, n_test=1, n_test_good=1, image_size=100, seed=3,
                           n_validation=2, defects=("stain",))
    model = tmp_path / "model"
    args = ["--data", str(data), "--category", "puck", "--quiet"]
    assert main(["fit", "--method", "padim", "--backbones", "offline", "--out", str(model), *args]) == 0
    assert "fitted padim" in capsys.readouterr().out
    assert main(["test", "--model", str(model), "--out", str(tmp_path / "report"), *args]) == 0
    assert "| I-AUROC |" in capsys.readouterr().out
    assert main(["fit", "--method", "padim", "--modality", "xyz", "--out", str(tmp_path / "m2"), *args]) == 1
    assert "modality must be one of" in capsys.readouterr().err


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"modality": "xyz"}, ValueError, "modality must be one of"),
    ({"covariance": "diag"}, ValueError, "covariance must be one of"),
    ({"backbones": "fast"}, ValueError, "backbones must be one of"),
    ({"n_features": 0}, ValueError, "n_features must be"),
    ({"n_features": 2.5}, TypeError, "n_features must be an int"),
    ({"regularization": -1}, ValueError, "regularization must be"),
    ({"sigma": "4"}, TypeError, "sigma must be a number"),
    ({"image_size": 16}, ValueError, "image_size must be"),
    ({"batch_size": 0}, ValueError, "batch_size must be"),
    ({"device": "gpu"}, ValueError, "device must be"),
    ({"num_group": 4}, TypeError, "unexpected keyword argument 'num_group'"),
    ({"coreset_ratio": 0.1}, TypeError, "unexpected keyword argument 'coreset_ratio'"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        PaDiM(**kwargs)


def test_bad_inputs(train_samples):
    with pytest.raises(RuntimeError, match="not fitted"):
        PaDiM().predict(train_samples[0])
    with pytest.raises(ValueError, match="n_features must be at most the 144 channels"):
        PaDiM(backbones="offline", n_features=200, progress=False).fit(train_samples[:3])
    with pytest.raises(ValueError, match="at least 2 training images"):
        PaDiM(backbones="offline", n_features=8, progress=False, calibration=0).fit(train_samples[:1])
    with pytest.raises(ValueError, match="n_features must be in"):
        draw_channels(10, 11, 0)


def test_corrupt_channels_are_rejected_at_load(tmp_path, small):
    from safetensors.numpy import load_file, save_file

    path = small.save(tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["channels"] = state["channels"][::-1].copy()
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="channels must be increasing"):
        load(path)
