"""``xmodal.evaluate``: run a fitted detector over a test split and compute the paper metrics."""

from __future__ import annotations

import os
import time

import numpy as np

from .progress import progress


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def evaluate(detector, samples, protocol: str = "exact", *, bootstrap: int = 0, seed: int = 0,
             batch_size: int = 4, progress_bar: bool = True, keep_results: bool = False) -> dict:
    """Scores every sample with ``detector`` and computes I-AUROC, P-AUROC, AUPRO@30/10/5/1 %.

    Args:
        detector: a fitted :class:`xmodal.methods.Detector`.
        samples: test samples with labels and ground-truth masks (e.g. ``MVTec3D(root, c, "test")``).
        protocol: "exact" (MVTec's official exact curve), "m3dm" (100 thresholds) or "cfm"
            (99 thresholds and CFM's map normalisations); see :mod:`xmodal.metrics`.
        bootstrap: bootstrap resamples for confidence intervals (0: none).
        batch_size: samples per ``predict_batch`` call.
        progress_bar: show a progress bar on stderr.
        keep_results: include the per-sample AnomalyResults under ``"results"``.

    Returns:
        dict: the metrics (see :func:`xmodal.metrics.evaluate_maps`) plus ``"samples"``,
        ``"seconds_per_sample"`` and ``"fps"`` (inference only, after a warm-up sample, batched
        as given), ``"peak_memory_bytes"`` (process peak resident memory during the run, Linux),
        ``"method"``, ``"backbones"`` and ``"protocol"``.
    """
    from .metrics import evaluate_maps

    samples = list(samples)
    if not samples:
        msg = "samples must hold at least one test Sample"
        raise ValueError(msg)
    detector.predict(samples[0])  # warm-up: lazy backbone construction, first-call allocations
    measured_peak = _peak_rss_reset()
    results = []
    started = time.perf_counter()
    for first in progress(range(0, len(samples), batch_size), "evaluating", enabled=progress_bar,
                          total=(len(samples) + batch_size - 1) // batch_size):
        results.extend(detector.predict_batch(samples[first : first + batch_size]))
    elapsed = time.perf_counter() - started
    peak = _status_bytes("VmHWM") if measured_peak else None
    maps = np.stack([r.map for r in results])
    masks = np.stack([detector.target_mask(s) for s in samples])
    labels = np.asarray([s.label for s in samples])
    scores = np.asarray([r.score for r in results], dtype=np.float64)
    report = evaluate_maps(None if protocol == "cfm" else scores, labels, maps, masks, protocol=protocol,
                           bootstrap=bootstrap, seed=seed)
    report.update({
        "protocol": protocol,
        "samples": len(samples),
        "seconds_per_sample": elapsed / len(samples),
        "fps": len(samples) / elapsed if elapsed > 0 else float("inf"),
        "peak_memory_bytes": peak,
        "method": detector.method,
        "backbones": detector.info.get("backbones"),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    })
    if keep_results:
        report["results"] = results
    return report
