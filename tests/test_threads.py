"""Thread pools sized from affinity and cgroup quota, passive OpenMP waiting, identical results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import xmodal
from xmodal import _threads
from xmodal.ops import coreset, knn, mlp


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- cgroup quota ---------------------------------------------------------------------------
def test_cgroup_v2_quota_of_own_cgroup(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000\n")
    _write(tmp_path / "app" / "job" / "cpu.max", "150000 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path, "0::/app/job\n") == pytest.approx(1.5)


def test_cgroup_v2_smallest_quota_of_ancestors_wins(tmp_path):
    _write(tmp_path / "app" / "cpu.max", "50000 100000\n")
    _write(tmp_path / "app" / "job" / "cpu.max", "max 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path, "0::/app/job\n") == pytest.approx(0.5)


def test_cgroup_v2_unlimited(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path, "0::/\n") is None


def test_cgroup_v1_quota(tmp_path):
    _write(tmp_path / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(tmp_path / "cpu" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    text = "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n"
    assert _threads.cgroup_cpu_limit(tmp_path, text) == pytest.approx(2.0)


def test_cgroup_v1_unlimited_and_garbage(tmp_path):
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "cpu.max", "not a quota\n")
    assert _threads.cgroup_cpu_limit(tmp_path, "1:cpu:/\ngarbage line\n") is None


def test_no_cgroup_filesystem(tmp_path):
    assert _threads.cgroup_cpu_limit(tmp_path / "missing", "") is None


# --- available CPUs -------------------------------------------------------------------------
def test_available_cpus_within_affinity_and_quota(monkeypatch):
    monkeypatch.delenv("XMODAL_NUM_THREADS", raising=False)
    cpus = _threads.available_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: 0.3)
    assert _threads.available_cpus() == 1  # a fractional quota still gets one thread
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: 1.5)
    assert _threads.available_cpus() == min(2, len(os.sched_getaffinity(0)))


def test_available_cpus_override(monkeypatch):
    monkeypatch.setenv("XMODAL_NUM_THREADS", "3")
    assert _threads.available_cpus() == 3
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv("XMODAL_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="XMODAL_NUM_THREADS"):
            _threads.available_cpus()


class _FakeNative:
    def __init__(self, threads):
        self.threads = threads

    def num_threads(self):
        return self.threads

    def set_num_threads(self, threads):
        self.threads = threads


@pytest.mark.parametrize(("start", "cpus", "expected"), [(8, 2, 2), (1, 2, 1), (2, 2, 2)])
def test_configure_native_caps_never_raises(monkeypatch, start, cpus, expected):
    monkeypatch.delenv("XMODAL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setitem(_threads._STATE, "native_configured", False)
    monkeypatch.setattr(_threads, "available_cpus", lambda: cpus)
    native = _FakeNative(start)
    _threads.configure_native(native)
    assert native.threads == expected


def test_configure_native_keeps_omp_num_threads(monkeypatch):
    monkeypatch.delenv("XMODAL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setitem(_threads._STATE, "native_configured", False)
    monkeypatch.setattr(_threads, "available_cpus", lambda: 2)
    native = _FakeNative(8)
    _threads.configure_native(native)
    assert native.threads == 8


def test_configure_environment_respects_user_choice():
    env = {"GOMP_SPINCOUNT": "1000"}
    assert _threads.configure_environment(env) == {}
    assert env == {"GOMP_SPINCOUNT": "1000"}
    env = {}
    assert _threads.configure_environment(env) == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


# --- in a fresh interpreter -----------------------------------------------------------------
def _run(code, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "XMODAL_NUM_THREADS"}}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


_INFO = "import json, xmodal; print(json.dumps(xmodal.thread_info()))"


def test_import_sets_passive_wait_policy():
    info = _run(_INFO)
    assert info["wait_policy"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert info["wait_policy_set_by_xmodal"]
    assert info["wait_policy_applied"]
    assert info["kernel_threads"] <= info["available_cpus"]


def test_import_keeps_user_wait_policy():
    info = _run(_INFO, OMP_WAIT_POLICY="ACTIVE")
    assert info["wait_policy"] == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not info["wait_policy_set_by_xmodal"]


def test_torch_imported_first_is_reported():
    info = _run("import torch; torch.ones(2).sum(); " + _INFO)
    assert not info["wait_policy_applied"]


def test_thread_override_applies_to_kernels_and_torch():
    code = ("import json, xmodal; from xmodal import _threads; _threads.configure_torch(); "
            "print(json.dumps(xmodal.thread_info()))")
    info = _run(code, XMODAL_NUM_THREADS="1")
    assert info["kernel_threads"] == 1
    assert info["torch_threads"] == 1


# --- results do not depend on the thread count ----------------------------------------------
@pytest.fixture
def restore_threads():
    before = xmodal.get_num_threads()
    yield
    xmodal.set_num_threads(before)


def _with_threads(threads, fn):
    xmodal.set_num_threads(threads)
    return fn()


def test_results_identical_for_any_thread_count(rng, restore_threads):
    bank = rng.standard_normal((3000, 37)).astype(np.float32)
    queries = rng.standard_normal((517, 37)).astype(np.float32)
    weights = [rng.standard_normal((64, 37)).astype(np.float32) * 0.2, rng.standard_normal((19, 64)).astype(np.float32)]
    biases = [rng.standard_normal(64).astype(np.float32), rng.standard_normal(19).astype(np.float32)]

    def run():
        dist, idx = knn(queries, bank, 5)
        return dist, idx, coreset(bank, n=50, projection=None, start=0), mlp(queries, weights, biases)

    one = _with_threads(1, run)
    for threads in (2, 3):
        other = _with_threads(threads, run)
        for a, b in zip(one, other, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
