"""Map post-processing against scipy.ndimage / scikit-image (float64), with the padding and
truncation the docstrings promise."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ndimage = pytest.importorskip("scipy.ndimage")

from xmodal.methods.postprocess import box_blur_cfm, gaussian_blur, resize_bilinear, upsample_bilinear  # noqa: E402


@pytest.mark.parametrize("sigma", [0.6, 1.5, 4.0])
@pytest.mark.parametrize("shape", [(40, 53), (224, 224), (33, 18)])
def test_gaussian_blur_is_scipy_gaussian_filter_mirror_truncate_4(rng, sigma, shape):
    x = rng.random(shape).astype(np.float32)
    x[5:9, 3:7] += 4.0  # a hot spot near the border: the padding matters
    want = ndimage.gaussian_filter(x.astype(np.float64), sigma, mode="mirror", truncate=4.0)
    got = gaussian_blur(x, sigma)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-6)


def test_gaussian_blur_batches_channels_independently(rng):
    x = rng.random((2, 3, 30, 31)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(x), 2.0).numpy()
    for n in range(2):
        for c in range(3):
            want = ndimage.gaussian_filter(x[n, c].astype(np.float64), 2.0, mode="mirror", truncate=4.0)
            np.testing.assert_allclose(got[n, c], want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", [(224, 224), (41, 29), (6, 9)])
def test_box_blur_cfm_is_scipy_uniform_filter_zero_padded(rng, shape):
    x = rng.random(shape).astype(np.float32)
    x[0, :3] = 5.0  # border values spread into the zero padding
    want = x.astype(np.float64)
    for size, passes in ((5, 5), (7, 3)):
        for _ in range(passes):
            want = ndimage.uniform_filter(want, size, mode="constant", cval=0.0)
    got = box_blur_cfm(x)
    assert got.shape == shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize(("src", "dst"), [((7, 9), (30, 41)), ((28, 28), (224, 224)), ((50, 40), (20, 17))])
def test_bilinear_resize_is_half_pixel_interpolation(rng, src, dst):
    """align_corners=False = scipy's zoom with grid_mode=True and edge clamping (upsampling)
    and scikit-image's order-1 resize without anti-aliasing."""
    transform = pytest.importorskip("skimage.transform")
    x = rng.random(src)
    got = resize_bilinear(x, dst)
    assert got.dtype == np.float32 and got.shape == dst
    want = transform.resize(x, dst, order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)  # torch maps coordinates in float32
    if dst[0] >= src[0]:
        zoomed = ndimage.zoom(x, (dst[0] / src[0], dst[1] / src[1]), order=1, mode="nearest", grid_mode=True)
        np.testing.assert_allclose(got, zoomed, rtol=0, atol=1e-6)


def test_upsample_keeps_rank_and_rejects_other_shapes(rng):
    x = torch.from_numpy(rng.random((1, 2, 5, 5)).astype(np.float32))
    assert upsample_bilinear(x, 10).shape == (1, 2, 10, 10)
    assert upsample_bilinear(x[0, 0], (10, 12)).shape == (10, 12)
    with pytest.raises(ValueError, match=r"score_map must be a \(h, w\) map or an \(N, C, h, w\) batch"):
        gaussian_blur(np.zeros((3, 5, 5), np.float32))
