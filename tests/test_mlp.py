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


@pytest.mark.parametrize(("rows", "d_in", "d_out"), [(0, 8, 4), (1, 5, 3), (300, 96, 144), (257, 768, 1152)])
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
        torch.from_numpy(f2d).cuda(), torch.from_numpy(f3d).cuda(), m23.cuda(), m32.cuda(), torch.from_numpy(mask).cuda()
    )
    np.testing.assert_allclose(gpu.d_2d.cpu().numpy(), cpu.d_2d, atol=1e-4)
    np.testing.assert_allclose(gpu.d_3d.cpu().numpy(), cpu.d_3d, atol=1e-4)
    y = xmodal.ops.mlp(torch.from_numpy(f2d).cuda(), m23.cuda())
    np.testing.assert_allclose(y.cpu().numpy(), xmodal.ops.mlp(f2d, m23.cpu()), rtol=1e-4, atol=1e-4)
