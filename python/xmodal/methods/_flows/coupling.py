"""The invertible coupling blocks of the flow methods (FastFlow, CFlow, CS-Flow, DifferNet), written once.

Two affine couplings cover the four papers:

- :class:`OneSidedCoupling`, the "all-in-one" block that FastFlow and CFLOW-AD build their flows
  from (both papers' code uses FrEIA's ``AllInOneBlock``): the second half of the channels
  gets an affine map computed from the first half (and, for CFlow, a condition vector), with
  the subnet output scaled by 0.1 and the log-scale soft-clamped as ``clamp * tanh(.)``; then
  a fixed channel mixing (a hard permutation, or a random rotation: "soft permutation") and a
  learned global affine scaling (softplus-parameterised, starting at 1).
- :class:`TwoSidedCoupling`, the Glow/RealNVP coupling of DifferNet and CS-Flow: both halves
  are transformed in turn, the log-scale soft-clamped as ``clamp * 0.636 * atan(s / clamp)``
  (|log-scale| < ~clamp), then a fixed random channel permutation. Its input is a list of
  tensors that share the channel count, so CS-Flow's cross-scale subnets see every scale at
  once; a single-tensor flow is the list of one.

Both work on vectors (B, C) and on maps (B, C, H, W). ``forward`` returns ``(z, log|det J|)``
with the log-determinant per sample (B,), exact (each block is triangular up to a fixed
orthogonal mixing and a diagonal scaling); ``inverse`` undoes ``forward``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Flow", "OneSidedCoupling", "PerScale", "TwoSidedCoupling", "atan_clamp", "conv_subnet", "fc_subnet",
           "log_likelihood"]

LOG_2PI = math.log(2.0 * math.pi)


def atan_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """DifferNet / CS-Flow soft clamping of a log-scale: ``clamp * 0.636 * atan(s / clamp)``
    (0.636 ~ 2/pi, so the bound is ~clamp and the slope at 0 is ~0.64)."""
    return clamp * 0.636 * torch.atan(s / clamp)


def log_likelihood(z, logdet: torch.Tensor) -> torch.Tensor:
    """log p(x) per sample under a standard normal base: -0.5 (|z|^2 + D log 2 pi) + log|det J|.

    ``z`` is a tensor (B, ...) or a list of them (one per scale); D counts every dimension."""
    zs = z if isinstance(z, (list, tuple)) else [z]
    sq = sum(t.pow(2).flatten(1).sum(1) for t in zs)
    dims = sum(t[0].numel() for t in zs)
    return -0.5 * (sq + dims * LOG_2PI) + logdet


def _sum_per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def conv_subnet(kernel: int, hidden_ratio: float = 1.0):
    """FastFlow's subnet: conv k x k -> ReLU -> conv k x k ("same" padding), hidden channels =
    int(input channels x hidden_ratio)."""

    def make(cin: int, cout: int) -> nn.Module:
        hidden = max(1, int(cin * hidden_ratio))
        return nn.Sequential(nn.Conv2d(cin, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                             nn.Conv2d(hidden, cout, kernel, padding=kernel // 2))

    return make


def fc_subnet(hidden: int | None = None, hidden_factor: float = 2.0):
    """Linear -> ReLU -> Linear: CFLOW-AD's (hidden = 2 x input) and DifferNet's (hidden = 2048)."""

    def make(cin: int, cout: int) -> nn.Module:
        width = hidden if hidden is not None else max(1, int(cin * hidden_factor))
        return nn.Sequential(nn.Linear(cin, width), nn.ReLU(), nn.Linear(width, cout))

    return make


class PerScale(nn.Module):
    """Wraps a one-tensor subnet for :class:`TwoSidedCoupling` (input and output: a list of one)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.module(x) for x in xs]


def _mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y[:, o] = sum_c w[o, c] x[:, c] on (B, C) or (B, C, H, W)."""
    if x.ndim == 2:
        return F.linear(x, w)
    return F.conv2d(x, w[:, :, None, None])


class OneSidedCoupling(nn.Module):
    """FastFlow's / CFLOW-AD's coupling step (see the module docstring).

    Args:
        channels: C of the input (B, C) or (B, C, H, W).
        make_subnet: ``make_subnet(cin, cout)`` -> module mapping (B, cin, ...) to (B, cout, ...).
        cond_channels: channels of the condition concatenated to the subnet input (CFlow: 128).
        clamp: bound of the log-scale (FastFlow 2.0, CFlow 1.9).
        permutation: "hard" (random channel permutation, FastFlow) or "soft" (random rotation,
            CFLOW-AD's code).
        seed: draws the fixed permutation.
        spatial: True for (B, C, H, W) inputs (the global scale broadcasts over H, W).
    """

    def __init__(self, channels: int, make_subnet, *, cond_channels: int = 0, clamp: float = 2.0,
                 permutation: str = "hard", seed: int = 0, spatial: bool = True):
        super().__init__()
        self.split1, self.split2 = channels - channels // 2, channels // 2
        self.clamp = float(clamp)
        self.subnet = make_subnet(self.split1 + cond_channels, 2 * self.split2)
        rng = np.random.default_rng(seed)
        if permutation == "soft":
            from scipy.stats import special_ortho_group

            w = special_ortho_group.rvs(channels, random_state=rng) if channels > 1 else np.eye(1)
        else:
            w = np.eye(channels)[rng.permutation(channels)]
        self.register_buffer("w_perm", torch.from_numpy(np.ascontiguousarray(w)).float())
        # a hard permutation is applied as a gather, not as the C x C product with w_perm (which
        # FrEIA computes): exact, and a 256-channel 56 x 56 map saves 0.4 GFLOP per block
        self.hard = permutation != "soft"
        if self.hard:
            order = np.argmax(w, axis=1)
            self.register_buffer("order", torch.from_numpy(order), persistent=False)
            self.register_buffer("order_inv", torch.from_numpy(np.argsort(order)), persistent=False)
        shape = (1, channels, 1, 1) if spatial else (1, channels)
        # softplus parameterisation (beta 0.5, x 0.1): the global scale starts at exactly 1
        self.global_scale = nn.Parameter(torch.full(shape, 2.0 * math.log(math.exp(0.5 * 10.0) - 1.0)))
        self.global_offset = nn.Parameter(torch.zeros(shape))

    def _scale(self) -> torch.Tensor:
        return 0.1 * F.softplus(self.global_scale, beta=0.5)

    def _affine(self, x1: torch.Tensor, cond) -> tuple[torch.Tensor, torch.Tensor]:
        inp = x1 if cond is None else torch.cat([x1, cond.to(x1.dtype)], 1)
        a = self.subnet(inp) * 0.1
        return self.clamp * torch.tanh(a[:, : self.split2]), a[:, self.split2 :]

    def forward(self, x: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = torch.split(x, [self.split1, self.split2], dim=1)
        s, t = self._affine(x1, cond)
        y = torch.cat([x1, x2 * torch.exp(s) + t], 1)
        scale = self._scale()
        y = y * scale + self.global_offset
        y = y[:, self.order] if self.hard else _mix(y, self.w_perm.to(y.dtype))
        pixels = x[0, 0].numel()
        return y, _sum_per_sample(s) + pixels * torch.log(scale).sum()

    def inverse(self, y: torch.Tensor, cond=None) -> torch.Tensor:
        # the exact inverse of the stored matrix: a float32-stored rotation is orthogonal to ~1e-7 only
        if self.hard:
            y = y[:, self.order_inv]
        else:
            y = _mix(y, torch.linalg.inv(self.w_perm.double()).to(y.dtype))
        y = (y - self.global_offset) / self._scale()
        y1, y2 = torch.split(y, [self.split1, self.split2], dim=1)
        s, t = self._affine(y1, cond)
        return torch.cat([y1, (y2 - t) * torch.exp(-s)], 1)


class TwoSidedCoupling(nn.Module):
    """DifferNet's / CS-Flow's Glow coupling on a list of tensors sharing C (see module docstring).

    Args:
        channels: C of every input tensor.
        make_subnet: ``make_subnet(cin, cout)`` -> module mapping a list of (B, cin, ...) to a
            list of (B, cout, ...) (:class:`PerScale` wraps a one-tensor subnet).
        clamp: soft bound of the log-scales (DifferNet and CS-Flow: 3).
        seed: draws the channel permutation that follows the coupling.
    """

    def __init__(self, channels: int, make_subnet, *, clamp: float = 3.0, seed: int = 0):
        super().__init__()
        self.split1, self.split2 = channels // 2, channels - channels // 2
        self.clamp = float(clamp)
        self.s1 = make_subnet(self.split1, 2 * self.split2)
        self.s2 = make_subnet(self.split2, 2 * self.split1)
        perm = np.random.default_rng(seed).permutation(channels)
        self.register_buffer("perm", torch.from_numpy(perm))
        self.register_buffer("perm_inv", torch.from_numpy(np.argsort(perm)))

    def _split(self, xs):
        return zip(*(torch.split(x, [self.split1, self.split2], dim=1) for x in xs), strict=True)

    def forward(self, xs: list[torch.Tensor], cond=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        del cond  # the papers' Glow couplings are unconditional
        x1s, x2s = self._split(xs)
        logdet = 0.0
        y1s = []
        for x1, r in zip(x1s, self.s2(list(x2s)), strict=True):
            s = atan_clamp(r[:, : self.split1], self.clamp)
            y1s.append(x1 * torch.exp(s) + r[:, self.split1 :])
            logdet = logdet + _sum_per_sample(s)
        out = []
        for y1, x2, r in zip(y1s, x2s, self.s1(y1s), strict=True):
            s = atan_clamp(r[:, : self.split2], self.clamp)
            out.append(torch.cat([y1, x2 * torch.exp(s) + r[:, self.split2 :]], 1)[:, self.perm])
            logdet = logdet + _sum_per_sample(s)
        return out, logdet

    def inverse(self, ys: list[torch.Tensor], cond=None) -> list[torch.Tensor]:
        del cond
        y1s, y2s = self._split([y[:, self.perm_inv] for y in ys])
        x2s = []
        for y2, r in zip(y2s, self.s1(list(y1s)), strict=True):
            x2s.append((y2 - r[:, self.split2 :]) * torch.exp(-atan_clamp(r[:, : self.split2], self.clamp)))
        out = []
        for y1, x2, r in zip(y1s, x2s, self.s2(x2s), strict=True):
            x1 = (y1 - r[:, self.split1 :]) * torch.exp(-atan_clamp(r[:, : self.split1], self.clamp))
            out.append(torch.cat([x1, x2], 1))
        return out


class Flow(nn.Module):
    """A chain of coupling blocks: ``forward(x, cond) -> (z, log|det J|)``, ``inverse(z, cond)``."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, cond=None):
        logdet = 0.0
        for block in self.blocks:
            x, ld = block(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z, cond=None):
        for block in reversed(self.blocks):
            z = block.inverse(z, cond)
        return z
