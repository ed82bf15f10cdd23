"""Running a CPU-only kernel for inputs that may live on a GPU."""

from __future__ import annotations

from .. import _arrays


def run_on_host(compute, arr, kind: _arrays.ArrayKind):
    """Calls ``compute(numpy_array)`` and returns its numpy outputs in the caller's framework.

    torch inputs are viewed as numpy without a copy when they are on the CPU; CUDA tensors are
    copied to the host and the outputs back to their device (the kernels that use this say so).
    """
    if not kind.torch:
        return compute(arr)
    torch = _arrays._torch()
    host = arr.cpu().numpy() if kind.cuda else arr.numpy()
    outputs = compute(host)
    return tuple(torch.from_numpy(o).to(kind.device) for o in outputs)
