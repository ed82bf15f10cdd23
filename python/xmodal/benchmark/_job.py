"""One (method, category) job of ``xmodal benchmark``: fit, save, evaluate, time; never raises.

A job is described by a JSON-serialisable ``spec`` (method, its options, category, dataset,
protocol, bootstrap, seed, max_train); its result is a JSON-serialisable dict with ``status``
"ok" (metrics, timings, memory, model size) or "failed" (the error and its traceback), and the
spec it ran, so an unchanged finished job is recognised and not run again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

RESULT = "result.json"


def _reset_peak() -> bool:
    from ..evaluation import _peak_rss_reset

    return _peak_rss_reset()


def _peak() -> int | None:
    from ..evaluation import _status_bytes

    return _status_bytes("VmHWM")


class _Timed:
    """The detector, with the wall time of every ``predict_batch`` call recorded per image
    (``evaluate`` calls it on batches of one after its warm-up ``predict``)."""

    def __init__(self, detector) -> None:
        self._detector = detector
        self.seconds: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self._detector, name)

    def predict_batch(self, samples, batch_size=None):
        started = time.perf_counter()
        results = self._detector.predict_batch(samples, batch_size=batch_size)
        self.seconds.append((time.perf_counter() - started) / max(1, len(results)))
        return results


def _reader(spec: dict, split: str):
    from ..data import Eyecandies, MVTec3D

    return (Eyecandies if spec["dataset"] == "eyecandies" else MVTec3D)(spec["data"], spec["category"], split)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _run(spec: dict, model_dir: Path) -> dict:
    from ..evaluation import evaluate
    from ..methods import create
    from ..methods.samples import head

    detector = create(spec["method"], **spec["options"])
    train = _reader(spec, "train")
    if spec.get("max_train"):
        train = head(train, spec["max_train"])
    measured = _reset_peak()
    started = time.perf_counter()
    detector.fit(train)
    fit_seconds = time.perf_counter() - started
    fit_peak = _peak() if measured else None
    state = detector._state()  # what the method adds to its backbone: banks, Gaussians, networks
    extra_values = int(sum(np.asarray(v).size for v in state.values()))
    extra_bytes = int(sum(np.asarray(v).nbytes for v in state.values()))
    path = detector.save(model_dir)
    model_bytes = _folder_bytes(path)
    timed = _Timed(detector)
    report = evaluate(timed, _reader(spec, "test"), protocol=spec["protocol"], bootstrap=spec["bootstrap"],
                      seed=spec["seed"], batch_size=1, progress_bar=False)
    latencies = np.array(timed.seconds) * 1000.0
    metrics = {k: v for k, v in report.items() if k in ("I-AUROC", "P-AUROC") or k.startswith("AUPRO@")}
    return {
        "metrics": metrics,
        "ci": report.get("ci", {}),
        "bootstrap_used": report.get("bootstrap", 0),
        "test_samples": report["samples"],
        "train_samples": len(train),
        "latency_ms": [round(float(x), 4) for x in latencies],
        "ms_median": float(np.median(latencies)),
        "ms_p95": float(np.percentile(latencies, 95)),
        "images_per_second": float(1000.0 / latencies.mean()),
        "fit_seconds": fit_seconds,
        "fit_peak_bytes": fit_peak,
        "test_peak_bytes": report.get("peak_memory_bytes"),
        "model_bytes": model_bytes,
        "extra_values": extra_values,
        "extra_bytes": extra_bytes,
        "backbones": detector.info.get("backbones"),
        "backbones_reason": detector.info.get("backbones_reason"),
        "threshold": detector.threshold,
        "at_threshold": report.get("at_threshold"),
    }


def run_job(spec: dict, job_dir: str | None = None, keep_model: bool = False) -> dict:
    """Runs one job; any exception becomes a "failed" result (KeyboardInterrupt propagates).

    Args:
        spec: the job (see the module docstring).
        job_dir: where the model is saved when ``keep_model`` (else a temporary folder).
        keep_model: keep the fitted model in ``job_dir/model``.
    """
    started = time.time()
    scratch = None
    try:
        if keep_model and job_dir is not None:
            model_dir = Path(job_dir) / "model"
        else:
            scratch = tempfile.mkdtemp(prefix="xmodal-benchmark-")
            model_dir = Path(scratch) / "model"
        result = {"status": "ok", **_run(spec, model_dir)}
    except Exception as exc:  # isolate the failure: the other jobs go on
        text = str(exc).strip().splitlines()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {text[0] if text else ''}",
                  "traceback": traceback.format_exc()}
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    result.update({"spec": spec, "started": started, "wall_seconds": time.time() - started, "pid": os.getpid()})
    return result


def write_result(job_dir: str | os.PathLike, result: dict) -> Path:
    """``job_dir/result.json``, written atomically (a killed job leaves no half file)."""
    from ..io import atomic_path

    folder = Path(job_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULT
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1, default=_json_default))
    return path


def read_result(job_dir: str | os.PathLike) -> dict | None:
    try:
        return json.loads((Path(job_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None


def run_job_to_file(spec: dict, job_dir: str, keep_model: bool, cpus=None) -> None:
    """Entry point of a job process: pin it to ``cpus``, run the job, write its result."""
    if cpus:
        _pin(cpus)
    write_result(job_dir, run_job(spec, job_dir, keep_model))


def _pin(cpus) -> None:
    """Restricts this process and its thread pools to the CPU set ``cpus``."""
    cpus = sorted(int(c) for c in cpus)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    import torch

    import xmodal

    torch.set_num_threads(len(cpus))
    xmodal.set_num_threads(len(cpus))


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
