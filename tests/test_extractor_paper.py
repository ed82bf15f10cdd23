"""FeatureExtractor's paper path (DINO ViT + Point-MAE): its features equal the plain composition
of the ops and torch's bilinear resize, laid out channels-last so a pixel's feature vector is a
contiguous row for the scorer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmodal import ops
from xmodal.backbones import FeatureExtractor
from xmodal.backbones.extractor import _resize
from xmodal.data.preprocess import remove_background, resize_organized, resize_rgb
from xmodal.data.synthetic import make_sample


def _rows_are_contiguous(maps: torch.Tensor) -> bool:
    """(B, C, H, W): every image's (pixels, C) feature rows are a contiguous view."""
    return all(m.reshape(m.shape[0], -1).T.is_contiguous() for m in maps)


@pytest.mark.parametrize(("shape", "size"), [((1, 768, 28, 28), 224), ((2, 40, 28, 28), 224), ((1, 5, 56, 40), 28),
                                             ((3, 3, 7, 9), 13), ((1, 2, 1, 1), 4)])
def test_resize_equals_torch_bilinear_channels_last(shape, size):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    got = _resize(x, size)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert _rows_are_contiguous(got)
    if shape[-1] == shape[-2]:
        assert _resize(x, shape[-1]) is x  # already at the grid size: untouched


def test_resize_of_token_major_vit_output():
    tokens = torch.randn(2, 1 + 28 * 28, 96, generator=torch.Generator().manual_seed(1))
    x = tokens[:, 1:].transpose(1, 2).reshape(2, 96, 28, 28)  # how the ViT hands its map over
    want = F.interpolate(x.contiguous(), size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(_resize(x, 224), want, atol=2e-6, rtol=0)


@pytest.fixture(scope="module")
def paper_extractor():
    torch.manual_seed(0)
    return FeatureExtractor("dino_vitb8", "pointmae", 224, random_weights=True, rgb_depth=1, pointmae_depth=4,
                            num_group=64, group_size=16)


@pytest.fixture(scope="module")
def samples():
    return [remove_background(make_sample(c, "dent", image_size=224, seed=3)[0], mask_rgb=False)
            for c in ("puck", "ring")]


def _plain_point_grid(extractor, cloud: np.ndarray, out_size: int) -> torch.Tensor:
    """The Point-MAE alignment as the reference code chains it, channels-first."""
    pixels = np.flatnonzero(np.all(cloud != 0, axis=-1))
    points = torch.from_numpy(np.ascontiguousarray(cloud.reshape(-1, 3)[pixels]))
    groups = ops.group_points(points, extractor.num_group, extractor.group_size)
    with torch.no_grad():
        feats = extractor.xyz_backbone(groups.neighbourhoods[None], groups.centers[None])[0]
    per_point = ops.three_nn_interpolate(points, groups.centers, feats.T.contiguous())
    return ops.points_to_grid(per_point, torch.from_numpy(pixels), 224, 224, out_size=out_size)


def test_paper_features_equal_plain_composition_in_batches_and_alone(paper_extractor, samples):
    both = paper_extractor(samples)
    one = paper_extractor(samples[1])
    assert both.rgb.shape == (2, 768, 224, 224) and both.xyz.shape == (2, 1152, 224, 224)
    assert one.rgb.shape == (1, 768, 224, 224) and one.xyz.shape == (1, 1152, 224, 224)
    for features in (both, one):
        assert _rows_are_contiguous(features.rgb) and _rows_are_contiguous(features.xyz)
    for i, sample in enumerate(samples):
        grid = _plain_point_grid(paper_extractor, resize_organized(sample.xyz, 224), 224)
        torch.testing.assert_close(both.xyz[i], grid, atol=1e-6, rtol=0)
        assert torch.equal(both.foreground[i], grid.abs().sum(dim=0) != 0)
        assert 0.02 < float(both.foreground[i].float().mean()) < 0.5
    assert torch.equal(one.xyz[0], both.xyz[1]) and torch.equal(one.foreground[0], both.foreground[1])
    with torch.no_grad():
        image = paper_extractor._images([resize_rgb(samples[1].rgb, 224).astype(np.float32) / 255],
                                        paper_extractor.rgb_backbone)
        vit = paper_extractor.rgb_backbone(image)
    want_rgb = F.interpolate(vit.contiguous(), size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(one.rgb, want_rgb, atol=2e-6, rtol=0)
    torch.testing.assert_close(both.rgb[1:], want_rgb, atol=1e-5, rtol=0)


def test_coarse_point_grid(samples):
    torch.manual_seed(0)
    extractor = FeatureExtractor("efficientnet_lite0", "pointmae", 28, xyz_grid=56, random_weights=True,
                                 pointmae_depth=4, num_group=64, group_size=16)
    features = extractor(samples[0])
    assert features.xyz.shape == (1, 1152, 56, 56) and features.foreground.shape == (1, 56, 56)
    grid = _plain_point_grid(extractor, resize_organized(samples[0].xyz, 224), 56)
    torch.testing.assert_close(features.xyz[0], grid, atol=1e-6, rtol=0)
    assert torch.equal(features.foreground[0], grid.abs().sum(dim=0) != 0)
