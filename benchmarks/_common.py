"""Shared helpers of the benchmark scripts: timing, peak memory, machine facts, table output.

Peak memory is the process's resident-set high-water mark during the call minus the resident
set before it (Linux: /proc/self/clear_refs resets the mark), so it counts native allocations
(our kernels, OpenBLAS, faiss, torch) that tracemalloc cannot see. It needs fixed malloc
thresholds (below); timings run with glibc's steady-state thresholds instead
(``steady_state_malloc``), because the fixed ones fault every freed mid-sized buffer in again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable


def _allocations_return_to_the_os() -> None:
    # glibc raises its mmap threshold after large frees, after which big temporaries are reused
    # from the heap and a warm call shows no extra memory. A fixed threshold keeps every large
    # allocation an mmap that is unmapped on free, so each call's peak is measured the same way.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except OSError:
        pass


_allocations_return_to_the_os()


@contextlib.contextmanager
def steady_state_malloc():
    """glibc's own steady state for the timed calls of code that allocates many mid-sized
    buffers (a CNN forward): thresholds at their dynamic ceiling, so freed buffers are reused
    instead of being unmapped and faulted in again, which doubles the time of a batch-1 torch
    forward. Memory measurements outside the block keep the fixed thresholds."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        yield
        return
    libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: glibc's dynamic maximum on 64-bit
    libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD: twice that, as glibc sets it
    try:
        yield
    finally:
        _allocations_return_to_the_os()
        libc.malloc_trim(0)


def status_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS: resident set now, VmHWM: its high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_once(fn: Callable[[], object]) -> tuple[object, float, int]:
    """Runs fn once; returns (its result, seconds, peak extra resident bytes during the call).
    For peers too slow to repeat, and for whole fits."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status_kib("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = status_kib("VmHWM")
    return result, seconds, max(0, peak - before) * 1024


def peak_extra_memory(fn: Callable[[], object]) -> tuple[object, int]:
    """Runs fn once; returns (its result, peak extra resident bytes during the call)."""
    result, _, peak = measure_once(fn)
    return result, peak


def timed(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> tuple[object, float]:
    """(last result, median wall-clock seconds) of fn over `repeat` runs after `warmup` runs,
    with glibc's steady-state allocator (as in a user's long-running process)."""
    times, result = [], None
    with steady_state_malloc():
        for _ in range(warmup):
            fn()
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of fn (see :func:`timed`)."""
    return timed(fn, repeat=repeat, warmup=warmup)[1]


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int, warmup: bool = True) -> dict:
    """{name: (last result, fastest seconds)} of ``rounds`` interleaved runs of every fn (after
    one warm-up call each), with glibc's steady-state allocator. On a shared machine the fastest
    of interleaved rounds is the least disturbed, and load changes hit every side alike."""
    best = {name: [None, float("inf")] for name in fns}
    with steady_state_malloc():
        if warmup:
            for fn in fns.values():
                fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                best[name][0] = fn()
                best[name][1] = min(best[name][1], time.perf_counter() - t0)
    return {name: tuple(value) for name, value in best.items()}


def measure(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Time (median) and peak extra memory of fn."""
    _, peak = peak_extra_memory(fn)
    return {"seconds": median_time(fn, repeat=repeat, warmup=warmup), "peak_bytes": peak}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> dict:
    import xmodal

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": xmodal.get_num_threads(),
        "date": _dt.date.today().isoformat(),
        "commit": git_commit(),
        "xmodal": xmodal.__version__,
    }


def machine_line() -> str:
    m = machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} threads used); "
            f"date {m['date']}; commit {m['commit']}; load average {load} (1, 5, 15 min) when printed")


def fmt_seconds(s: float) -> str:
    if s != s:  # NaN: not run
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_bytes(b: float) -> str:
    if b != b:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
