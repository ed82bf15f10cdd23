"""Fused MLP inference, CFM's crossmodal discrepancy scorer, and Linear/BatchNorm folding."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _arrays
from ._dispatch import run_kernel

ACTIVATIONS = {"identity": 0, None: 0, "relu": 1, "gelu": 2, "leaky_relu": 3, "sigmoid": 4}


class CrossmodalDiscrepancy(NamedTuple):
    """Per-row discrepancies, (N,) float32; 0 on background rows."""

    d_2d: Any  # || n(M_3d2d(f3d)) - n(f2d) ||: the 2D feature predicted from 3D vs the real one
    d_3d: Any  # || n(M_2d3d(f2d)) - n(f3d) ||: the 3D feature predicted from 2D vs the real one


def _activation_code(activation, name: str = "activation") -> int:
    return ACTIVATIONS[_arrays.one_of(activation, name, tuple(ACTIVATIONS))]


def _module_activation(child, name: str):
    """(activation name, negative slope) of an activation module."""
    import torch

    if isinstance(child, torch.nn.GELU):
        if child.approximate != "none":
            msg = f"{name} uses GELU(approximate={child.approximate!r}); only the exact erf GELU is supported"
            raise ValueError(msg)
        return "gelu", 0.01
    if isinstance(child, torch.nn.LeakyReLU):
        return "leaky_relu", float(child.negative_slope)
    for kind, activation in ((torch.nn.ReLU, "relu"), (torch.nn.Sigmoid, "sigmoid")):
        if isinstance(child, kind):
            return activation, 0.01
    msg = (
        f"{name} contains {type(child).__name__}; only Linear, BatchNorm1d (eval), GELU, ReLU, LeakyReLU, "
        "Sigmoid, Identity and Dropout are supported"
    )
    raise ValueError(msg)


def _module_layers(module, name: str):
    """Per-layer [weight, bias, activation, slope] of a torch Sequential of Linear layers, each
    optionally followed by BatchNorm1d (eval; folded into the Linear) and one activation."""
    import torch

    layers = []
    for child in module.modules():
        if len(list(child.children())) > 0:
            continue  # a container: its leaves follow in order
        if isinstance(child, torch.nn.Linear):
            bias = None if child.bias is None else child.bias.detach()
            layers.append([child.weight.detach(), bias, "identity", 0.01])
            continue
        if isinstance(child, (torch.nn.Identity, torch.nn.Dropout)):
            continue
        if not layers:
            msg = f"{name} must start with a Linear layer; found {type(child).__name__} first"
            raise ValueError(msg)
        last = layers[-1]
        if isinstance(child, torch.nn.BatchNorm1d):
            if last[2] != "identity":
                msg = f"{name}: BatchNorm1d must directly follow a Linear layer (it is folded into it)"
                raise ValueError(msg)
            if child.training:
                msg = f"{name} has a BatchNorm1d in training mode; call .eval() (mlp folds its running statistics)"
                raise ValueError(msg)
            last[0], last[1] = fold_linear_batchnorm((last[0], last[1]), child)
            continue
        activation, slope = _module_activation(child, name)
        if last[2] != "identity":
            msg = f"{name} applies two activations in a row ({last[2]}, {activation})"
            raise ValueError(msg)
        last[2], last[3] = activation, slope
    return layers


def _like(param, kind: _arrays.ArrayKind):
    param = param.detach()
    return param.to(kind.device) if kind.torch else param.cpu().numpy()


def _prepare_layers(mlp, name: str, kind: _arrays.ArrayKind, activation, negative_slope=0.01, output_activation=None):
    """Returns (weights, biases or None, activation codes, slopes), one per layer, as float32
    arrays of the input's kind."""
    if _arrays.is_torch_module(mlp):
        layers = _module_layers(mlp, name)
        # Parameters are small (a few MB): use them where the features are.
        weights = [_like(w, kind) for w, _, _, _ in layers]
        biases = [None if b is None else _like(b, kind) for _, b, _, _ in layers]
        codes = [ACTIVATIONS[a] for _, _, a, _ in layers]
        slopes = [s for _, _, _, s in layers]
    else:
        if not isinstance(mlp, (tuple, list)) or len(mlp) != 2:
            msg = (f"{name} must be a torch Sequential of Linear layers or a (weights, biases) pair; "
                   f"got {type(mlp).__name__}")
            raise TypeError(msg)
        weights, biases = mlp
        if not isinstance(weights, (tuple, list)):
            msg = f"{name} weights must be a list of (out, in) arrays; got {type(weights).__name__}"
            raise TypeError(msg)
        if biases is None:
            biases = [None] * len(weights)
        if not isinstance(biases, (tuple, list)):
            msg = f"{name} biases must be a list of (out,) arrays or None; got {type(biases).__name__}"
            raise TypeError(msg)
        if len(weights) != len(biases):
            msg = f"{name}: {len(weights)} weights but {len(biases)} biases"
            raise ValueError(msg)
        hidden = _activation_code(activation)
        codes = [hidden] * (len(weights) - 1) + [_activation_code(output_activation, "output_activation")]
        slopes = [_arrays.number(negative_slope, "negative_slope")] * len(weights)
    if len(weights) == 0:
        msg = f"{name} must have at least one Linear layer"
        raise ValueError(msg)
    out_w, out_b = [], []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        w_arr, w_kind = _arrays.as_float32(w, f"{name} weight {i}", ndim=2, shape_doc="(out, in)")
        _arrays.check_same_kind(w_kind, kind, f"{name} weight {i}", "the features")
        # a NaN/inf parameter would make every output NaN: garbage, not an answer
        _arrays.check_finite(w_arr, f"{name} weight {i}")
        b_arr = None
        if b is not None:
            b_arr, b_kind = _arrays.as_float32(b, f"{name} bias {i}", ndim=1, shape_doc="(out,)")
            _arrays.check_same_kind(b_kind, kind, f"{name} bias {i}", "the features")
            _arrays.check_finite(b_arr, f"{name} bias {i}")
            if b_arr.shape[0] != w_arr.shape[0]:
                msg = f"{name} bias {i} must have {w_arr.shape[0]} entries; got {b_arr.shape[0]}"
                raise ValueError(msg)
        if i > 0 and w_arr.shape[1] != out_w[-1].shape[0]:
            msg = f"{name} layer {i} takes {w_arr.shape[1]} features but layer {i - 1} produces {out_w[-1].shape[0]}"
            raise ValueError(msg)
        out_w.append(w_arr)
        out_b.append(b_arr)
    return out_w, out_b, codes, slopes


def mlp(x, weights, biases=None, activation: str | None = "gelu", negative_slope: float = 0.01,
        output_activation: str | None = None):
    """Fused forward pass of Sequential(Linear, act, Linear, act, ..., Linear[, output_act]).

    Rows go through all layers in cache-sized blocks (sgemm + fused bias/activation epilogue),
    so intermediate activations never exist for all rows at once.

    Args:
        x: (N, in) floating array, numpy or torch (CPU or CUDA).
        weights: list of (out_i, in_i) arrays (torch Linear layout), or a torch module: a
            Sequential of Linear layers, each optionally followed by BatchNorm1d (eval mode,
            folded into the Linear on every call) and one of GELU/ReLU/LeakyReLU/Sigmoid. Then
            ``biases`` and the activations come from the module, layer by layer. For repeated
            inference fold once with :func:`fold_linear_batchnorm` / :func:`fold_linears` and
            pass arrays.
        biases: list of (out_i,) arrays or None entries (a layer without bias); None for none.
        activation: between layers: "gelu" (exact erf form, as torch.nn.GELU()), "relu",
            "leaky_relu", "sigmoid" or "identity".
        negative_slope: LeakyReLU's slope for x < 0 (torch's default 0.01; BridgeNet 0.3).
        output_activation: applied after the last layer: None (identity), "sigmoid" (a
            discriminator's probability) or any of the names above.

    Returns:
        (N, out) float32, same framework and device as ``x``.
    """
    arr, kind = _arrays.as_float32(x, "x", ndim=2, shape_doc="(N, in)")
    layers = weights if _arrays.is_torch_module(weights) else (weights, biases)
    w, b, codes, slopes = _prepare_layers(layers, "mlp", kind, activation, negative_slope, output_activation)
    if w[0].shape[1] != arr.shape[1]:
        msg = f"x must have {w[0].shape[1]} columns (the first layer's input); got {arr.shape[1]}"
        raise ValueError(msg)
    _arrays.check_finite(arr, "x")
    y = _arrays.empty(kind, (arr.shape[0], w[-1].shape[0]), "float32")
    run_kernel("mlp", kind, arr, w, b, codes, slopes, y)
    return y


def _mask_bytes(mask, rows: int, kind: _arrays.ArrayKind):
    """The foreground mask as N contiguous bytes (1 = compute the row) of the features' kind."""
    if mask is None:
        return _arrays.full(kind, (rows,), 1, "uint8")
    if _arrays.is_torch(mask):
        _arrays.check_device(mask, "mask")
    _arrays.check_same_kind(_arrays.kind_of(mask), kind, "mask", "the features")
    if _arrays.is_torch(mask):
        import torch

        if mask.is_complex():
            msg = f"mask must be boolean or hold numbers (nonzero = foreground); got dtype {mask.dtype}"
            raise TypeError(msg)
        m = (mask.reshape(-1) != 0).to(torch.uint8)
    else:
        try:
            values = np.asarray(mask)
        except (TypeError, ValueError) as exc:
            msg = f"mask must be a boolean or numeric array; got {type(mask).__name__}"
            raise TypeError(msg) from exc
        if values.dtype.kind not in "biuf":
            msg = f"mask must be boolean or hold numbers (nonzero = foreground); got dtype {values.dtype}"
            raise TypeError(msg)
        m = (values.reshape(-1) != 0).view(np.uint8)
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
        mlp_2d3d: torch Sequential (the layers :func:`mlp` accepts) mapping D2 -> D3, or a
            (weights, biases) pair.
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
    w23, b23, a23, s23 = _prepare_layers(mlp_2d3d, "mlp_2d3d", kind, activation)
    w32, b32, a32, s32 = _prepare_layers(mlp_3d2d, "mlp_3d2d", kind, activation)
    if w23[0].shape[1] != a2.shape[1] or w23[-1].shape[0] != a3.shape[1]:
        msg = (f"mlp_2d3d must map {a2.shape[1]} -> {a3.shape[1]} features; "
               f"it maps {w23[0].shape[1]} -> {w23[-1].shape[0]}")
        raise ValueError(msg)
    if w32[0].shape[1] != a3.shape[1] or w32[-1].shape[0] != a2.shape[1]:
        msg = (f"mlp_3d2d must map {a3.shape[1]} -> {a2.shape[1]} features; "
               f"it maps {w32[0].shape[1]} -> {w32[-1].shape[0]}")
        raise ValueError(msg)
    m = _mask_bytes(mask, a2.shape[0], kind)
    _arrays.check_finite(a2, "f2d")
    _arrays.check_finite(a3, "f3d")
    d_2d = _arrays.empty(kind, (a2.shape[0],), "float32")
    d_3d = _arrays.empty(kind, (a2.shape[0],), "float32")
    run_kernel("crossmodal_discrepancy", kind, a2, a3, m, w23, b23, a23, s23, w32, b32, a32, s32, d_2d, d_3d)
    return CrossmodalDiscrepancy(d_2d, d_3d)


# --- folding Linear + BatchNorm1d and Linear + Linear (computed in float64) -----------------


class LinearParams(NamedTuple):
    """A Linear layer as arrays in torch's layout: weight (out, in), bias (out,) or None."""

    weight: Any
    bias: Any


def _float64(a):
    if _arrays.is_torch(a):
        import torch

        return a.detach().to(torch.float64)
    return np.asarray(a, dtype=np.float64)


def _cast_like(a, like):
    return a.to(like.dtype) if _arrays.is_torch(like) else a.astype(like.dtype)


def _check_floating(a, name: str) -> None:
    """TypeError unless ``a`` is a floating array/tensor on the CPU or CUDA (a folded layer is
    computed in float64 and cast back: integer parameters would be truncated silently)."""
    if _arrays.is_torch(a):
        _arrays.check_device(a, name)
        floating = a.is_floating_point()
    else:
        floating = a.dtype.kind == "f"
    if not floating:
        msg = f"{name} must be a floating-point array; got dtype {a.dtype}"
        raise TypeError(msg)


def _vector(a, name: str, size: int, kind: _arrays.ArrayKind):
    _check_floating(a, name)
    _arrays.check_same_kind(_arrays.kind_of(a), kind, name, "the Linear weight")
    if a.ndim != 1 or a.shape[0] != size:
        msg = f"{name} must have shape ({size},) (the Linear's outputs); got {tuple(a.shape)}"
        raise ValueError(msg)
    _arrays.check_finite(a, name)
    return _float64(a)


def _linear_params(linear, name: str) -> LinearParams:
    """A torch.nn.Linear or a (weight, bias) pair as detached arrays, checked."""
    if _arrays.is_torch_module(linear):
        import torch

        if not isinstance(linear, torch.nn.Linear):
            msg = f"{name} must be a torch.nn.Linear or a (weight, bias) pair; got {type(linear).__name__}"
            raise TypeError(msg)
        weight, bias = linear.weight.detach(), linear.bias
    elif isinstance(linear, (tuple, list)) and len(linear) == 2:
        weight, bias = linear
        if not _arrays.is_torch(weight):
            weight = np.asarray(weight)
    else:
        msg = f"{name} must be a torch.nn.Linear or a (weight, bias) pair; got {type(linear).__name__}"
        raise TypeError(msg)
    _check_floating(weight, f"{name} weight")
    if weight.ndim != 2:
        msg = f"{name} weight must have 2 dimensions (out, in); got shape {tuple(weight.shape)}"
        raise ValueError(msg)
    _arrays.check_finite(weight, f"{name} weight")
    if bias is not None:
        kind = _arrays.kind_of(weight)
        bias = bias.detach() if _arrays.is_torch(bias) else np.asarray(bias)
        _vector(bias, f"{name} bias", weight.shape[0], kind)
    return LinearParams(weight, bias)


def _batchnorm_params(batchnorm, size: int, kind: _arrays.ArrayKind):
    """(running_mean, running_var, gamma or None, beta or None, eps) in float64."""
    if _arrays.is_torch_module(batchnorm):
        import torch

        if not isinstance(batchnorm, torch.nn.BatchNorm1d):
            msg = f"batchnorm must be a torch.nn.BatchNorm1d or a mapping; got {type(batchnorm).__name__}"
            raise TypeError(msg)
        if batchnorm.running_mean is None:
            msg = "batchnorm has no running statistics (track_running_stats=False): it cannot be folded"
            raise ValueError(msg)
        state = {"running_mean": batchnorm.running_mean, "running_var": batchnorm.running_var,
                 "weight": batchnorm.weight, "bias": batchnorm.bias, "eps": batchnorm.eps}
    elif hasattr(batchnorm, "keys"):
        state = dict(batchnorm)
        for key in ("running_mean", "running_var"):
            if state.get(key) is None:
                msg = f"batchnorm must have a {key!r} entry (BatchNorm1d state dict keys); got keys {sorted(state)}"
                raise ValueError(msg)
    else:
        msg = f"batchnorm must be a torch.nn.BatchNorm1d or a mapping; got {type(batchnorm).__name__}"
        raise TypeError(msg)
    eps = _arrays.number(state.get("eps", 1e-5), "batchnorm eps", minimum=0.0)
    vectors = []
    for key in ("running_mean", "running_var", "weight", "bias"):
        value = state.get(key)
        if value is not None:
            value = value.detach() if _arrays.is_torch(value) else np.asarray(value)
            value = _vector(value, f"batchnorm {key}", size, kind)
        vectors.append(value)
    if bool((vectors[1] + eps <= 0).any()):
        msg = f"batchnorm running_var + eps must be > 0 (a variance); got a minimum of {float(vectors[1].min())}"
        raise ValueError(msg)
    return (*vectors, eps)


def fold_linear_batchnorm(linear, batchnorm) -> LinearParams:
    """One Linear equal to Linear followed by BatchNorm1d in eval mode.

    BatchNorm1d in eval mode is ``(z - running_mean) / sqrt(running_var + eps) * gamma + beta``;
    with ``s = gamma / sqrt(running_var + eps)`` the pair is the Linear ``W' = s[:, None] * W``,
    ``b' = s * (b - running_mean) + beta``. Computed in float64, returned in the weight's dtype.

    Args:
        linear: a torch.nn.Linear, or a (weight (out, in), bias (out,) or None) pair (numpy or
            torch), e.g. a :class:`LinearParams`.
        batchnorm: a torch.nn.BatchNorm1d (its running statistics are used whatever its mode),
            or a mapping with ``running_mean`` and ``running_var`` and optionally ``weight``
            (gamma), ``bias`` (beta) and ``eps`` (default 1e-5): the keys of its state dict.

    Returns:
        LinearParams(weight, bias) of the weight's framework, device and dtype.
    """
    weight, bias = _linear_params(linear, "linear")
    kind = _arrays.kind_of(weight)
    mean, var, gamma, beta, eps = _batchnorm_params(batchnorm, weight.shape[0], kind)
    scale = 1.0 / (var + eps).sqrt() if kind.torch else 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    shift = (0.0 - mean) if bias is None else (_float64(bias) - mean)
    folded_bias = shift * scale if beta is None else shift * scale + beta
    folded_weight = _float64(weight) * scale[:, None]
    return LinearParams(_cast_like(folded_weight, weight), _cast_like(folded_bias, weight))


def fold_linears(first, second) -> LinearParams:
    """One Linear equal to ``second(first(x))`` (no activation between): ``W = W2 W1``,
    ``b = W2 b1 + b2`` (None when neither has a bias). BridgeNet's adaptor folds this way into
    the first Linear of its discriminator. Computed in float64, returned in the second weight's
    dtype.

    Args:
        first, second: torch.nn.Linear modules or (weight, bias) pairs (numpy or torch, the
            same framework), with first's outputs = second's inputs.

    Returns:
        LinearParams(weight (out2, in1), bias (out2,) or None).
    """
    w1, b1 = _linear_params(first, "first")
    w2, b2 = _linear_params(second, "second")
    _arrays.check_same_kind(_arrays.kind_of(w1), _arrays.kind_of(w2), "first", "second")
    if w2.shape[1] != w1.shape[0]:
        msg = f"second takes {w2.shape[1]} features but first produces {w1.shape[0]}"
        raise ValueError(msg)
    w2_64 = _float64(w2)
    weight = w2_64 @ _float64(w1)
    bias = None
    if b1 is not None:
        bias = w2_64 @ _float64(b1)
    if b2 is not None:
        bias = _float64(b2) if bias is None else bias + _float64(b2)
    return LinearParams(_cast_like(weight, w2), None if bias is None else _cast_like(bias, w2))
