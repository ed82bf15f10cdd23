"""Validation of sets of anomaly maps (or scores) with their masks (or labels), shared by the
evaluation ops (xmodal.ops: AUROC, PRO/AUPRO, connected components) and xmodal.metrics.

A set is one array ((N, H, W) maps, or any shape for AUROC scores) or a list of arrays of
different sizes (MVTec 3D-AD classes differ in resolution). numpy arrays and torch CPU
tensors may be mixed (both live in host memory and are passed without copies); CUDA tensors
must all be on one device. Scores stay float32 or float64; other dtypes are converted.
Masks and labels are passed as uint8 (bool and int8 are viewed, not copied).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _arrays


class ArraySet(NamedTuple):
    """Validated arrays, ready for the native module."""

    scores: list  # C-contiguous float32 or float64 arrays (numpy, or torch on CUDA)
    masks: list  # C-contiguous uint8 arrays of the same shapes
    cuda: Any  # None for host memory, else the torch.device of every array
    num_images: int

    @property
    def kind(self) -> _arrays.ArrayKind:
        """Where the kernels run: host memory, or the CUDA device of every array."""
        return _arrays.ArrayKind(False) if self.cuda is None else _arrays.ArrayKind(True, self.cuda)


def _torch():
    import torch

    return torch


def is_array_list(x: Any) -> bool:
    """A list/tuple of arrays (not a list of numbers, which is one array)."""
    return isinstance(x, (list, tuple)) and (
        len(x) == 0 or any(isinstance(e, (np.ndarray, list, tuple)) or _arrays.is_torch(e) for e in x)
    )


def as_list(x: Any, name: str) -> list:
    """``x`` as a list of arrays: a list/tuple of arrays is taken item by item, anything else
    (including a list of numbers) is one array."""
    if is_array_list(x):
        if len(x) == 0:
            msg = f"{name} must hold at least one array; got an empty {type(x).__name__}"
            raise ValueError(msg)
        return list(x)
    return [x]


def host_or_cuda(x: Any, name: str):
    """numpy for host data (torch CPU tensors are viewed), torch for CUDA tensors."""
    if _arrays.is_torch(x):
        _arrays.check_device(x, name)
        x = x.detach()
        return x if x.is_cuda else x.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:
        msg = f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}"
        raise TypeError(msg) from exc


def _dtype_kind(x) -> str:
    if _arrays.is_torch(x):
        torch = _torch()
        if x.dtype == torch.bool:
            return "b"
        return "f" if x.is_floating_point() else ("c" if x.is_complex() else "i")
    return x.dtype.kind


def _is_float64(x) -> bool:
    return str(x.dtype) in ("float64", "torch.float64")


def _as_scores(x, name: str, dtype64: bool):
    kind = _dtype_kind(x)
    if kind not in "fiub":
        msg = f"{name} must hold real numbers; got dtype {x.dtype}"
        raise TypeError(msg)
    if _arrays.is_torch(x):
        torch = _torch()
        return x.to(torch.float64 if dtype64 else torch.float32).contiguous()
    return np.ascontiguousarray(x, dtype=np.float64 if dtype64 else np.float32)


def as_mask(x, name: str):
    """uint8 view (bool/uint8/int8) or a nonzero test (other dtypes) of a mask array."""
    if _arrays.is_torch(x):
        torch = _torch()
        x = x.contiguous()
        if x.dtype in (torch.bool, torch.int8):
            return x.view(torch.uint8)
        if x.dtype == torch.uint8:
            return x
        if x.is_complex():
            msg = f"{name} must hold real numbers; got dtype {x.dtype}"
            raise TypeError(msg)
        return (x != 0).view(torch.uint8)
    x = np.ascontiguousarray(x)
    if x.dtype in (np.bool_, np.int8):
        return x.view(np.uint8)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "fiu":
        msg = f"{name} must be a boolean or numeric array; got dtype {x.dtype}"
        raise TypeError(msg)
    return (x != 0).view(np.uint8)


def _shape(x) -> tuple:
    return tuple(int(s) for s in x.shape)


def collect(scores, masks, score_name: str, mask_name: str, ndims: tuple[int, ...] | None, shape_doc: str) -> ArraySet:
    """Validates and converts two parallel sets of arrays (same count, pairwise same shape).

    Args:
        ndims: allowed numbers of dimensions per array (None: any).
    """
    score_list = as_list(scores, score_name)
    mask_list = as_list(masks, mask_name)
    if len(score_list) != len(mask_list):
        msg = (
            f"{score_name} and {mask_name} must hold the same number of arrays; "
            f"got {len(score_list)} and {len(mask_list)}"
        )
        raise ValueError(msg)
    many = is_array_list(scores)
    out_scores, out_masks, devices = [], [], set()
    for i, (s, m) in enumerate(zip(score_list, mask_list, strict=False)):
        s_name = f"{score_name}[{i}]" if many else score_name
        m_name = f"{mask_name}[{i}]" if is_array_list(masks) else mask_name
        s = host_or_cuda(s, s_name)
        m = as_mask(host_or_cuda(m, m_name), m_name)
        if ndims is not None and s.ndim not in ndims:
            allowed = " or ".join(str(d) for d in ndims)
            msg = f"{s_name} must have {allowed} dimensions {shape_doc}; got shape {_shape(s)}"
            raise ValueError(msg)
        if _shape(s) != _shape(m):
            msg = f"{m_name} must have the shape of {s_name} {_shape(s)}; got {_shape(m)}"
            raise ValueError(msg)
        devices.add(str(s.device) if _arrays.is_torch(s) else "host")
        devices.add(str(m.device) if _arrays.is_torch(m) else "host")
        out_scores.append(s)
        out_masks.append(m)
    if len(devices) > 1:
        msg = (f"{score_name} and {mask_name} must all be in host memory (numpy or CPU tensors) or all on one "
               f"CUDA device; got {sorted(devices)}")
        raise TypeError(msg)
    # float32 unless some array needs float64 (float64 itself, or integers, which float32
    # could not hold exactly); float16/bfloat16 become float32.
    dtype64 = any(_dtype_kind(s) != "f" or _is_float64(s) for s in out_scores)
    names = _names(score_name, len(out_scores), many)
    out_scores = [_as_scores(s, n, dtype64) for s, n in zip(out_scores, names, strict=False)]
    device = out_scores[0].device if _arrays.is_torch(out_scores[0]) else None
    num_images = len(out_scores)
    if ndims is not None:
        num_images = sum(1 if s.ndim == 2 else int(s.shape[0]) for s in out_scores)
    return ArraySet(out_scores, out_masks, device, num_images)


def _names(name: str, n: int, many: bool) -> list[str]:
    return [f"{name}[{i}]" if many else name for i in range(n)]


def as_batches(arrays: list) -> list:
    """(H, W) arrays as (1, H, W) views, so the native module sees (count, H, W) batches."""
    return [a[None] if a.ndim == 2 else a for a in arrays]


def num_thresholds_arg(num_thresholds) -> int:
    """None -> 0 (exact curve); otherwise an int >= 2."""
    if num_thresholds is None:
        return 0
    return _arrays.positive_int(num_thresholds, "num_thresholds", minimum=2)


def limits_arg(limits) -> np.ndarray:
    """A non-empty sequence of FPR limits in (0, 1] as a float64 array."""
    if isinstance(limits, (int, float, np.floating, np.integer)) and not isinstance(limits, bool):
        limits = (limits,)
    try:
        values = np.asarray(list(limits), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"limits must be a sequence of numbers in (0, 1]; got {limits!r}"
        raise TypeError(msg) from exc
    if values.ndim != 1 or values.size == 0:
        msg = f"limits must be a non-empty sequence of numbers in (0, 1]; got {limits!r}"
        raise ValueError(msg)
    bad = [float(v) for v in values if not (0.0 < v <= 1.0)]
    if bad:
        msg = f"limits must lie in (0, 1] (FPR integration limits); got {bad[0]!r}"
        raise ValueError(msg)
    return values
