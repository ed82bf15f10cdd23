"""The coupling blocks shared by FastFlow, CFlow, CS-Flow and DifferNet: invertibility and exact
log-determinants against autograd Jacobians (float64, small inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xmodal.methods._flows.coupling import (
    Flow,
    OneSidedCoupling,
    PerScale,
    TwoSidedCoupling,
    atan_clamp,
    conv_subnet,
    fc_subnet,
    log_likelihood,
)


def _randomise(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Random parameters large enough that every block is far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _jacobian_logdet(fn, x: torch.Tensor) -> float:
    """log|det dfn/dx| of one sample by autograd (x without the batch dimension)."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v[None]).reshape(-1), x)
    jac = jac.reshape(x.numel(), x.numel())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return float(logabs)


def _one_sided_flow(channels, spatial, cond_channels=0, permutation="hard"):
    make = conv_subnet(3, 1.0) if spatial else fc_subnet(hidden_factor=2.0)
    blocks = [OneSidedCoupling(channels, make, cond_channels=cond_channels, clamp=1.9,
                               permutation=permutation, seed=i, spatial=spatial) for i in range(3)]
    return _randomise(Flow(blocks).double(), 1)


@pytest.mark.parametrize(("channels", "spatial", "permutation"),
                         [(4, True, "hard"), (5, True, "hard"), (5, False, "soft"), (3, False, "hard")])
def test_one_sided_invertible_and_exact_logdet(channels, spatial, permutation):
    torch.manual_seed(0)
    flow = _one_sided_flow(channels, spatial, permutation=permutation)
    shape = (2, channels, 3, 2) if spatial else (2, channels)
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        z, logdet = flow(x)
    assert z.shape == x.shape and logdet.shape == (2,)
    torch.testing.assert_close(flow.inverse(z), x, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(z, x)  # the flow is not the identity
    # a float32-stored rotation ("soft") has |det| = 1 to ~1e-7 only; a permutation exactly
    tol = 1e-6 if permutation == "soft" else 1e-9
    for i in range(2):
        expected = _jacobian_logdet(lambda v: flow(v)[0], x[i])
        assert float(logdet[i]) == pytest.approx(expected, rel=tol, abs=tol)


def test_one_sided_conditional_logdet_and_inverse():
    torch.manual_seed(1)
    flow = _one_sided_flow(6, False, cond_channels=4, permutation="soft")
    x = torch.randn(3, 6, dtype=torch.float64)
    cond = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        z, logdet = flow(x, cond)
    torch.testing.assert_close(flow.inverse(z, cond), x, rtol=1e-9, atol=1e-9)
    for i in range(3):
        expected = _jacobian_logdet(lambda v, c=cond[i : i + 1]: flow(v, c)[0], x[i])
        assert float(logdet[i]) == pytest.approx(expected, rel=1e-6, abs=1e-6)  # soft: see above
    # the condition changes the output: it is used
    assert not torch.allclose(flow(x, cond + 1)[0], z)


def test_one_sided_starts_as_permutation_with_unit_scale():
    block = OneSidedCoupling(4, conv_subnet(1), seed=3)
    nn.init.zeros_(block.subnet[2].weight)
    nn.init.zeros_(block.subnet[2].bias)
    x = torch.randn(2, 4, 3, 3)
    y, logdet = block(x)
    torch.testing.assert_close(y, x[:, torch.argmax(block.w_perm, dim=1)])
    torch.testing.assert_close(logdet, torch.zeros(2), atol=1e-6, rtol=0)


class _CrossScale(nn.Module):
    """A toy cross-scale subnet: each output sees its own scale and the other scale's mean."""

    def __init__(self, cin, cout):
        super().__init__()
        self.own = nn.Conv2d(cin, cout, 3, padding=1)
        self.other = nn.Linear(cin, cout)

    def forward(self, xs):
        means = [x.mean(dim=(2, 3)) for x in xs]
        return [self.own(x) + self.other(means[1 - i])[:, :, None, None] for i, x in enumerate(xs)]


@pytest.mark.parametrize("channels", [4, 5])
def test_two_sided_multiscale_invertible_and_exact_logdet(channels):
    torch.manual_seed(2)
    flow = _randomise(Flow([TwoSidedCoupling(channels, _CrossScale, clamp=3.0, seed=i) for i in range(2)]).double(), 4)
    xs = [torch.randn(2, channels, 4, 4, dtype=torch.float64), torch.randn(2, channels, 2, 2, dtype=torch.float64)]
    with torch.no_grad():
        zs, logdet = flow(xs)
    for a, b in zip(flow.inverse(zs), xs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    sizes = [x[0].numel() for x in xs]
    for i in range(2):
        flat = torch.cat([x[i].reshape(-1) for x in xs])

        def fn(v, sizes=sizes):
            parts = torch.split(v[0], sizes)
            ins = [p.reshape(1, *x.shape[1:]) for p, x in zip(parts, xs, strict=True)]
            return torch.cat([z.reshape(-1) for z in flow(ins)[0]])

        expected = _jacobian_logdet(fn, flat)
        assert float(logdet[i]) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_two_sided_vector_flow_and_likelihood():
    torch.manual_seed(3)
    flow = _randomise(Flow([TwoSidedCoupling(7, lambda i, o: PerScale(fc_subnet(16)(i, o)), seed=i)
                            for i in range(3)]).double(), 5, scale=0.3)
    x = torch.randn(4, 7, dtype=torch.float64)
    with torch.no_grad():
        (z,), logdet = flow([x])
    torch.testing.assert_close(flow.inverse([z])[0], x, rtol=1e-9, atol=1e-9)
    expected = _jacobian_logdet(lambda v: flow([v])[0][0], x[0])
    assert float(logdet[0]) == pytest.approx(expected, rel=1e-9)
    # log-likelihood by the change of variables, written out
    direct = -0.5 * (z**2).sum(1) - 0.5 * 7 * math.log(2 * math.pi) + logdet
    torch.testing.assert_close(log_likelihood([z], logdet), direct)
    torch.testing.assert_close(log_likelihood(z, logdet), direct)


def test_atan_clamp_bounds_and_slope():
    s = torch.tensor([-1e6, -1.0, 0.0, 1e-4, 1e6], dtype=torch.float64)
    out = atan_clamp(s, 3.0)
    assert float(out.abs().max()) < 3.0 * 0.636 * np.pi / 2 + 1e-9
    assert float(out[3] / s[3]) == pytest.approx(0.636, rel=1e-6)
