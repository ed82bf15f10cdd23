"""PatchCore: scores against float64 references, the paper's re-weighting, bank selection,
save/load, the multimodal benefit on synthetic defects, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xmodal
from xmodal import reference
from xmodal.data import synthetic
from xmodal.methods import PatchCore, create, load
from xmodal.methods._patch_score import image_score

SIZE = 160
THREE_D = ("dent", "bump", "hole")
RGB_ONLY = ("stain", "discoloration")
BOTH = ("crack", "contamination")


def _train(category="puck", n=10, size=SIZE):
    return [synthetic.make_sample(category, "good", image_size=size, split="train", index=i)[0] for i in range(n)]


def _validation(category="puck", n=8, size=SIZE):
    return [synthetic.make_sample(category, "good", image_size=size, split="validation", index=i)[0] for i in range(n)]


def _test(category="puck", defects=THREE_D + RGB_ONLY + BOTH, per_defect=2, good=6, size=SIZE):
    out = [synthetic.make_sample(category, "good", image_size=size, index=i)[0] for i in range(good)]
    for d in defects:
        out += [synthetic.make_sample(category, d, image_size=size, index=i)[0] for i in range(per_defect)]
    return out


def _auroc(scores, labels):
    return xmodal.metrics.auroc(scores, labels) if hasattr(xmodal, "metrics") else _mann_whitney(scores, labels)


def _mann_whitney(scores, labels):
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def train_samples():
    return _train()


@pytest.fixture(scope="module")
def test_samples():
    return _test()


@pytest.fixture(scope="module")
def validation_samples():
    return _validation()


@pytest.fixture(scope="module")
def fused(train_samples, validation_samples):
    return PatchCore(modality="rgb+xyz", backbones="offline", progress=False).fit(train_samples,
                                                                                  validation=validation_samples)


@pytest.fixture(scope="module")
def fused_results(fused, test_samples):
    return fused.predict_batch(test_samples)


# --- the image score -------------------------------------------------------------------------


def _score_with_knn(patches, bank, **kw):
    p, b = torch.from_numpy(patches), torch.from_numpy(bank)
    res = xmodal.knn(p, b, 1)
    return image_score(p, res.dist[:, 0], res.idx[:, 0], b, **kw), res.dist[:, 0].numpy()


@pytest.mark.parametrize(("reweight", "k", "eps", "scale"), [("paper", 9, 0.0, 1.0), ("paper", 3, 0.0, 0.37),
                                                   ("paper", 1, 0.0, 1.0), ("m3dm", 3, 1e-5, 1.0),
                                                   ("m3dm", 5, 0.0, 2.5), ("none", 1, 0.0, 1.0)])
def test_image_score_matches_float64_reference(rng, reweight, k, eps, scale):
    bank = rng.standard_normal((40, 7)).astype(np.float32)
    bank[5] = bank[17]  # duplicate rows: ties in the support set
    patches = (rng.standard_normal((50, 7)) * 1.3).astype(np.float32)
    got, dist = _score_with_knn(patches, bank, reweight=reweight, num_neighbors=k, eps=eps, scale=scale)
    want, want_dist = reference.patchcore_score(patches, bank, num_neighbors=k, reweight=reweight, eps=eps,
                                                scale=scale)
    assert np.array_equal(dist, want_dist)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_reweighting_is_the_paper_formula_by_hand():
    # Bank in 2D; the farthest test patch is (4, 0): nearest bank row m* = (3, 0), s* = 1.
    bank = np.array([[0, 0], [1, 0], [3, 0], [3, 1], [2, 0], [0, 5]], dtype=np.float32)
    patches = np.array([[0.1, 0], [4, 0], [1, 0.2]], dtype=np.float32)
    # N_b(m*) for k = 3: m* itself, (3, 1) at 1 and (2, 0) at 1 -> ties keep the lower index.
    d = [1.0, math.hypot(1, 1), 2.0]  # ||m_test - (3,0)||, ||m_test - (3,1)||, ||m_test - (2,0)||
    paper = (1 - math.exp(d[0]) / sum(math.exp(v) for v in d)) * 1.0
    got, _ = _score_with_knn(patches, bank, reweight="paper", num_neighbors=3)
    assert got == pytest.approx(paper, rel=1e-12)
    root = math.sqrt(2)  # M3DM: D = sqrt(feature dim), the two neighbours after m*
    m3dm = (1 - math.exp(1.0 / root) / (math.exp(d[1] / root) + math.exp(d[2] / root) + 1e-5)) * 1.0
    got, _ = _score_with_knn(patches, bank, reweight="m3dm", num_neighbors=3, eps=1e-5)
    assert got == pytest.approx(m3dm, rel=1e-12)
    got, _ = _score_with_knn(patches, bank, reweight="paper", num_neighbors=1)
    assert got == 1.0  # anomalib: one neighbour -> the plain maximum


def test_reweighting_large_distances_do_not_overflow(rng):
    bank = (rng.standard_normal((30, 4)) * 1e3).astype(np.float32)
    patches = (rng.standard_normal((5, 4)) * 5e3).astype(np.float32)
    for reweight in ("paper", "m3dm"):
        got, _ = _score_with_knn(patches, bank, reweight=reweight, num_neighbors=4)
        assert math.isfinite(got)


# --- the detector ----------------------------------------------------------------------------


def test_bank_is_the_coreset_of_the_training_patches(train_samples):
    det = PatchCore(modality="rgb", backbones="offline", progress=False, seed=5, calibration=0).fit(train_samples[:4])
    feats = det.extractor(train_samples[:4], modalities=("rgb",)).rgb
    rows = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).contiguous()
    idx = xmodal.coreset(rows, ratio=0.1, projection="sparse", seed=5)
    assert torch.equal(det.banks["rgb"], rows[idx])
    assert det.info["bank_rows"] == {"rgb": len(idx)} and det.info["training_rows"] == {"rgb": rows.shape[0]}


def test_scores_equal_float64_reference(fused, test_samples):
    sample = test_samples[7]  # a dent
    res = fused.predict(sample)
    feats = fused.extractor([sample], modalities=("rgb", "xyz"))
    want = {}
    for m in ("rgb", "xyz"):
        grid = getattr(feats, m)[0]
        rows = grid.reshape(grid.shape[0], -1).T.numpy()
        fg = None if m == "rgb" else feats.foreground[0].reshape(-1).numpy()
        scored = rows if fg is None else rows[fg]
        score, dist = reference.patchcore_score(scored, fused.banks[m].numpy(), num_neighbors=9, reweight="paper",
                                                scale=fused.scales[m])
        patch = np.zeros(rows.shape[0], dtype=np.float32)
        patch[slice(None) if fg is None else fg] = dist * np.float32(fused.scales[m])
        assert res.extras[f"patch_{m}"].reshape(-1) == pytest.approx(patch, rel=1e-6, abs=0)
        assert res.extras[f"score_{m}"] == pytest.approx(score, rel=1e-9)
        want[m] = score
    assert res.score == pytest.approx(want["rgb"] + want["xyz"], rel=1e-9)
    assert res.map.shape == (224, 224) and res.map.dtype == np.float32
    assert np.allclose(res.map, res.extras["map_rgb"] + res.extras["map_xyz"], rtol=1e-6, atol=1e-6)
    # standardised distances: divided by the std of each modality's training features
    assert fused.scales["rgb"] == pytest.approx(1 / fused.info["statistics"]["rgb"]["std"])


def test_map_is_bilinear_upsample_then_gaussian(fused, test_samples):
    import torch.nn.functional as F

    from xmodal.methods.postprocess import gaussian_blur

    res = fused.predict(test_samples[0])
    patch = torch.from_numpy(res.extras["patch_rgb"])
    up = F.interpolate(patch[None, None], size=(224, 224), mode="bilinear", align_corners=False)
    assert np.allclose(res.extras["map_rgb"], gaussian_blur(up, 4.0)[0, 0].numpy(), atol=1e-6)
    assert res.extras["patch_xyz"].shape == (28, 28)  # offline: depth image on the 28 grid


def test_multimodal_fusion_finds_every_defect_kind(fused_results, test_samples):
    labels = np.array([s.label for s in test_samples])
    scores = np.array([r.score for r in fused_results])
    assert _auroc(scores, labels) >= 0.9


def test_calibrated_verdicts_separate_good_from_defective(fused, fused_results, test_samples):
    from xmodal.evaluation import classification_at

    assert fused.info["calibration"]["source"] == "8 good validation images given to fit"
    labels = np.array([s.label for s in test_samples])
    scores = np.array([r.score for r in fused_results])
    assert all(r.threshold == fused.threshold for r in fused_results)
    assert classification_at(scores, labels, fused.threshold)["F1"] >= 0.9
    for label, result in zip(labels, fused_results, strict=False):
        if label == 0:
            assert result.normalized_map.max() < 0.5


def test_rgb_alone_misses_3d_defects_that_xyz_finds(train_samples, test_samples, fused_results):
    """Why fuse: dents, bumps and holes change the geometry, not the image."""
    rgb = PatchCore(modality="rgb", backbones="offline", progress=False).fit(train_samples)
    rgb_scores = np.array([r.score for r in rgb.predict_batch(test_samples)])
    xyz_scores = np.array([r.extras["score_xyz"] for r in fused_results])
    keep = np.array([s.defect in ("good", *THREE_D) for s in test_samples])
    labels = np.array([s.label for s in test_samples])[keep]
    rgb_auroc, xyz_auroc = _auroc(rgb_scores[keep], labels), _auroc(xyz_scores[keep], labels)
    assert xyz_auroc >= 0.95
    assert rgb_auroc <= 0.8
    # and the other way round: stains are invisible to the 3D bank, found by the RGB bank
    keep = np.array([s.defect in ("good", *RGB_ONLY) for s in test_samples])
    labels = np.array([s.label for s in test_samples])[keep]
    assert _auroc(rgb_scores[keep], labels) >= 0.95 and _auroc(xyz_scores[keep], labels) <= 0.8


@pytest.fixture(scope="module")
def ocsvm(train_samples, validation_samples):
    pytest.importorskip("sklearn")
    return PatchCore(modality="rgb+xyz", backbones="offline", fusion="ocsvm", reweight="m3dm", reweight_eps=1e-5,
                     progress=False, ocsvm_max_pixels=5000).fit(train_samples[:5], validation=validation_samples[:2])


def test_save_load_gives_identical_predictions(tmp_path, ocsvm, test_samples):
    det = ocsvm
    before = det.predict_batch(test_samples[5:8])
    det.save(tmp_path / "model")
    assert not any(p.suffix in (".pkl", ".pt") for p in (tmp_path / "model").iterdir())
    again = load(tmp_path / "model")
    assert isinstance(again, PatchCore) and again.fitted
    after = again.predict_batch(test_samples[5:8])
    for a, b in zip(before, after, strict=False):
        assert a.score == b.score
        assert np.array_equal(a.map, b.map)


def test_late_fusion_is_sklearns_score_samples(rng):
    sklearn = pytest.importorskip("sklearn.linear_model")
    from xmodal.methods._late_fusion import fit_ocsvm, ocsvm_score

    x = np.abs(rng.standard_normal((300, 2))) * [3.0, 0.5]
    coef, offset = fit_ocsvm(x, seed=42)
    model = sklearn.SGDOneClassSVM(nu=0.5, max_iter=1000, random_state=42).fit(x)
    assert np.allclose(ocsvm_score(x, coef), model.score_samples(x), rtol=1e-12, atol=1e-12)
    assert offset[0] == model.offset_[0]


def test_ocsvm_fusion_fits_on_training_score_vectors(ocsvm, train_samples):
    det = ocsvm
    assert det.info["fusion_data"] == {"images": 5, "pixels": 5000, "pixels_per_image": 1000}
    res = det.predict(train_samples[0])
    coef = det.fusion_params["image_coef"]
    assert res.score == pytest.approx(coef[0] * res.extras["score_xyz"] + coef[1] * res.extras["score_rgb"])


def test_numpy_and_torch_inputs(fused, test_samples):
    s = test_samples[0]
    a = fused.predict(s)
    b = fused.predict(rgb=s.rgb, xyz=s.xyz.astype(np.float64))
    c = fused.predict((torch.from_numpy(s.rgb), torch.from_numpy(s.xyz)))
    assert a.score == b.score == c.score
    assert np.array_equal(a.map, c.map)


def test_streaming_fit_under_max_memory(train_samples, test_samples):
    det = PatchCore(modality="rgb+xyz", backbones="offline", progress=False, max_memory=3_000_000,
                    calibration=0).fit(train_samples)
    assert det.info["fit_mode"].startswith("streaming") and det.info["chunks"]["rgb"] > 1
    assert det.info["bank_rows"]["rgb"] == int(0.1 * det.info["training_rows"]["rgb"])
    subset = test_samples[:6] + test_samples[6::2]  # every defect kind once
    labels = np.array([s.label for s in subset])
    assert _auroc([r.score for r in det.predict_batch(subset)], labels) >= 0.9
    with pytest.raises(ValueError, match="max_memory=1000 bytes is too small"):
        PatchCore(modality="rgb", backbones="offline", progress=False, max_memory=1000).fit(train_samples[:2])


def test_create_and_backbone_choice(train_samples, capsys):
    det = create("patchcore", modality="xyz", backbones="offline", weights_dir=None, device="cpu", seed=2,
                 progress=True)
    det.fit(train_samples[:3])
    assert "backbones: offline" in capsys.readouterr().err
    assert det.info["backbone_spec"]["names"] == {"xyz": "depth"}
    explicit = PatchCore(modality="rgb", backbone="efficientnet_lite0", progress=False).fit(train_samples[:2])
    assert explicit.info["backbones"] == "explicit"


def test_paper_rgb_backbone_with_random_weights():
    train = _train(n=2, size=128)
    det = PatchCore(modality="rgb", backbones="paper", random_weights=True, progress=False).fit(train)
    assert det.info["features"]["rgb"] == "wide_resnet50_2" and det.info["features"]["rgb_channels"] == 1536
    assert det.banks["rgb"].shape == (int(0.1 * 2 * 784), 1536)
    res = det.predict(train[0])
    assert res.map.shape == (224, 224) and res.score >= 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"modality": "depth"}, "modality must be one of"),
    ({"backbones": "fast"}, "backbones must be one of"),
    ({"backbone": "resnet18"}, "backbone must be '<rgb>'"),
    ({"backbone": "pointmae+depth"}, "backbone must be '<rgb>'"),
    ({"coreset_ratio": 0}, "coreset_ratio must be a finite number in \\(0, 1\\]"),
    ({"coreset_ratio": 1.5}, "coreset_ratio must be a finite number in"),
    ({"projection": "pca"}, "projection must be one of"),
    ({"reweight": "max"}, "reweight must be one of"),
    ({"num_neighbors": 0}, "num_neighbors must be a positive int"),
    ({"reweight": "m3dm", "num_neighbors": 1}, "num_neighbors must be >= 2"),
    ({"fusion": "product"}, "fusion must be one of"),
    ({"modality": "rgb", "fusion": "ocsvm"}, "needs modality='rgb\\+xyz'"),
    ({"sigma": -1}, r"sigma must be a finite number in \[0, inf\)"),
    ({"max_memory": 0}, r"max_memory must be in \[1, inf\]"),
    ({"max_memory": 10**9, "coreset_ratio": None}, "needs a coreset_ratio"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchCore(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 1.5}, "batch_size must be an int"),
    ({"grid": True}, "grid must be an int"),
    ({"sigma": "4"}, "sigma must be a number"),
    ({"coreset_ratio": "0.1"}, "coreset_ratio must be a number or None"),
])
def test_options_of_the_wrong_kind_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        PatchCore(**kwargs)


def test_bad_inputs(fused, train_samples):
    with pytest.raises(TypeError, match="backbone must be None or a string"):
        PatchCore(backbone=3)
    with pytest.raises(ValueError, match="at least one training Sample"):
        PatchCore(backbones="offline", progress=False).fit([])
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(backbones="offline").predict(train_samples[0])
    s = train_samples[0]
    with pytest.raises(TypeError, match="rgb must be a uint8"):
        fused.predict(rgb=s.rgb.astype(np.float32), xyz=s.xyz)
    with pytest.raises(TypeError, match=r"sample must be an xmodal.data.Sample"):
        fused.predict("image.png")
    empty = s.replace(xyz=np.zeros_like(s.xyz))
    with pytest.raises(ValueError, match="no training sample has 3D foreground"):
        PatchCore(modality="xyz", backbones="offline", progress=False).fit([empty])
    res = fused.predict(empty)  # no 3D data at test time: the xyz bank scores 0
    assert res.extras["score_xyz"] == 0.0 and not res.extras["patch_xyz"].any()


@pytest.mark.cuda
def test_cuda_matches_cpu(train_samples, test_samples):
    cpu = PatchCore(modality="rgb+xyz", backbones="offline", progress=False).fit(train_samples[:4])
    gpu = PatchCore(modality="rgb+xyz", backbones="offline", progress=False, device="cuda").fit(train_samples[:4])
    for a, b in zip(cpu.predict_batch(test_samples[:4]), gpu.predict_batch(test_samples[:4]), strict=False):
        assert b.score == pytest.approx(a.score, rel=1e-3)
        assert np.allclose(a.map, b.map, rtol=1e-3, atol=1e-3)
