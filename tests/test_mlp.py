import numpy as np
import pytest

import xmodal
from xmodal import reference

torch = pytest.importorskip("torch")


def cfm_mlp(d_in, d_out, seed):
    torch.manual_seed(seed)
    hidden = (d_in + d_out) // 2
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
        torch.nn.Linear(hidden, d_out),
    )


def as_pairs(module):
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    return [m.weight.detach().numpy() for m in linears], [m.bias.detach().numpy() for m in linears]


@pytest.mark.parametrize(
    ("rows", "d_in", "d_out"), [(0, 8, 4), (1, 5, 3), (300, 96, 144), (257, 768, 1152), (500, 1600, 1700)]
)
def test_mlp_equals_float64_reference_and_torch(rng, rows, d_in, d_out):
    module = cfm_mlp(d_in, d_out, 0)
    x = rng.standard_normal((rows, d_in)).astype(np.float32)
    y = xmodal.ops.mlp(x, module)
    assert y.shape == (rows, d_out) and y.dtype == np.float32
    ref = reference.mlp(x, *as_pairs(module), activation="gelu")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(y, module(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-12, 12, 100_001, dtype=np.float32)[:, None]
    one, zero = np.ones((1, 1), np.float32), np.zeros(1, np.float32)
    y = xmodal.ops.mlp(x, [one, one], [zero, zero], activation="gelu")[:, 0]
    np.testing.assert_allclose(y, reference.gelu(x[:, 0]), atol=1e-6)
    tanh_form = torch.nn.functional.gelu(torch.from_numpy(x[:, 0]), approximate="tanh").numpy()
    assert np.abs(y - tanh_form).max() > 1e-4  # distinguishable from the tanh approximation


def test_relu_identity_and_no_bias(rng):
    x = rng.standard_normal((50, 6)).astype(np.float32)
    w = [rng.standard_normal((9, 6)).astype(np.float32), rng.standard_normal((2, 9)).astype(np.float32)]
    for act in ("relu", "identity"):
        y = xmodal.ops.mlp(x, w, None, activation=act)
        np.testing.assert_allclose(y, reference.mlp(x, w, [None, None], act), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("foreground", [1.0, 0.4, 0.0])
def test_crossmodal_discrepancy_equals_float64_torch_reference(rng, foreground):
    m23, m32 = cfm_mlp(96, 160, 1), cfm_mlp(160, 96, 2)
    rows = 700
    f2d = rng.standard_normal((rows, 96)).astype(np.float32)
    f3d = rng.standard_normal((rows, 160)).astype(np.float32)
    f3d[5] = 0  # an all-zero feature: normalize() keeps it 0 (eps), as torch does
    mask = rng.random(rows) < foreground
    out = xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask)
    # float64 torch reference of what CFM computes
    with torch.no_grad():
        m23d, m32d = m23.double(), m32.double()
        n = torch.nn.functional.normalize
        t2, t3 = torch.from_numpy(f2d).double(), torch.from_numpy(f3d).double()
        ref_3d = (n(m23d(t2), dim=-1) - n(t3, dim=-1)).norm(dim=-1).numpy()
        ref_2d = (n(m32d(t3), dim=-1) - n(t2, dim=-1)).norm(dim=-1).numpy()
        m23.float(), m32.float()
    np.testing.assert_allclose(out.d_3d, np.where(mask, ref_3d, 0), atol=1e-5)
    np.testing.assert_allclose(out.d_2d, np.where(mask, ref_2d, 0), atol=1e-5)
    assert np.all(out.d_2d[~mask] == 0) and np.all(out.d_3d[~mask] == 0)
    ref_np = reference.crossmodal_discrepancy(f2d, f3d, as_pairs(m23), as_pairs(m32), mask)
    np.testing.assert_allclose(out.d_2d, ref_np[0], atol=1e-5)


def test_masked_rows_cost_nothing(rng):
    # Background rows are never read: NaN there would poison any computation that touched them
    # (the finiteness check is on the whole input, so use huge finite values to prove it).
    m23, m32 = cfm_mlp(8, 12, 3), cfm_mlp(12, 8, 4)
    f2d = rng.standard_normal((100, 8)).astype(np.float32)
    f3d = rng.standard_normal((100, 12)).astype(np.float32)
    mask = np.zeros(100, bool)
    mask[::10] = True
    f2d_bg, f3d_bg = f2d.copy(), f3d.copy()
    f2d_bg[~mask] = 3e38
    f3d_bg[~mask] = -3e38
    a = xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask)
    b = xmodal.ops.crossmodal_discrepancy(f2d_bg, f3d_bg, m23, m32, mask)
    np.testing.assert_array_equal(a.d_2d, b.d_2d)
    np.testing.assert_array_equal(a.d_3d, b.d_3d)


def test_torch_in_torch_out_and_mask_shapes(rng):
    m23, m32 = cfm_mlp(8, 12, 3), cfm_mlp(12, 8, 4)
    f2d = torch.from_numpy(rng.standard_normal((64, 8)).astype(np.float32))
    f3d = torch.from_numpy(rng.standard_normal((64, 12)).astype(np.float32))
    mask = torch.from_numpy(rng.random((8, 8)) < 0.5)  # an (H, W) mask is flattened
    out = xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask)
    assert isinstance(out.d_2d, torch.Tensor)
    ref = xmodal.ops.crossmodal_discrepancy(f2d.numpy(), f3d.numpy(), m23, m32, mask.numpy())
    np.testing.assert_array_equal(out.d_3d.numpy(), ref.d_3d)


def test_bad_input(rng):
    m23, m32 = cfm_mlp(8, 12, 3), cfm_mlp(12, 8, 4)
    f2d = np.zeros((10, 8), np.float32)
    f3d = np.zeros((10, 12), np.float32)
    with pytest.raises(ValueError, match="mask must have one entry per row"):
        xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, np.ones(9, bool))
    with pytest.raises(ValueError, match=r"mlp_2d3d must map 8 -> 12"):
        xmodal.ops.crossmodal_discrepancy(f2d, f3d, m32, m23)
    with pytest.raises(ValueError, match="f3d must have as many rows"):
        xmodal.ops.crossmodal_discrepancy(f2d, f3d[:5], m23, m32)
    with pytest.raises(ValueError, match="only the exact erf GELU"):
        xmodal.ops.mlp(f2d, torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU("tanh"), torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="layer 1 takes 5 features but layer 0 produces 4"):
        xmodal.ops.mlp(f2d, [np.zeros((4, 8), np.float32), np.zeros((2, 5), np.float32)])
    with pytest.raises(ValueError, match="x must have 7 columns"):
        xmodal.ops.mlp(f2d, [np.zeros((4, 7), np.float32)])
    with pytest.raises(ValueError, match="activation must be"):
        xmodal.ops.mlp(f2d, [np.zeros((4, 8), np.float32)], activation="swish")
    with pytest.raises(ValueError, match="x contains NaN"):
        xmodal.ops.mlp(np.full((2, 8), np.nan, np.float32), [np.zeros((4, 8), np.float32)])


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    m23, m32 = cfm_mlp(768, 1152, 5), cfm_mlp(1152, 768, 6)
    f2d = rng.standard_normal((20000, 768)).astype(np.float32)
    f3d = rng.standard_normal((20000, 1152)).astype(np.float32)
    mask = rng.random(20000) < 0.6
    cpu = xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask)
    gpu = xmodal.ops.crossmodal_discrepancy(
        torch.from_numpy(f2d).cuda(), torch.from_numpy(f3d).cuda(), m23.cuda(), m32.cuda(),
        torch.from_numpy(mask).cuda(),
    )
    np.testing.assert_allclose(gpu.d_2d.cpu().numpy(), cpu.d_2d, atol=1e-4)
    np.testing.assert_allclose(gpu.d_3d.cpu().numpy(), cpu.d_3d, atol=1e-4)
    y = xmodal.ops.mlp(torch.from_numpy(f2d).cuda(), m23.cuda())
    np.testing.assert_allclose(y.cpu().numpy(), xmodal.ops.mlp(f2d, m23.cpu()), rtol=1e-4, atol=1e-4)


# --- BridgeNet's heads: LeakyReLU, sigmoid output, bias-free layers, folded BatchNorm ----------


def bridgenet_heads(dim, hidden, seed, dtype=torch.float32, adaptor_bias=True):
    """Adaptor Linear and the discriminator 2 x [Linear + BatchNorm1d + LeakyReLU(0.3)] ->
    Linear(no bias) -> Sigmoid, with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    adaptor = torch.nn.Linear(dim, dim, bias=adaptor_bias)
    layers = []
    for d_in in (dim, hidden):
        bn = torch.nn.BatchNorm1d(hidden)
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        layers += [torch.nn.Linear(d_in, hidden), bn, torch.nn.LeakyReLU(0.3)]
    disc = torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 1, bias=False), torch.nn.Sigmoid())
    return adaptor.to(dtype).eval(), disc.to(dtype).eval()


def folded_heads(adaptor, disc):
    first = xmodal.ops.fold_linears(adaptor, xmodal.ops.fold_linear_batchnorm(disc[0], disc[1]))
    second = xmodal.ops.fold_linear_batchnorm(disc[3], disc[4])
    last = xmodal.ops.LinearParams(disc[6].weight.detach(), None)
    return [first.weight, second.weight, last.weight], [first.bias, second.bias, last.bias]


@pytest.mark.parametrize("adaptor_bias", [True, False])
def test_bridgenet_heads_after_folding_equal_torch(rng, adaptor_bias):
    adaptor, disc = bridgenet_heads(96, 80, 0, adaptor_bias=adaptor_bias)
    x = rng.standard_normal((300, 96)).astype(np.float32)
    weights, biases = folded_heads(adaptor, disc)
    assert biases[-1] is None
    y = xmodal.ops.mlp(torch.from_numpy(x), weights, biases, activation="leaky_relu", negative_slope=0.3,
                       output_activation="sigmoid")
    assert y.shape == (300, 1)
    assert y.dtype == torch.float32
    with torch.no_grad():
        want = disc(adaptor(torch.from_numpy(x)))
        want64 = disc.double()(adaptor.double()(torch.from_numpy(x).double()))
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), want64.numpy(), rtol=1e-5, atol=1e-6)
    ref = reference.mlp(x, [w.double().numpy() for w in weights],
                        [None if b is None else b.double().numpy() for b in biases],
                        activation="leaky_relu", negative_slope=0.3, output_activation="sigmoid")
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    # The unfolded modules directly: BatchNorm folded on the fly, no activation after the adaptor.
    direct = xmodal.ops.mlp(x, torch.nn.Sequential(adaptor.float(), disc.float()))
    np.testing.assert_allclose(direct, want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_folding_leaves_the_outputs_unchanged(rng, dtype):
    adaptor, disc = bridgenet_heads(24, 40, 1, dtype=dtype)
    x = torch.from_numpy(rng.standard_normal((50, 24))).to(dtype)
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    with torch.no_grad():
        folded = xmodal.ops.fold_linear_batchnorm(disc[0], disc[1])
        assert folded.weight.dtype == dtype
        assert folded.bias.dtype == dtype
        np.testing.assert_allclose(torch.nn.functional.linear(x, *folded), disc[1](disc[0](x)), rtol=rtol, atol=rtol)
        chained = xmodal.ops.fold_linears(adaptor, folded)
        np.testing.assert_allclose(torch.nn.functional.linear(x, *chained), disc[1](disc[0](adaptor(x))),
                                   rtol=rtol, atol=10 * rtol)
        # numpy pairs and a BatchNorm state-dict mapping give the same numbers, as numpy
        state = {k: v.numpy() for k, v in disc[1].state_dict().items() if k != "num_batches_tracked"}
        pair = (disc[0].weight.numpy(), disc[0].bias.numpy())
        from_numpy = xmodal.ops.fold_linear_batchnorm(pair, {**state, "eps": disc[1].eps})
        assert isinstance(from_numpy.weight, np.ndarray)
        ulps = 4 * np.finfo(from_numpy.weight.dtype).eps  # torch and numpy may round a reciprocal differently
        np.testing.assert_allclose(from_numpy.weight, folded.weight.numpy(), rtol=ulps)
        np.testing.assert_allclose(from_numpy.bias, folded.bias.numpy(), rtol=ulps)


def test_fold_linears_bias_combinations(rng):
    w1, w2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 5))
    b1, b2 = rng.standard_normal(5), rng.standard_normal(4)
    x = rng.standard_normal((7, 3))
    for first_bias, second_bias in ((None, None), (b1, None), (None, b2), (b1, b2)):
        folded = xmodal.ops.fold_linears((w1, first_bias), (w2, second_bias))
        want = reference.mlp(x, [w1, w2], [first_bias, second_bias], activation="identity")
        got = x @ folded.weight.T + (0 if folded.bias is None else folded.bias)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert (folded.bias is None) == (first_bias is None and second_bias is None)


def test_sigmoid_and_leaky_relu_elementwise():
    from scipy.special import expit

    x = np.linspace(-100, 100, 200_001, dtype=np.float32)[:, None]
    one = np.ones((1, 1), np.float32)
    y = xmodal.ops.mlp(x, [one], [None], output_activation="sigmoid")[:, 0]
    want = expit(x[:, 0].astype(np.float64))
    assert np.max(np.abs(y - want)) < 2e-7
    normal = want > 1e-30  # below e^-87 the float32 exp underflows; those come out as ~1.6e-38
    assert np.max(np.abs(y[normal] / want[normal] - 1)) < 1e-6
    slope = np.float32(0.3)
    leaky = xmodal.ops.mlp(x, [one, one], [None, None], activation="leaky_relu", negative_slope=0.3)[:, 0]
    np.testing.assert_array_equal(leaky, np.where(x[:, 0] > 0, x[:, 0], slope * x[:, 0]))
    torch_leaky = torch.nn.functional.leaky_relu(torch.from_numpy(x[:, 0]), 0.3).numpy()
    np.testing.assert_array_equal(leaky, torch_leaky)


def test_module_with_mixed_activations_runs_as_torch(rng):
    torch.manual_seed(3)
    module = torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16), torch.nn.GELU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
        torch.nn.Linear(16, 10), torch.nn.Linear(10, 8), torch.nn.LeakyReLU(0.2), torch.nn.Dropout(0.5),
        torch.nn.Linear(8, 3),
    ).eval()
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    x = rng.standard_normal((40, 12)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(xmodal.ops.mlp(x, module), want, rtol=1e-5, atol=1e-5)


def test_extended_mlp_bad_input(rng):
    x = np.zeros((3, 4), np.float32)
    w = [np.zeros((2, 4), np.float32)]
    with pytest.raises(ValueError, match="output_activation must be"):
        xmodal.ops.mlp(x, w, output_activation="softmax")
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        xmodal.ops.mlp(x, w, activation="leaky_relu", negative_slope=float("nan"))
    training = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match=r"BatchNorm1d in training mode; call \.eval\(\)"):
        xmodal.ops.mlp(x, training)
    after_activation = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU(), torch.nn.BatchNorm1d(2)).eval()
    with pytest.raises(ValueError, match="BatchNorm1d must directly follow a Linear layer"):
        xmodal.ops.mlp(x, after_activation)
    with pytest.raises(ValueError, match="must start with a Linear layer; found ReLU"):
        xmodal.ops.mlp(x, torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"contains Tanh; only Linear, BatchNorm1d \(eval\)"):
        xmodal.ops.mlp(x, torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh()))
    with pytest.raises(ValueError, match="second takes 3 features but first produces 2"):
        xmodal.ops.fold_linears(torch.nn.Linear(4, 2), torch.nn.Linear(3, 1))
    with pytest.raises(TypeError, match=r"second must be a torch\.nn\.Linear or a"):
        xmodal.ops.fold_linears(torch.nn.Linear(4, 2), torch.nn.ReLU())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        xmodal.ops.fold_linear_batchnorm(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="'running_var' entry"):
        xmodal.ops.fold_linear_batchnorm((np.zeros((2, 4)), None), {"running_mean": np.zeros(2)})
    wrong_size = {"running_mean": np.zeros(3), "running_var": np.ones(3)}
    with pytest.raises(ValueError, match=r"batchnorm running_mean must have shape \(2,\)"):
        xmodal.ops.fold_linear_batchnorm((np.zeros((2, 4)), None), wrong_size)
    with pytest.raises(TypeError, match="linear weight must be a floating-point array"):
        xmodal.ops.fold_linear_batchnorm((np.zeros((2, 4), np.int64), None), torch.nn.BatchNorm1d(2))


@pytest.mark.cuda
def test_cuda_bridgenet_heads_match_cpu(rng):
    adaptor, disc = bridgenet_heads(3072, 3072, 4)
    weights, biases = folded_heads(adaptor, disc)
    x = torch.from_numpy(rng.standard_normal((5184, 3072)).astype(np.float32))
    kwargs = {"activation": "leaky_relu", "negative_slope": 0.3, "output_activation": "sigmoid"}
    cpu = xmodal.ops.mlp(x, weights, biases, **kwargs)
    gpu = xmodal.ops.mlp(x.cuda(), [w.cuda() for w in weights], [None if b is None else b.cuda() for b in biases],
                         **kwargs)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-4, atol=1e-5)
