"""Fused MLP inference and CFM's crossmodal discrepancy scorer."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _arrays
from ._dispatch import run_kernel

ACTIVATIONS = {"identity": 0, None: 0, "relu": 1, "gelu": 2}


class CrossmodalDiscrepancy(NamedTuple):
    """Per-row discrepancies, (N,) float32; 0 on background rows."""

    d_2d: Any  # || n(M_3d2d(f3d)) - n(f2d) ||: the 2D feature predicted from 3D vs the real one
    d_3d: Any  # || n(M_2d3d(f2d)) - n(f3d) ||: the 3D feature predicted from 2D vs the real one


def _activation_code(activation) -> int:
    return ACTIVATIONS[_arrays.one_of(activation, "activation", tuple(ACTIVATIONS))]


def _module_layers(module, name: str):
    """Linear weights/biases and the activation of a torch Sequential(Linear, act, ..., Linear)."""
    import torch

    weights, biases, acts = [], [], set()
    for child in module.modules():
        if child is module and not isinstance(child, torch.nn.Linear):
            continue
        if isinstance(child, torch.nn.Linear):
            weights.append(child.weight)
            biases.append(child.bias)
        elif isinstance(child, torch.nn.GELU):
            if child.approximate != "none":
                msg = f"{name} uses GELU(approximate={child.approximate!r}); only the exact erf GELU is supported"
                raise ValueError(msg)
            acts.add("gelu")
        elif isinstance(child, torch.nn.ReLU):
            acts.add("relu")
        elif isinstance(child, (torch.nn.Sequential, torch.nn.Identity, torch.nn.Dropout)):
            continue
        elif len(list(child.children())) == 0:
            msg = f"{name} contains {type(child).__name__}; only Linear, GELU, ReLU, Identity and Dropout are supported"
            raise ValueError(msg)
    if len(acts) > 1:
        msg = f"{name} mixes activations {sorted(acts)}; the fused MLP applies one activation between layers"
        raise ValueError(msg)
    return weights, biases, (acts.pop() if acts else "identity")


def _like(param, kind: _arrays.ArrayKind):
    param = param.detach()
    return param.to(kind.device) if kind.torch else param.cpu().numpy()


def _prepare_layers(mlp, name: str, kind: _arrays.ArrayKind, activation):
    """Returns (weights, biases, activation code) as float32 arrays of the input's kind."""
    if _arrays.is_torch_module(mlp):
        weights, biases, activation = _module_layers(mlp, name)
        # Parameters are small (a few MB): use them where the features are.
        weights = [_like(w, kind) for w in weights]
        biases = [None if b is None else _like(b, kind) for b in biases]
    else:
        if not isinstance(mlp, (tuple, list)) or len(mlp) != 2:
            msg = f"{name} must be a torch Sequential of Linear layers or a (weights, biases) pair; got {type(mlp).__name__}"
            raise TypeError(msg)
        weights, biases = mlp
        if biases is None:
            biases = [None] * len(weights)
        if len(weights) != len(biases):
            msg = f"{name}: {len(weights)} weights but {len(biases)} biases"
            raise ValueError(msg)
    if len(weights) == 0:
        msg = f"{name} must have at least one Linear layer"
        raise ValueError(msg)
    out_w, out_b = [], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        w_arr, w_kind = _arrays.as_float32(w, f"{name} weight {i}", ndim=2, shape_doc="(out, in)")
        _arrays.check_same_kind(w_kind, kind, f"{name} weight {i}", "the features")
        if b is None:
            b_arr = _arrays.zeros(kind, (w_arr.shape[0],), "float32")
        else:
            b_arr, b_kind = _arrays.as_float32(b, f"{name} bias {i}", ndim=1, shape_doc="(out,)")
            _arrays.check_same_kind(b_kind, kind, f"{name} bias {i}", "the features")
            if b_arr.shape[0] != w_arr.shape[0]:
                msg = f"{name} bias {i} must have {w_arr.shape[0]} entries; got {b_arr.shape[0]}"
                raise ValueError(msg)
        if i > 0 and w_arr.shape[1] != out_w[-1].shape[0]:
            msg = f"{name} layer {i} takes {w_arr.shape[1]} features but layer {i - 1} produces {out_w[-1].shape[0]}"
            raise ValueError(msg)
        out_w.append(w_arr)
        out_b.append(b_arr)
    return out_w, out_b, _activation_code(activation)


def mlp(x, weights, biases=None, activation: str | None = "gelu"):
    """Fused forward pass of Sequential(Linear, act, Linear, act, ..., Linear).

    Rows go through all layers in cache-sized blocks (sgemm + fused bias/activation epilogue),
    so intermediate activations never exist for all rows at once.

    Args:
        x: (N, in) floating array, numpy or torch (CPU or CUDA).
        weights: list of (out_i, in_i) arrays (torch Linear layout), or a torch module
            (Sequential of Linear and GELU/ReLU), in which case ``biases`` and ``activation``
            come from the module.
        biases: list of (out_i,) arrays or None entries; None for no biases.
        activation: "gelu" (exact erf form, as torch.nn.GELU()), "relu" or "identity",
            applied between layers (not after the last).

    Returns:
        (N, out) float32, same framework and device as ``x``.
    """
    arr, kind = _arrays.as_float32(x, "x", ndim=2, shape_doc="(N, in)")
    layers = weights if _arrays.is_torch_module(weights) else (weights, biases)
    w, b, code = _prepare_layers(layers, "mlp", kind, activation)
    if w[0].shape[1] != arr.shape[1]:
        msg = f"x must have {w[0].shape[1]} columns (the first layer's input); got {arr.shape[1]}"
        raise ValueError(msg)
    _arrays.check_finite(arr, "x")
    y = _arrays.empty(kind, (arr.shape[0], w[-1].shape[0]), "float32")
    run_kernel("mlp", kind, arr, w, b, code, y)
    return y


def _mask_bytes(mask, rows: int, kind: _arrays.ArrayKind):
    """The foreground mask as N contiguous bytes (1 = compute the row) of the features' kind."""
    if mask is None:
        return _arrays.full(kind, (rows,), 1, "uint8")
    _arrays.check_same_kind(_arrays.kind_of(mask), kind, "mask", "the features")
    if _arrays.is_torch(mask):
        import torch

        m = (mask.reshape(-1) != 0).to(torch.uint8)
    else:
        m = (np.asarray(mask).reshape(-1) != 0).view(np.uint8)
    if m.shape[0] != rows:
        msg = f"mask must have one entry per row (N={rows}); got {m.shape[0]}"
        raise ValueError(msg)
    return m


def crossmodal_discrepancy(f2d, f3d, mlp_2d3d, mlp_3d2d, mask=None, activation: str | None = "gelu"):
    """CFM's per-pixel crossmodal discrepancies in one fused pass.

    For each foreground row i: ``d_3d[i] = || n(mlp_2d3d(f2d[i])) - n(f3d[i]) ||`` and
    ``d_2d[i] = || n(mlp_3d2d(f3d[i])) - n(f2d[i]) ||`` with ``n(v) = v / max(||v||, 1e-12)``
    (torch.nn.functional.normalize). Background rows (``mask`` false) are never computed and
    get 0. The mapped features are never materialised.

    Args:
        f2d: (N, D2) 2D (RGB) features, numpy or torch (CPU or CUDA).
        f3d: (N, D3) 3D features of the same pixels.
        mlp_2d3d: torch Sequential (Linear/GELU) mapping D2 -> D3, or a (weights, biases) pair.
        mlp_3d2d: mapping D3 -> D2, same forms.
        mask: (N,) or any shape with N entries, nonzero = foreground; None = all rows.
        activation: used when the MLPs are given as (weights, biases) pairs.

    Returns:
        CrossmodalDiscrepancy(d_2d (N,), d_3d (N,)) float32, same framework and device as f2d.
        CFM's anomaly score is their product.
    """
    a2, kind = _arrays.as_float32(f2d, "f2d", ndim=2, shape_doc="(N, D2)")
    a3, kind3 = _arrays.as_float32(f3d, "f3d", ndim=2, shape_doc="(N, D3)")
    _arrays.check_same_kind(kind, kind3, "f2d", "f3d")
    if a3.shape[0] != a2.shape[0]:
        msg = f"f3d must have as many rows as f2d ({a2.shape[0]}); got {a3.shape[0]}"
        raise ValueError(msg)
    w23, b23, code23 = _prepare_layers(mlp_2d3d, "mlp_2d3d", kind, activation)
    w32, b32, code32 = _prepare_layers(mlp_3d2d, "mlp_3d2d", kind, activation)
    if code23 != code32:
        msg = "mlp_2d3d and mlp_3d2d must use the same activation"
        raise ValueError(msg)
    if w23[0].shape[1] != a2.shape[1] or w23[-1].shape[0] != a3.shape[1]:
        msg = f"mlp_2d3d must map {a2.shape[1]} -> {a3.shape[1]} features; it maps {w23[0].shape[1]} -> {w23[-1].shape[0]}"
        raise ValueError(msg)
    if w32[0].shape[1] != a3.shape[1] or w32[-1].shape[0] != a2.shape[1]:
        msg = f"mlp_3d2d must map {a3.shape[1]} -> {a2.shape[1]} features; it maps {w32[0].shape[1]} -> {w32[-1].shape[0]}"
        raise ValueError(msg)
    m = _mask_bytes(mask, a2.shape[0], kind)
    _arrays.check_finite(a2, "f2d")
    _arrays.check_finite(a3, "f3d")
    d_2d = _arrays.empty(kind, (a2.shape[0],), "float32")
    d_3d = _arrays.empty(kind, (a2.shape[0],), "float32")
    run_kernel("crossmodal_discrepancy", kind, a2, a3, m, w23, b23, w32, b32, code23, d_2d, d_3d)
    return CrossmodalDiscrepancy(d_2d, d_3d)
