import numpy as np
import pytest

from xmodal.data import MVTec3D, Sample, synthetic
from xmodal.data import preprocess as pp

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("in_size", [1, 7, 96, 128, 200, 400, 512, 600, 800])
@pytest.mark.parametrize("out_size", [1, 28, 56, 100, 224, 256, 576, 800])
def test_nearest_indices_match_torch(in_size, out_size):
    probe = torch.arange(in_size, dtype=torch.float64).reshape(1, 1, in_size, 1)
    expected = torch.nn.functional.interpolate(probe, size=(out_size, 1), mode="nearest")[0, 0, :, 0]
    np.testing.assert_array_equal(pp.nearest_indices(in_size, out_size), expected.numpy().astype(np.int64))


def test_resize_organized_equals_torch_and_keeps_only_original_points(rng):
    xyz = rng.normal(size=(123, 97, 3)).astype(np.float32)
    xyz[rng.uniform(size=xyz.shape[:2]) < 0.3] = 0
    for size in (224, (50, 301), 97):
        out = pp.resize_organized(xyz, size)
        h, w = (size, size) if isinstance(size, int) else size
        chw = torch.from_numpy(xyz).permute(2, 0, 1)[None]
        expected = torch.nn.functional.interpolate(chw, size=(h, w), mode="nearest")[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(out, expected)
        originals = {tuple(p) for p in xyz.reshape(-1, 3)}
        assert all(tuple(p) in originals for p in out.reshape(-1, 3))
    as_torch = pp.resize_organized(torch.from_numpy(xyz), 224)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), pp.resize_organized(xyz, 224))
    np.testing.assert_array_equal(pp.resize_organized(xyz[..., 2], 64), pp.resize_organized(xyz, 64)[..., 2])
    with pytest.raises(ValueError, match="size must be a positive int"):
        pp.resize_organized(xyz, 0)
    with pytest.raises(ValueError, match="xyz must have shape"):
        pp.resize_organized(xyz[0, 0], 10)


def test_rgb_and_mask_inputs(rng):
    from PIL import Image

    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    padded = pp.square_pad(rgb)
    assert padded.shape == (80, 80, 3)
    np.testing.assert_array_equal(padded[10:70], rgb)  # (80 - 60) // 2 = 10 rows on top
    np.testing.assert_array_equal(padded[0], rgb[0])
    np.testing.assert_array_equal(padded[-1], rgb[-1])
    resized = pp.resize_rgb(rgb, 224, square=True)
    np.testing.assert_array_equal(resized, np.asarray(Image.fromarray(padded).resize((224, 224), Image.BICUBIC)))
    x = pp.rgb_tensor(rgb, 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    small = pp.resize_rgb(rgb, 32)
    mean, std = torch.tensor(pp.IMAGENET_MEAN)[:, None, None], torch.tensor(pp.IMAGENET_STD)[:, None, None]
    expected = (torch.from_numpy(small).permute(2, 0, 1).float() / 255 - mean) / std
    np.testing.assert_allclose(x, expected.numpy(), atol=1e-6)
    gt = np.zeros((60, 80), bool)
    gt[20:30, 40:60] = True
    g = pp.resize_gt(gt, 120)
    assert g.dtype == np.bool_ and g.shape == (120, 120)
    assert abs(g.mean() - gt.mean()) < 0.01
    with pytest.raises(TypeError, match="rgb must be uint8"):
        pp.resize_rgb(rgb.astype(np.float32))


def surviving_points_check(category, outliers, size=200, seed=0):
    sample, truth = synthetic.make_sample(category, "good", image_size=size, seed=seed, index=1, outliers=outliers)
    result = pp.remove_background(sample)
    side = max(-(-size // 100), 1) * 100
    top = (side - size) // 2
    assert result.xyz.shape == (side, side, 3) and result.rgb.shape == (side, side, 3)
    kept = result.foreground()[top:top + size, top:top + size]
    assert not result.foreground()[:top].any() and not result.foreground()[top + size:].any()
    valid = sample.foreground()
    margin = 0.0015  # ~7 sigma of the depth noise, plus the plane fit error
    must_keep = valid & (truth.height > 0.005 + margin) & ~truth.outliers
    must_drop = valid & ((truth.height < 0.005 - margin) | truth.outliers)
    assert kept[must_keep].all()
    assert not kept[must_drop].any()
    assert must_keep.sum() + must_drop.sum() > 0.95 * valid.sum()
    # Removed points are zeroed in xyz and (mask_rgb) in RGB; kept RGB pixels are untouched.
    crop_rgb = result.rgb[top:top + size, top:top + size]
    np.testing.assert_array_equal(crop_rgb[kept], sample.rgb[kept])
    assert not crop_rgb[valid & ~kept].any()
    return sample, truth, result


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
def test_background_removal_removes_the_known_plane(category):
    surviving_points_check(category, outliers=False)


def test_background_removal_keeps_only_the_largest_cluster():
    sample, truth, result = surviving_points_check("puck", outliers=True, size=160)
    assert truth.outliers.any()
    plane_only = pp.remove_background(sample, cluster_min_points=0, pad_multiple=0)
    assert plane_only.foreground()[truth.outliers].all()  # the debris survives the plane removal...
    assert not result.xyz[20:180, 20:180][truth.outliers].any()  # ...but not the cleaning


def test_largest_cluster_counts_noise_as_a_cluster():
    xyz = np.zeros((10, 10, 3), np.float32)
    xyz[0, :4] = [[i + 1, 1, 1] for i in range(4)]  # 4 isolated points: noise with min_points=2
    xyz[5, :3] = [[50 + 1e-3 * i, 1, 1] for i in range(3)]  # a 3-point cluster
    keep = pp.largest_cluster(xyz, eps=0.01, min_points=2)
    assert keep[0, :4].all() and not keep[5].any()


def test_background_removal_parameters_and_errors():
    sample, _ = synthetic.make_sample("dome", "good", image_size=120, seed=1)
    keep_rgb = pp.remove_background(sample, mask_rgb=False, pad_multiple=0)
    np.testing.assert_array_equal(keep_rgb.rgb, sample.rgb)
    assert pp.BackgroundRemoval().key() != pp.BackgroundRemoval(seed=1).key()
    empty_border = sample.xyz.copy()
    empty_border[:12] = 0
    empty_border[-12:] = 0
    empty_border[:, :12] = 0
    empty_border[:, -12:] = 0
    with pytest.raises(ValueError, match="valid points in the 10-pixel border strips"):
        pp.remove_background(sample.replace(xyz=empty_border))


def test_cache_round_trip(tmp_path):
    root = tmp_path / "data"
    synthetic.make_dataset(root, categories=["block"], n_train=2, n_test=1, n_validation=0, n_test_good=1,
                           image_size=96, defects=("bump",))
    dataset = MVTec3D(root, "block", "test")
    cached = pp.BackgroundRemoved(dataset, tmp_path / "cache")
    first = [cached[i] for i in range(len(cached))]
    files = sorted(p.relative_to(cached.folder) for p in cached.folder.rglob("*.*"))
    assert len(files) == 1 + 3 * len(dataset)  # params.json + rgb/xyz/gt per sample
    again = pp.BackgroundRemoved(dataset, tmp_path / "cache")
    for a, b, raw in zip(first, again, dataset, strict=False):
        np.testing.assert_array_equal(a.xyz, b.xyz)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.gt, b.gt)
        np.testing.assert_array_equal(a.xyz, pp.remove_background(raw).xyz)
        assert b.paths["xyz"].startswith(str(cached.folder))
    # The cache is itself a dataset in the MVTec 3D-AD layout.
    assert len(MVTec3D(cached.folder, "block", "test")) == len(dataset)


def test_depth_image_matches_the_object():
    sample, truth = synthetic.make_sample("dome", "good", image_size=160, seed=2)
    depth, foreground = pp.depth_image(sample.xyz)
    assert depth.dtype == np.float32 and foreground.dtype == np.bool_
    assert depth.min() >= 0 and depth.max() <= 1 + 1e-6
    obj = truth.height > 0.005
    iou = (foreground & obj).sum() / (foreground | obj).sum()
    assert iou > 0.95
    assert (depth[foreground] > 0).mean() > 0.99  # holes and the minimum pixel are filled
    near = pp._shift_reduce(foreground, 2, np.logical_or, False)
    assert not depth[~near].any()  # filling grows the object by at most 2 pixels
    # Closer to the camera = smaller z = smaller normalised depth: the top is darker.
    top, rim = truth.height > 0.013, foreground & (truth.height < 0.008)
    assert depth[top].mean() + 0.2 < depth[rim].mean()
    with pytest.raises(ValueError, match="xyz must have shape"):
        pp.depth_image(sample.xyz[..., 0])


def test_morphology_helpers():
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    assert pp._shift_reduce(m, 1, np.logical_or, False).sum() == 9
    full = np.ones((5, 5), bool)
    eroded = pp._shift_reduce(full, 1, np.logical_and, True)
    assert eroded.all()  # the outside never erodes (OpenCV's default border)
    holes = np.ones((5, 5))
    holes[2, 2] = 0
    holes[0, 0] = 0
    filled = pp._fill_holes(holes, 1)
    assert filled[2, 2] == 1 and filled[0, 0] == 1


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_square_dilation_and_erosion_equal_scipy(rng, radius):
    ndimage = pytest.importorskip("scipy.ndimage")
    square = np.ones((2 * radius + 1,) * 2, bool)
    for density in (0.05, 0.5, 0.95):
        m = rng.random((37, 53)) < density
        np.testing.assert_array_equal(pp._shift_reduce(m, radius, np.logical_or, False),
                                      ndimage.binary_dilation(m, square, border_value=0))
        np.testing.assert_array_equal(pp._shift_reduce(m, radius, np.logical_and, True),
                                      ndimage.binary_erosion(m, square, border_value=1))


def test_in_memory_samples_work_without_paths():
    sample, _ = synthetic.make_sample("block", "good", image_size=100, seed=3)
    assert isinstance(pp.remove_background(sample), Sample)
