"""Where a kernel runs: the CPU or CUDA entry point of the native module for the caller's arrays."""

from __future__ import annotations

from .. import _arrays
from .._backend import C, require_cuda


def run_kernel(op: str, kind: _arrays.ArrayKind, *args, cuda_args: tuple = ()):
    """Calls ``C.<op>_cuda(*args, *cuda_args, stream)`` for CUDA inputs, else ``C.<op>_cpu(*args)``.

    The CUDA entry points take the caller's current stream last (and a few take extra device
    buffers, ``cuda_args``); a build without CUDA raises the error that says how to rebuild.
    """
    if kind.cuda:
        require_cuda(op)
        return getattr(C, f"{op}_cuda")(*args, *cuda_args, _arrays.stream_of(kind))
    return getattr(C, f"{op}_cpu")(*args)


def run_on_host(compute, arr, kind: _arrays.ArrayKind):
    """Calls ``compute(numpy_array)`` and returns its numpy outputs in the caller's framework.

    For kernels that exist on the CPU only. torch inputs are viewed as numpy without a copy when
    they are on the CPU; CUDA tensors are copied to the host and the outputs back to their device
    (the kernels that use this say so).
    """
    if not kind.torch:
        return compute(arr)
    torch = _arrays._torch()
    host = arr.cpu().numpy() if kind.cuda else arr.numpy()
    outputs = compute(host)
    return tuple(torch.from_numpy(o).to(kind.device) for o in outputs)
