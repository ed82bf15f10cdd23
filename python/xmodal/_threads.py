"""Thread pools sized to the CPUs this process may use, and OpenMP threads that do not spin.

Two things make a multi-threaded program a bad neighbour on a shared machine:

- It sizes its thread pools from the machine's core count. A process pinned to fewer cores
  (``taskset``, cpusets) or capped by a cgroup CPU quota (Docker ``--cpus``, Kubernetes
  limits) then runs more threads than it has CPU time for, and each parallel region waits for
  its slowest, descheduled thread.
- OpenMP threads busy-wait at the end of every parallel region (libgomp spins about 300,000
  iterations by default) hoping for more work. Alone on the machine that saves a wake-up;
  with other busy processes on the same cores the spinning burns the time slices those
  processes (and our own descheduled threads) need: measured here, PatchCore slowed 6.7x next
  to two busy processes where fair sharing costs about 2x.

:func:`configure_environment` runs when ``xmodal`` is imported, before the native module
(and with it the OpenMP runtime, which reads its settings once when it loads) is loaded. It
sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep on a futex when idle; ``KMP_BLOCKTIME=0`` is
the same for LLVM/Intel OpenMP) unless the user already chose a wait policy or spin count.
:func:`configure_native` and :func:`configure_torch` cap xmodal's kernels and torch's
intra-op pool at :func:`available_cpus`; a smaller setting the user made is kept, and
``XMODAL_NUM_THREADS`` overrides the count. Results do not depend on any of this: every
kernel gives identical results for any thread count (tested).

torch shares the OpenMP runtime (``libgomp.so.1``) with xmodal's kernels. If torch was
imported before xmodal, the runtime was already loaded with its own settings: the wait policy
cannot change any more and :func:`thread_info` reports ``wait_policy_applied=False`` (import
xmodal first, or export ``OMP_WAIT_POLICY=PASSIVE`` in the shell).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "configure_environment", "configure_native", "configure_torch",
           "thread_info"]

# Variables through which a user (or a launcher) already chose how idle OpenMP threads wait.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_STATE: dict = {"wait_policy_applied": False, "set_variables": {}, "runtime_loaded_before": False,
                "torch_configured": False, "native_configured": False}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(text: str | None) -> float | None:
    # cpu.max: "<quota> <period>" or "max <period>" (no limit).
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(quota_text: str | None, period_text: str | None) -> float | None:
    # cpu.cfs_quota_us is -1 when there is no limit.
    try:
        quota, period = float(quota_text or ""), float(period_text or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup_paths(proc_cgroup: str | None) -> dict[str, str]:
    """controller -> this process's cgroup path, from /proc/self/cgroup ("" = the v2 tree)."""
    paths = {}
    for line in (proc_cgroup or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _ancestors(root: Path, relative: str) -> list[Path]:
    """root/relative and each of its parents up to root: a quota anywhere above applies too."""
    parts = [p for p in relative.split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup", proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when unlimited.

    Reads cgroup v2 (``cpu.max``) and v1 (``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us``),
    at the process's own cgroup and every ancestor up to ``root`` (the smallest quota wins).

    Args:
        root: where the cgroup filesystem is mounted (tests pass a fake tree).
        proc_cgroup: the text of ``/proc/self/cgroup`` (default: read it).
    """
    root = Path(root)
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    own = _own_cgroup_paths(proc_cgroup)
    limits = []
    for directory in _ancestors(root, own.get("", "")):
        limits.append(_quota_v2(_read(directory / "cpu.max")))
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        if not base.is_dir():
            continue
        relative = own.get("cpu", "")
        for directory in _ancestors(base, relative):
            limits.append(_quota_v1(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")))
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def available_cpus() -> int:
    """CPUs this process may actually use: its affinity mask, capped by the cgroup CPU quota
    (rounded up: a 1.5-CPU quota still lets two threads run), at least 1.

    ``XMODAL_NUM_THREADS`` (a positive integer) overrides it.
    """
    override = os.environ.get("XMODAL_NUM_THREADS", "").strip()
    if override:
        try:
            value = int(override)
        except ValueError:
            value = 0
        if value < 1:
            msg = f"XMODAL_NUM_THREADS must be a positive integer; got {override!r}"
            raise ValueError(msg)
        return value
    cpus = _affinity_count()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def _runtime_loaded() -> bool:
    """True when an OpenMP runtime is already mapped into this process (it has read its
    environment then, and a wait policy set now would not apply)."""
    maps = _read(Path("/proc/self/maps"))
    if maps is None:
        return False
    return any(name in maps for name in ("libgomp", "libiomp", "libomp.so"))


def configure_environment(environ: dict | None = None) -> dict[str, str]:
    """Asks the OpenMP runtime to wait passively, unless the user chose a wait policy.

    Must run before the OpenMP runtime loads (``xmodal/__init__.py`` calls it first thing).
    Returns the variables it set (empty when the user had set any of ``OMP_WAIT_POLICY``,
    ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in _WAIT_VARIABLES):
        return {}
    chosen = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    env.update(chosen)
    if environ is None:
        _STATE["runtime_loaded_before"] = _runtime_loaded()
        _STATE["wait_policy_applied"] = not _STATE["runtime_loaded_before"]
        _STATE["set_variables"] = dict(chosen)
    return chosen


def _user_fixed_threads() -> bool:
    return any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))


def configure_native(module) -> None:
    """Caps the threads of xmodal's kernels (``module`` = ``xmodal._C``) at :func:`available_cpus`
    unless ``OMP_NUM_THREADS`` fixes them; an explicit ``XMODAL_NUM_THREADS`` is applied as is."""
    if _STATE["native_configured"]:
        return
    _STATE["native_configured"] = True
    explicit = bool(os.environ.get("XMODAL_NUM_THREADS", "").strip())
    if _user_fixed_threads() and not explicit:
        return
    wanted = available_cpus()
    if explicit or module.num_threads() > wanted:
        module.set_num_threads(wanted)


def configure_torch() -> None:
    """Caps torch's intra-op threads at :func:`available_cpus` (once; imports torch). A user
    who set ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, or fewer threads, keeps their choice."""
    if _STATE["torch_configured"]:
        return
    _STATE["torch_configured"] = True
    import torch

    explicit = bool(os.environ.get("XMODAL_NUM_THREADS", "").strip())
    if _user_fixed_threads() and not explicit:
        return
    wanted = available_cpus()
    if explicit or torch.get_num_threads() > wanted:
        torch.set_num_threads(wanted)


def thread_info() -> dict:
    """How xmodal sized and configured its threads: ``available_cpus``, ``affinity_cpus``,
    ``cgroup_quota`` (CPUs or None), ``kernel_threads``, ``torch_threads`` (None until torch is
    used), the wait-policy variables in effect and whether xmodal's choice could apply."""
    import sys

    from ._backend import get_num_threads

    torch = sys.modules.get("torch")
    return {
        "available_cpus": available_cpus(),
        "affinity_cpus": _affinity_count(),
        "cgroup_quota": cgroup_cpu_limit(),
        "kernel_threads": get_num_threads(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "wait_policy": {name: os.environ[name] for name in _WAIT_VARIABLES if name in os.environ},
        "wait_policy_set_by_xmodal": bool(_STATE["set_variables"]),
        "wait_policy_applied": bool(_STATE["wait_policy_applied"]),
    }
