"""Loads the native module and answers what it was built with.

Importing never touches a GPU: the CUDA runtime is linked statically and only contacts the
driver when a CUDA op runs or ``cuda_available()`` is asked. A CUDA build keeps all device code
and that runtime in ``lib/libxmodal_cuda.so`` (one copy, beside whichever CPU variant
``_isa`` loads), which ``_C`` finds through its RPATH.
"""

from __future__ import annotations

import ctypes
import os

from . import _isa

__all__ = ["C", "build_info", "cuda_available", "get_num_threads", "require_cuda", "set_num_threads"]


def _preload_openblas() -> None:
    # The module's RPATH finds scipy-openblas32 next to it in site-packages; loading it by path
    # first also covers layouts where that relative path does not hold (editable installs,
    # --target directories). Once loaded, the dynamic linker reuses it by soname.
    try:
        import scipy_openblas32
    except ImportError as exc:  # pragma: no cover - a broken install
        msg = "xmodal needs the scipy-openblas32 package at run time: pip install scipy-openblas32"
        raise ImportError(msg) from exc
    path = os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so")
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_preload_openblas()
_ISA = _isa.load_kernels()

from . import _C as C  # noqa: E402
from ._arrays import integer  # noqa: E402
from ._threads import configure_native  # noqa: E402

_BUILD_INFO = dict(C.build_info())
_BUILD_INFO["isa_reason"] = _ISA.reason
_BUILD_INFO["cpu_levels"] = ",".join(_ISA.cpu_levels)
# Kernel threads: no more than the CPUs this process may use (affinity and cgroup quota).
configure_native(C)


def build_info() -> dict:
    """What this build of xmodal contains.

    Returns:
        dict with ``version``, ``cuda`` (bool: CUDA kernels compiled in), ``cuda_version``,
        ``cuda_archs`` (comma-separated CMake architectures), ``compiler``, ``openmp``,
        ``blas``, ``isa`` (the CPU variant of the kernels in use: ``baseline`` (x86-64-v2),
        ``avx2``, ``avx512`` or ``native``), ``isa_variants`` (the variants built),
        ``isa_reason`` (why that one) and ``cpu_levels`` (the levels this CPU supports).
    """
    return dict(_BUILD_INFO)


def cuda_available() -> bool:
    """True when xmodal was built with CUDA and a CUDA device is usable right now."""
    return bool(_BUILD_INFO["cuda"]) and C.cuda_device_count() > 0


def require_cuda(op: str) -> None:
    """Raises a RuntimeError that says how to rebuild when a CUDA path is not compiled in."""
    if not _BUILD_INFO["cuda"]:
        msg = (
            f"xmodal.ops.{op} got CUDA tensors, but this xmodal was built without CUDA "
            "(build_info()['cuda'] is False). Reinstall with nvcc on PATH and "
            "XMODAL_CUDA=ON: `XMODAL_CUDA=ON pip install --no-cache-dir --force-reinstall .`"
        )
        raise RuntimeError(msg)


def get_num_threads() -> int:
    """Threads the CPU kernels use (OpenMP; honours OMP_NUM_THREADS)."""
    return int(C.num_threads())


def set_num_threads(threads: int) -> None:
    """Sets the number of threads of the CPU kernels."""
    C.set_num_threads(integer(threads, "threads", minimum=1))
