"""Picks the CPU variant of the kernels library before ``xmodal._C`` needs it.

A portable build ships ``libxmodal_kernels.so`` three times (cmake/XmodalIsa.cmake), all with
one soname: ``lib/`` holds the baseline (x86-64-v2), ``lib/glibc-hwcaps/x86-64-v3/`` the AVX2 +
FMA build and ``lib/glibc-hwcaps/x86-64-v4/`` the AVX-512 build. Loading one of them by path
before ``_C`` makes the dynamic linker reuse it for ``_C``'s dependency (it matches by soname),
the way numpy and faiss choose their SIMD code at import. The choice is the best level the CPU
supports, or the one ``XMODAL_ISA`` forces (``baseline``, ``avx2``, ``avx512``; ``auto`` or
unset: the best). A forced level the CPU cannot run is refused here, never left to crash with
an illegal instruction. Where the CPU's features cannot be read (no ``/proc/cpuinfo``) the
dynamic linker chooses through the same ``glibc-hwcaps`` directories.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
from dataclasses import dataclass

__all__ = ["LEVELS", "Selection", "cpu_levels", "load_kernels"]

LEVELS = ("baseline", "avx2", "avx512")
LIBRARY = "libxmodal_kernels.so"
VARIANTS_FILE = "xmodal_isa_variants.txt"
_DIRS = {"baseline": "", "avx2": "glibc-hwcaps/x86-64-v3", "avx512": "glibc-hwcaps/x86-64-v4"}
# The /proc/cpuinfo flags that each x86-64 micro-architecture level adds to the one below (the
# psABI's definition, which glibc-hwcaps checks too; "pni" is SSE3, "abm" LZCNT). The kernel
# lists AVX and AVX-512 flags only when the OS saves their registers, so a flag present is usable.
_FEATURES = {
    "baseline": frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    "avx2": frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    "avx512": frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}


@dataclass(frozen=True)
class Selection:
    """The variant loaded (None: left to the dynamic linker), why, and what the CPU supports."""

    level: str | None
    reason: str
    cpu_levels: tuple[str, ...]


def cpu_levels(cpuinfo: str | None = None) -> tuple[str, ...] | None:
    """The x86-64 levels (of ``LEVELS``) the CPU supports, lowest first.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read from the system when None.

    Returns:
        The supported levels, each implying the ones before it; ``()`` on a CPU below
        x86-64-v2; None when unknown (not x86-64 Linux, or ``/proc/cpuinfo`` unreadable).
    """
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    if not flags:
        return None
    supported: list[str] = []
    for level in LEVELS:
        if not _FEATURES[level] <= flags:
            break
        supported.append(level)
    return tuple(supported)


def _library_dir() -> str | None:
    spec = importlib.util.find_spec(f"{__package__}._C")
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), "lib")


def _path(lib_dir: str, level: str) -> str:
    return os.path.join(lib_dir, _DIRS.get(level, ""), LIBRARY)


def load_kernels(environ: os._Environ | dict | None = None) -> Selection:
    """Loads the kernels variant to use (see the module docstring); returns what it did.

    Raises:
        ValueError: ``XMODAL_ISA`` is not one of auto, baseline, avx2, avx512.
        ImportError: the forced variant is not in this build, or this CPU cannot run it.
    """
    environ = os.environ if environ is None else environ
    forced = environ.get("XMODAL_ISA", "").strip().lower() or "auto"
    if forced not in ("auto", *LEVELS):
        msg = f"XMODAL_ISA must be one of auto, {', '.join(LEVELS)}; got {environ['XMODAL_ISA']!r}"
        raise ValueError(msg)
    lib_dir = _library_dir()
    cpu = cpu_levels()
    known = cpu or ()
    try:  # the variants this build has, as CMake wrote them ("baseline avx2 avx512" or "native")
        with open(os.path.join(lib_dir or "", VARIANTS_FILE), encoding="utf-8") as f:
            built = f.read().split()
    except OSError:
        return Selection(None, "no kernels variants list beside xmodal._C", known)
    if forced != "auto":
        if forced not in built:
            msg = f"XMODAL_ISA={forced}: this build of xmodal has only the {', '.join(built)} kernels"
            raise ImportError(msg)
        if cpu is not None and forced not in cpu:
            msg = (f"XMODAL_ISA={forced}: this CPU cannot run that variant (it supports "
                   f"{', '.join(cpu) or 'none of ' + ', '.join(LEVELS)}); unset XMODAL_ISA to pick the best")
            raise ImportError(msg)
        ctypes.CDLL(_path(lib_dir, forced))
        return Selection(forced, f"forced by XMODAL_ISA={forced}", known)
    if not set(built) & set(LEVELS):
        return Selection(None, f"the only variant built ({', '.join(built)})", known)
    if cpu is None:
        # Not x86-64 Linux, or features unreadable: the dynamic linker picks (glibc-hwcaps).
        return Selection(None, "picked by the dynamic linker", known)
    usable = [level for level in LEVELS if level in built and level in cpu]
    if not usable:
        msg = ("this CPU does not support x86-64-v2 (SSE4.2, POPCNT), the lowest level of xmodal's "
               "portable build; build from source with XMODAL_NATIVE=ON")
        raise ImportError(msg)
    level = usable[-1]
    ctypes.CDLL(_path(lib_dir, level))
    return Selection(level, f"the best variant built that this CPU supports ({', '.join(cpu)})", known)
