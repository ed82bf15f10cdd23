"""BridgeNet's pieces against float64 / peer references: input path, patch embedding, heads
folding, MGAG noise, UTAG on BridgeNet's inputs, the scipy-reflect Gaussian blur."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xmodal import reference  # noqa: E402
from xmodal.data import Sample, synthetic  # noqa: E402
from xmodal.data.preprocess import depth_image  # noqa: E402
from xmodal.methods.bridgenet import _heads, _inputs  # noqa: E402
from xmodal.methods.bridgenet._embedding import PatchEmbedding, adaptive_pool_matrix  # noqa: E402

# --- patch embedding --------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "out"), [(36, 12), (4608, 1536), (9216, 1536), (360, 1536), (7, 5), (5, 7)])
def test_adaptive_pool_matrix_is_torch_adaptive_avg_pool1d(length, out):
    x = torch.randn(3, 1, length, dtype=torch.float64)
    expected = torch.nn.functional.adaptive_avg_pool1d(x, out)[:, 0].numpy()
    np.testing.assert_allclose(x[:, 0].numpy() @ adaptive_pool_matrix(length, out).T, expected, atol=1e-12)


@pytest.mark.parametrize(("channels", "grids", "pretrain", "embed"), [
    ((512, 1024), ((8, 8), (4, 4)), 1536, 1536),  # WideResNet-50-2 layer2 + layer3 (BridgeNet)
    ((40, 80), ((10, 10), (5, 5)), 96, 64),  # EfficientNet-Lite0 stages 3 + 4, pooled down
    ((40, 80), ((6, 6), (3, 3)), 1536, 1536),  # pooled up (bins overlap)
    ((5, 7, 3), ((9, 7), (5, 4), (3, 2)), 17, 11),  # odd sizes, three layers, odd grids
])
def test_patch_embedding_equals_unfold_formulation(channels, grids, pretrain, embed):
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
            for c, (h, w) in zip(channels, grids, strict=True)]
    expected = reference.patch_embedding_unfold(maps, pretrain, embed)
    got = PatchEmbedding(channels, pretrain, embed)(maps)
    h, w = grids[0]
    assert got.shape == (2, embed, h, w) and got.dtype == torch.float64
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).reshape(-1, embed).numpy(), expected.numpy(), atol=1e-12)


def test_patch_embedding_float32_and_bad_input():
    maps = [torch.randn(1, 512, 6, 6), torch.randn(1, 1024, 3, 3)]
    got = PatchEmbedding((512, 1024))(maps).permute(0, 2, 3, 1).reshape(-1, 1536)
    expected = reference.patch_embedding_unfold([m.double() for m in maps]).float()
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="maps must be 2 feature maps"):
        PatchEmbedding((512, 1024))([torch.randn(1, 512, 6, 6)])


# --- heads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks", "bias"), [(2, False), (2, True), (1, True), (0, False)])
def test_folded_heads_through_mlp_equal_the_modules(blocks, bias):
    from xmodal.ops import mlp

    torch.manual_seed(0)
    heads = _heads.Heads(48, 40, blocks, adaptor_bias=bias)
    for m in heads.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    heads.eval()
    x = torch.randn(300, 48)
    with torch.no_grad():
        expected = heads(x).numpy()
    weights, biases = _heads.fold_heads(heads)
    assert len(weights) == blocks + 1 and weights[0].shape == (40 if blocks else 1, 48)
    got = mlp(x, weights, biases, activation="leaky_relu", negative_slope=0.3, output_activation="sigmoid")
    np.testing.assert_allclose(got[:, 0].numpy(), expected, atol=2e-6)


def test_heads_initialisation_and_shapes():
    torch.manual_seed(0)
    heads = _heads.Heads(3072, 1536, 2, adaptor_bias=False)
    assert heads.adaptor.bias is None and heads.adaptor.weight.shape == (3072, 3072)
    norms = [m for m in heads.discriminator if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2 and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    slopes = [m.negative_slope for m in heads.discriminator if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.3, 0.3]
    last = [m for m in heads.discriminator if isinstance(m, torch.nn.Linear)][-1]
    assert last.bias is None and last.out_features == 1
    # Xavier normal: std sqrt(2 / (fan_in + fan_out))
    assert heads.adaptor.weight.std().item() == pytest.approx(np.sqrt(2 / 6144), rel=0.01)
    assert _heads.Heads(64, 32, 2, adaptor_bias=True).adaptor.bias is not None


def test_focal_loss_matches_the_formula():
    scores = torch.tensor([0.9, 0.2, 0.6, 0.01], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    smooth = 1e-5
    expected = []
    for s, t in zip(scores.tolist(), target.tolist(), strict=True):
        p_true = s if t == 1 else 1 - s
        pt = p_true * (1 - smooth) + (1 - p_true) * smooth + smooth
        expected.append(-((1 - pt) ** 2) * np.log(pt))
    assert _heads.focal_loss(scores, target).item() == pytest.approx(np.mean(expected), rel=1e-12)


# --- MGAG -------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["both", "rgb", "depth"])
def test_gaussian_noise_levels_and_modality(modality):
    rgb, depth = torch.zeros(4, 3, 64, 64), torch.zeros(4, 3, 64, 64)
    g = torch.Generator().manual_seed(1)
    noisy_rgb, noisy_depth = _heads.gaussian_noise(rgb, depth, 0.12, modality, g)
    for tensor, used in ((noisy_rgb, modality in ("both", "rgb")), (noisy_depth, modality in ("both", "depth"))):
        if used:
            assert tensor.std().item() == pytest.approx(0.12, rel=0.02)
            assert abs(tensor.mean().item()) < 0.002
        else:
            assert torch.all(tensor == 0)


def test_modality_draws_are_one_third_each():
    from xmodal.methods.bridgenet._training import draw_modality

    rng = np.random.default_rng(0)
    draws = [draw_modality(rng) for _ in range(6000)]
    for choice in ("both", "rgb", "depth"):
        assert draws.count(choice) / len(draws) == pytest.approx(1 / 3, abs=0.025)


def test_noise_scales_follow_the_reference():
    from xmodal.methods.bridgenet import NOISE_SCALES, BridgeNet

    assert NOISE_SCALES == (6.0, 2.0, 1.0)
    assert BridgeNet(progress=False).config["noise"] == 0.02


# --- inputs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    s, _ = synthetic.make_sample("puck", "crack", image_size=128, seed=4)
    return s


def test_inputs_at_native_size_are_the_depth_image_quantised(sample):
    x = _inputs.prepare(sample, 128)
    depth, fg = depth_image(sample.xyz, background="auto")
    np.testing.assert_array_equal(x.rgb, sample.rgb)
    np.testing.assert_array_equal(x.depth, np.floor(depth * np.float32(255)) / np.float32(255))
    np.testing.assert_array_equal(x.foreground, fg)
    raw = _inputs.prepare(sample, 128, quantize_depth=False)
    np.testing.assert_array_equal(raw.depth, depth)


def test_inputs_resized_and_cropped(sample):
    x = _inputs.prepare(sample, 64)
    assert x.rgb.shape == (64, 64, 3) and x.rgb.dtype == np.uint8
    assert x.depth.shape == (64, 64) and 0 <= x.depth.min() and x.depth.max() <= 1
    assert np.all(np.isclose(x.depth * 255, np.round(x.depth * 255), atol=1e-4))
    assert x.foreground.dtype == bool and 0.05 < x.foreground.mean() < 0.95
    assert _inputs.crop_geometry(100, 150, 64) == (64, 96, 0, 16)
    assert _inputs.crop_geometry(150, 100, 64) == (96, 64, 16, 0)
    assert _inputs.crop_geometry(100, 105, 64) == (64, 67, 0, 2)  # round(1.5) = 2 (half to even)
    wide = Sample(rgb=np.ascontiguousarray(sample.rgb[:96]), xyz=np.ascontiguousarray(sample.xyz[:96]))
    assert _inputs.prepare(wide, 64).rgb.shape == (64, 64, 3)
    gt = np.zeros((128, 128), bool)
    gt[30:60, 40:90] = True
    mask = _inputs.target_mask(gt, 64)
    assert mask.shape == (64, 64) and mask[15:30, 20:45].all() and mask.sum() == pytest.approx(15 * 25, rel=0.1)


def test_utag_on_bridgenet_inputs_stays_in_the_foreground(sample):
    from xmodal.data.synthesis import TextureAnomalyGenerator

    x = _inputs.prepare(sample, 128)
    gen = TextureAnomalyGenerator(seed=0)
    betas = []
    for i in range(12):
        t = gen(rgb=x.rgb, depth=x.depth, foreground=x.foreground, rng=i)
        assert t.mask.any() and not np.any(t.mask & ~x.foreground)
        assert t.label.shape == (16, 16) and t.label.any()
        betas.append(t.beta)
        changed = np.any(t.rgb != x.rgb, axis=-1) | (t.depth != x.depth)
        assert not np.any(changed & ~t.mask)
    assert min(betas) >= 0.2 and max(betas) <= 0.8


# --- smoothing --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 40), (72, 50), (9, 30)])
def test_gaussian_blur_reflect_is_scipy_gaussian_filter(shape):
    ndimage = pytest.importorskip("scipy.ndimage")
    from xmodal.methods.postprocess import gaussian_blur

    x = np.random.default_rng(0).random(shape).astype(np.float32)
    expected = ndimage.gaussian_filter(x.astype(np.float64), sigma=4)  # mode="reflect" is scipy's default
    np.testing.assert_allclose(gaussian_blur(x, 4.0, mode="reflect").numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="mode must be"):
        gaussian_blur(x, 4.0, mode="wrap")
