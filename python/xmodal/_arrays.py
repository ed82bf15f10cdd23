"""Array handling at the Python boundary of the kernels.

Every op accepts numpy arrays or torch tensors and returns the same kind (torch CUDA tensors
stay on their device). Validation happens here, with messages that name the argument, what was
expected and what was received. The native module never converts: conversions to float32 and
to C-contiguous memory are made here, explicitly, and each op's docstring says when a copy
can happen.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ArrayKind",
    "as_float32",
    "as_float_bank",
    "check_device",
    "check_finite",
    "check_same_kind",
    "empty",
    "full",
    "integer",
    "is_torch",
    "is_torch_module",
    "kind_of",
    "number",
    "one_of",
    "positive_int",
    "stream_of",
    "zeros",
]


class ArrayKind(NamedTuple):
    """Which framework an input came from, and for torch, its device."""

    torch: bool
    device: Any = None  # torch.device for tensors, None for numpy

    @property
    def cuda(self) -> bool:
        return self.torch and self.device.type == "cuda"

    def describe(self) -> str:
        return f"torch tensor on {self.device}" if self.torch else "numpy array"


def _torch():
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def kind_of(x: Any) -> ArrayKind:
    return ArrayKind(True, x.device) if is_torch(x) else ArrayKind(False)


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _check_shape(x, name: str, ndim: int | None, shape_doc: str | None) -> None:
    if ndim is not None and x.ndim != ndim:
        doc = f" {shape_doc}" if shape_doc else ""
        msg = f"{name} must have {ndim} dimensions{doc}; got shape {_shape_text(x.shape)}"
        raise ValueError(msg)


def check_device(x: Any, name: str) -> None:
    """TypeError for a tensor on a device with no data (meta) or that xmodal cannot run on
    (mps, xpu, ...): the kernels run on the CPU and on CUDA only."""
    if x.device.type not in ("cpu", "cuda"):
        msg = f"{name} must be a tensor on the CPU or a CUDA device; got one on {x.device}"
        raise TypeError(msg)


def as_float32(x: Any, name: str, *, ndim: int | None = None, shape_doc: str | None = None):
    """Returns ``(array, kind)``: ``x`` as a C-contiguous float32 array of its own framework.

    Floating inputs of another precision, or non-contiguous ones, are copied; booleans,
    integers and anything non-numeric raise TypeError, and so do tensors on a device other than
    the CPU or CUDA (meta tensors included).
    """
    if is_torch(x):
        torch = _torch()
        check_device(x, name)
        if not x.is_floating_point():
            msg = f"{name} must be a floating-point tensor; got dtype {x.dtype}"
            raise TypeError(msg)
        _check_shape(x, name, ndim, shape_doc)
        return x.detach().to(torch.float32).contiguous(), kind_of(x)
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            msg = f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}"
            raise TypeError(msg) from exc
    if arr.dtype.kind != "f":
        msg = f"{name} must be a floating-point array; got dtype {arr.dtype}"
        raise TypeError(msg)
    _check_shape(arr, name, ndim, shape_doc)
    return np.ascontiguousarray(arr, dtype=np.float32), ArrayKind(False)


def as_float_bank(x: Any, name: str, *, ndim: int = 2, shape_doc: str | None = None):
    """Like :func:`as_float32`, but float16 stays float16 (half-precision memory banks)."""
    if is_torch(x):
        torch = _torch()
        check_device(x, name)
        if x.dtype == torch.float16:
            _check_shape(x, name, ndim, shape_doc)
            return x.detach().contiguous(), kind_of(x)
    elif isinstance(x, np.ndarray) and x.dtype == np.float16:
        _check_shape(x, name, ndim, shape_doc)
        return np.ascontiguousarray(x), ArrayKind(False)
    return as_float32(x, name, ndim=ndim, shape_doc=shape_doc)


def check_finite(x: Any, name: str) -> None:
    """Raises ValueError when ``x`` holds NaN or infinity.

    A NaN or inf element always makes the sum non-finite, so a finite float32 sum (one fast
    pass, no array-sized temporary) proves the array finite; only a non-finite sum (a bad
    element, or an overflow of huge values) needs the element-wise check.
    """
    if is_torch(x):
        torch = _torch()
        if x.numel() == 0 or bool(torch.isfinite(x.sum())):
            return
        ok = bool(torch.isfinite(x).all())
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = x.sum()
        if x.size == 0 or np.isfinite(total):
            return
        ok = bool(np.isfinite(x).all())
    if not ok:
        msg = f"{name} contains NaN or infinite values"
        raise ValueError(msg)


def check_same_kind(a: ArrayKind, b: ArrayKind, name_a: str, name_b: str) -> None:
    if a.torch != b.torch or (a.torch and a.device != b.device):
        msg = (
            f"{name_a} and {name_b} must both be numpy arrays or both torch tensors on the same "
            f"device; got {a.describe()} and {b.describe()}"
        )
        raise TypeError(msg)


_NUMPY_TO_TORCH = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.float16): "float16",
    np.dtype(np.int64): "int64",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.bool_): "bool",
}


_HUGE_PAGE = 2 << 20
_HUGE_PAGE_MIN_BYTES = 8 << 20
_madvise = None


def _advise_huge_pages(address: int, nbytes: int) -> None:
    """Asks Linux to back a fresh buffer with 2 MiB pages (MADV_HUGEPAGE) before it is touched.

    Outputs such as a 1152 x 224 x 224 feature grid (231 MB) are new mappings whose first write
    faults in one 4 KiB page at a time; with transparent huge pages in "madvise" mode (the usual
    default) this takes a quarter of the time. Only the 2 MiB-aligned interior is advised, so
    nothing outside the buffer changes; kernels without THP refuse and nothing happens."""
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                libc.madvise.restype = ctypes.c_int
                _madvise = libc.madvise
            except (OSError, AttributeError):
                pass
    if not _madvise:
        return
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _madvise(start, end - start, 14)  # MADV_HUGEPAGE


def empty(kind: ArrayKind, shape, dtype) -> Any:
    """An uninitialised array of the given framework, device, shape and numpy dtype (large CPU
    buffers on huge pages where the OS allows it)."""
    dtype = np.dtype(dtype)
    if kind.torch:
        torch = _torch()
        out = torch.empty(tuple(shape), dtype=getattr(torch, _NUMPY_TO_TORCH[dtype]), device=kind.device)
        if out.device.type == "cpu" and out.nbytes >= _HUGE_PAGE_MIN_BYTES:
            _advise_huge_pages(out.data_ptr(), out.nbytes)
        return out
    out = np.empty(tuple(shape), dtype=dtype)
    if out.nbytes >= _HUGE_PAGE_MIN_BYTES:
        _advise_huge_pages(out.ctypes.data, out.nbytes)
    return out


def full(kind: ArrayKind, shape, value, dtype) -> Any:
    out = empty(kind, shape, dtype)
    out[...] = value
    return out


def zeros(kind: ArrayKind, shape, dtype) -> Any:
    return full(kind, shape, 0, dtype)


def is_torch_module(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.nn.Module)


def stream_of(kind: ArrayKind) -> int:
    """The caller's current CUDA stream handle for a CUDA tensor's device (0 otherwise)."""
    if not kind.cuda:
        return 0
    return int(_torch().cuda.current_stream(kind.device).cuda_stream)


def one_of(value: Any, name: str, choices) -> Any:
    """Validates an option against its allowed values (``choices`` as the message lists them)."""
    if value not in choices:
        msg = f"{name} must be one of {choices}; got {value!r}"
        raise ValueError(msg)
    return value


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
            what: str = "", allow_none: bool = False, expected: str | None = None) -> int | None:
    """Validates an integer argument in [minimum, maximum] (either bound may be None).

    One rule for every option check: TypeError when the value is of the wrong kind (bool, float,
    str, ...), ValueError when it is of the right kind but out of range. ``what`` names the upper
    bound in the message (``"N="``); ``expected`` replaces the interval with words ("a positive
    int").
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"{name} must be an int{' or None' if allow_none else ''}; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else f"{what}{maximum}"
        msg = f"{name} must be {expected or f'in [{low}, {high}]'}; got {value}"
        raise ValueError(msg)
    return value


def number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
           low_open: bool = False, high_open: bool = False, allow_none: bool = False,
           expected: str | None = None) -> float | None:
    """Validates a real-valued argument: finite, in the interval the bounds and ``*_open`` give.

    TypeError for the wrong kind (bool, str, arrays, ...), ValueError for NaN, inf or a value out
    of range; the message names the argument, the interval (or ``expected``, e.g. "a positive
    finite number", when words say it better) and the value received.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        msg = f"{name} must be a number{' or None' if allow_none else ''}; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    value = float(value)
    ok = np.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if low_open else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if high_open else value <= maximum
    if not ok:
        low = "(-inf" if minimum is None else f"{'(' if low_open else '['}{minimum}"
        high = "inf)" if maximum is None else f"{maximum}{')' if high_open else ']'}"
        msg = f"{name} must be {expected or f'a finite number in {low}, {high}'}; got {value}"
        raise ValueError(msg)
    return value


def positive_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None, what: str = "") -> int:
    """Validates an integer argument in [minimum, maximum] (:func:`integer` with a lower bound of 1
    unless told otherwise)."""
    return integer(value, name, minimum=minimum, maximum=maximum, what=what)
