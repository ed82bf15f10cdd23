import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xmodal  # noqa: E402
from xmodal.backbones import FeatureExtractor  # noqa: E402
from xmodal.data import Sample, preprocess, synthetic  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return synthetic.make_sample("puck", "bump", image_size=120, seed=2)[0]


@pytest.fixture(scope="module")
def object_only(sample):
    # The MVTec-style preprocessed cloud: background plane removed, as the paper pipeline expects.
    return preprocess.remove_background(sample)


def test_offline_shapes_grids_and_foreground(sample):
    fx = FeatureExtractor("efficientnet_lite0", "depth", grid=28, xyz_grid=56)
    feats = fx([sample, sample])
    assert feats.rgb.shape == (2, 120, 28, 28) and feats.xyz.shape == (2, 120, 56, 56)
    assert feats.foreground.shape == (2, 56, 56) and feats.foreground.dtype == torch.bool
    # foreground = cells holding object points (the depth image's foreground), not the plane
    _, fg = preprocess.depth_image(preprocess.resize_organized(sample.xyz, 224), background="auto")
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(fg)[None, None].float(), (56, 56))[0, 0] > 0
    assert torch.equal(feats.foreground[0], expected)
    assert 0.02 < feats.foreground.float().mean() < 0.6
    assert fx.describe()["rgb_weights"].endswith(".pth")


def test_batch_equals_single(sample):
    fx = FeatureExtractor("efficientnet_lite0", "depth", grid=56)
    other = synthetic.make_sample("ring", "good", image_size=120, seed=4)[0]
    both = fx([sample, other])
    single = fx(other)
    torch.testing.assert_close(both.rgb[1], single.rgb[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.xyz[1], single.xyz[0], atol=1e-4, rtol=1e-4)


def test_pointmae_path_is_the_reference_composition(object_only):
    # Point-MAE grid = group -> encode -> 3-NN interpolate -> scatter + AvgPool(3) + adaptive pool,
    # checked against torch doing scatter and pooling by hand.
    fx = FeatureExtractor("efficientnet_lite0", "pointmae", grid=28, xyz_grid=56, random_weights=True,
                          num_group=64, group_size=16)
    feats = fx(object_only)
    cloud = preprocess.resize_organized(object_only.xyz, 224)
    pixels = np.flatnonzero(np.all(cloud != 0, axis=-1))
    points = torch.from_numpy(np.ascontiguousarray(cloud.reshape(-1, 3)[pixels]))
    groups = xmodal.ops.group_points(points, 64, 16)
    with torch.no_grad():
        center_feats = fx.xyz_backbone(groups.neighbourhoods[None], groups.centers[None])[0]
    per_point = xmodal.ops.three_nn_interpolate(points, groups.centers, center_feats.T.contiguous())
    grid = torch.zeros(per_point.shape[1], 224 * 224)
    grid[:, torch.from_numpy(pixels)] = per_point.T
    pooled = torch.nn.AvgPool2d(3, stride=1)(grid.view(1, -1, 224, 224))
    expected = torch.nn.functional.adaptive_avg_pool2d(pooled, (56, 56))[0]
    torch.testing.assert_close(feats.xyz[0], expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(feats.foreground[0], expected.abs().sum(0) != 0)
    assert feats.xyz.shape[1] == 1152


def test_bad_input(sample):
    with pytest.raises(ValueError, match="rgb must be one of"):
        FeatureExtractor("resnet18")
    with pytest.raises(ValueError, match="xyz must be one of"):
        FeatureExtractor(xyz="fpfh")
    with pytest.raises(ValueError, match="grid must be an int"):
        FeatureExtractor(grid=0)
    fx = FeatureExtractor("efficientnet_lite0", "depth", grid=28)
    with pytest.raises(TypeError, match=r"must be an xmodal.data.Sample"):
        fx([sample.rgb])
    with pytest.raises(ValueError, match="at least one Sample"):
        fx([])
    sparse = Sample(rgb=sample.rgb, xyz=np.where(np.arange(120)[:, None, None] < 2, sample.xyz, 0).astype(np.float32))
    pm = FeatureExtractor("efficientnet_lite0", "pointmae", grid=28, random_weights=True)
    with pytest.raises(ValueError, match="Point-MAE grouping needs at least num_group=1024"):
        pm(sparse)
