import hashlib
import json

import numpy as np
import pytest

from xmodal.data import MVTec3D, synthetic


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_layout_and_determinism(tmp_path):
    kwargs = dict(categories=["dome"], n_train=2, n_test=1, n_validation=1, n_test_good=1, image_size=64, seed=3,
                  defects=("bump", "stain"))
    a = synthetic.make_dataset(tmp_path / "a", **kwargs)
    b = synthetic.make_dataset(tmp_path / "b", **kwargs)
    files = digest(a)
    assert files == digest(b)
    expected = {"dome/train/good/rgb/000.png", "dome/train/good/xyz/001.tiff", "dome/validation/good/rgb/000.png",
                "dome/test/good/gt/000.png", "dome/test/bump/xyz/000.tiff", "dome/test/stain/gt/000.png",
                "xmodal_synthetic.json"}
    assert expected <= set(files)
    assert not any("train/good/gt" in f for f in files)
    assert json.loads((a / "xmodal_synthetic.json").read_text())["seed"] == 3
    other = synthetic.make_dataset(tmp_path / "c", **{**kwargs, "seed": 4})
    assert digest(other)["dome/train/good/xyz/000.tiff"] != files["dome/train/good/xyz/000.tiff"]
    # A sample does not depend on how many others are generated.
    more = synthetic.make_dataset(tmp_path / "d", **{**kwargs, "n_train": 3})
    assert digest(more)["dome/train/good/xyz/001.tiff"] == files["dome/train/good/xyz/001.tiff"]
    assert len(MVTec3D(a, "dome", "test")) == 3


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
def test_metric_scene(category):
    sample, truth = synthetic.make_sample(category, "good", image_size=128, seed=1)
    pts = sample.points()
    assert 0.47 < np.median(pts[:, 2]) < 0.53  # about half a metre from the sensor
    obj = sample.xyz[(truth.height > 0.003) & sample.foreground()]
    extent = obj[:, :2].max(axis=0) - obj[:, :2].min(axis=0)
    assert 0.04 < extent.max() < 0.1  # objects 5-10 cm across
    assert 0.001 < truth.missing.mean() < 0.08  # some missing points, not many
    assert not sample.foreground()[truth.missing].any()
    assert not sample.gt.any() and sample.label == 0
    # The plane of the truth holds the background points within the depth noise.
    plane_px = sample.foreground() & (truth.height == 0)
    dist = np.abs(sample.xyz[plane_px].astype(np.float64) @ truth.plane[:3] + truth.plane[3])
    assert np.percentile(dist, 99) < 5 * synthetic.DEPTH_NOISE
    # A slightly tilted plane: a few degrees off the optical axis.
    tilt = np.degrees(np.arccos(abs(truth.plane[2])))
    assert 2 < tilt < 6


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
@pytest.mark.parametrize("defect", list(synthetic.DEFECTS))
def test_defects_are_visible_only_where_they_should_be(category, defect):
    sample, truth = synthetic.make_sample(category, defect, image_size=160, seed=0, index=3)
    nominal, nominal_truth = synthetic.make_sample(category, defect, image_size=160, seed=0, index=3, nominal=True)
    assert sample.label == 1 and nominal.label == 0 and not nominal.gt.any()
    gt = sample.gt
    assert gt.sum() > 20  # a defect a few pixels across at least
    assert (truth.height[gt] > 0).mean() > 0.95  # on the object
    rgb_change = np.abs(sample.rgb.astype(int) - nominal.rgb.astype(int)).sum(axis=-1)
    height_change = np.abs(truth.height - nominal_truth.height)
    kind = synthetic.DEFECTS[defect]
    if kind == "3d":
        np.testing.assert_array_equal(sample.rgb, nominal.rgb)  # invisible in RGB
    else:
        assert rgb_change[gt].mean() > 60  # clearly visible: tens of grey levels per channel
        assert not rgb_change[~gt].any() or rgb_change[~gt].mean() < 1
    if kind == "rgb":
        np.testing.assert_array_equal(sample.xyz, nominal.xyz)  # invisible in 3D
    else:
        assert height_change[gt].max() > 0.0019  # at least ~2 mm of relief
        assert height_change[~gt].max() < 0.0006


def test_outliers_float_above_the_plane():
    sample, truth = synthetic.make_sample("ring", "good", image_size=128, seed=2, outliers=True)
    assert 10 < truth.outliers.sum() < 300
    dist = np.abs(sample.xyz[truth.outliers].astype(np.float64) @ truth.plane[:3] + truth.plane[3])
    assert (dist > 0.015).all()
    assert (truth.height[truth.outliers] == 0).all()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="category must be one of"):
        synthetic.make_sample("bagel")
    with pytest.raises(ValueError, match="defect must be 'good' or one of"):
        synthetic.make_sample("puck", "scratch")
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        synthetic.make_sample("puck", image_size=8)
    with pytest.raises(ValueError, match="categories must be names from"):
        synthetic.make_dataset(tmp_path, categories=["bagel"])
    with pytest.raises(ValueError, match="n_train must be a non-negative int"):
        synthetic.make_dataset(tmp_path, categories=["puck"], n_train=-1)
    assert not any(tmp_path.iterdir())


def _simple_features(sample):
    """Crude per-pixel features: local RGB mean/variance, and the height above the RANSAC plane
    minus its local mean (curvature-like) plus its slope; pixels well inside the object."""
    from scipy import ndimage

    from xmodal.data import preprocess as pp
    from xmodal.ops import ransac_plane

    rgb = sample.rgb.astype(np.float32) / 255
    mean = np.stack([ndimage.uniform_filter(rgb[..., c], 5) for c in range(3)], -1)
    var = np.stack([ndimage.uniform_filter(rgb[..., c] ** 2, 5) for c in range(3)], -1) - mean**2
    plane, _ = ransac_plane(pp.border_points(sample.xyz))
    height = ndimage.median_filter(pp.plane_distance(sample.xyz, plane) * sample.foreground(), 3)
    gy, gx = np.gradient(ndimage.uniform_filter(height, 3))
    residual = height - ndimage.uniform_filter(height, 9)
    geometry = np.stack([residual, np.hypot(gx, gy), ndimage.uniform_filter(residual, 5)], -1) * 1000
    inside = ndimage.binary_erosion(height > 0.006, iterations=4)
    return np.concatenate([mean, var], -1)[inside], geometry[inside]


def test_defects_separate_with_simple_patch_features():
    # A PatchCore-like check with hand-made features: nearest-neighbour distance of each
    # pixel's feature to those of 20 good training parts, image score = max over the part.
    from sklearn.metrics import roc_auc_score

    from xmodal import knn

    banks = [[], []]
    for i in range(20):
        sample, _ = synthetic.make_sample("puck", "good", split="train", index=i)
        for bank, f in zip(banks, _simple_features(sample), strict=False):
            bank.append(f[::7])
    banks = [np.concatenate(b).astype(np.float32) for b in banks]
    scores = {}
    for defect in ["good", *synthetic.DEFECTS]:
        for i in range(8 if defect == "good" else 5):
            sample, _ = synthetic.make_sample("puck", defect, split="test", index=i)
            features = _simple_features(sample)
            scores.setdefault(defect, []).append(
                [float(knn(f.astype(np.float32), b, 1).dist.max()) for f, b in zip(features, banks, strict=True)])
    good = np.array(scores["good"])

    def auroc(defects, modality):
        bad = np.concatenate([np.array(scores[d])[:, modality] for d in defects])
        return roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(bad))], np.r_[good[:, modality], bad])

    in_rgb = [d for d, k in synthetic.DEFECTS.items() if k in ("rgb", "both")]
    in_3d = [d for d, k in synthetic.DEFECTS.items() if k in ("3d", "both")]
    only_3d = [d for d, k in synthetic.DEFECTS.items() if k == "3d"]
    assert auroc(in_rgb, 0) >= 0.95
    assert auroc(in_3d, 1) >= 0.9
    assert auroc(only_3d, 0) <= 0.75  # an RGB method does not see the geometric defects
