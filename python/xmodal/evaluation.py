"""``xmodal.evaluate``: run a fitted detector over a test split and compute the paper metrics,
plus precision / recall / F1 of its verdicts.

The test split is read batch by batch (a dataset reader is indexed, never listed): what stays
in memory is one map and one resized ground-truth mask per sample, not the samples.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence

import numpy as np


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


def classification_at(scores, labels, threshold: float) -> dict:
    """Precision, recall and F1 of the verdict ``score > threshold`` (label 1 = anomalous).

    A ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    predicted = scores > threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": float(threshold), "precision": precision, "recall": recall, "F1": f1,
            "TP": tp, "FP": fp, "FN": fn, "TN": int(labels.size - tp - fp - fn)}


def best_f1(scores, labels) -> dict:
    """:func:`classification_at` at the threshold that maximises F1 on these very scores:
    halfway between two consecutive distinct scores (below the lowest when flagging everything
    is best). An optimistic figure: the threshold is chosen on the data it is judged on."""
    scores = np.asarray(scores, dtype=np.float64)
    distinct = np.unique(scores)
    if distinct.size == 0:
        msg = "scores must not be empty"
        raise ValueError(msg)
    spread = float(distinct[-1] - distinct[0]) or 1.0
    candidates = np.concatenate([[distinct[0] - spread], (distinct[:-1] + distinct[1:]) / 2])
    results = [classification_at(scores, labels, t) for t in candidates]
    return max(results, key=lambda r: (r["F1"], r["threshold"]))


def evaluate(detector, samples, protocol: str = "exact", *, bootstrap: int = 0, seed: int = 0,
             batch_size: int = 4, progress_bar: bool = True, keep_results: bool = False, on_result=None) -> dict:
    """Scores every sample with ``detector`` and computes I-AUROC, P-AUROC, AUPRO@30/10/5/1 %.

    Args:
        detector: a fitted :class:`xmodal.methods.Detector`.
        samples: test samples with labels and ground-truth masks (e.g. ``MVTec3D(root, c, "test")``),
            read one batch at a time.
        protocol: "exact" (MVTec's official exact curve), "m3dm" (100 thresholds) or "cfm"
            (99 thresholds and CFM's map normalisations); see :mod:`xmodal.metrics`.
        bootstrap: bootstrap resamples for confidence intervals (0: none).
        batch_size: samples per ``predict_batch`` call.
        progress_bar: show a progress bar on stderr (it counts samples).
        keep_results: include the per-sample AnomalyResults under ``"results"`` (they hold every
            map and extra: for small sets).
        on_result: called as ``on_result(sample, result)`` for every sample as soon as it is
            scored (e.g. to write its heat map), so nothing has to be kept for it.

    Returns:
        dict: the metrics (see :func:`xmodal.metrics.evaluate_maps`) plus ``"samples"``,
        ``"seconds_per_sample"`` and ``"fps"`` (inference only, after a warm-up sample, batched
        as given), ``"peak_memory_bytes"`` (process peak resident memory during the run, Linux),
        ``"method"``, ``"backbones"``, ``"protocol"``; with a detector threshold,
        ``"at_threshold"`` (precision, recall, F1, confusion counts of ``score > threshold``) and
        always ``"at_best_f1"``: the same at the F1-optimal threshold, chosen on the test set
        itself.
    """
    from ._arrays import one_of
    from .methods.samples import batches
    from .metrics import PROTOCOLS, evaluate_maps

    one_of(protocol, "protocol", tuple(PROTOCOLS))
    if isinstance(samples, Sequence):
        if len(samples) == 0:
            msg = "samples must hold at least one test Sample"
            raise ValueError(msg)
        first = samples[0]
    else:
        iterator = iter(samples)
        first = next(iterator, None)
        if first is None:
            msg = "samples must hold at least one test Sample"
            raise ValueError(msg)
        samples = itertools.chain([first], iterator)
    detector.predict(first)  # warm-up: lazy backbone construction, first-call allocations
    measured_peak = _peak_rss_reset()
    maps, masks, labels, scores, kept = [], [], [], [], []
    elapsed = 0.0
    for batch in batches(samples, batch_size, "evaluating", enabled=progress_bar):
        started = time.perf_counter()
        results = detector.predict_batch(batch, batch_size=len(batch))
        elapsed += time.perf_counter() - started
        for sample, result in zip(batch, results, strict=False):
            maps.append(result.map)
            masks.append(detector.target_mask(sample))
            labels.append(sample.label)
            scores.append(result.score)
            if on_result is not None:
                on_result(sample, result)
            if keep_results:
                kept.append(result)
    peak = _status_bytes("VmHWM") if measured_peak else None
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    report = evaluate_maps(None if protocol == "cfm" else scores, labels, maps, masks, protocol=protocol,
                           bootstrap=bootstrap, seed=seed)
    threshold = getattr(detector, "threshold", None)
    if threshold is not None:
        report["at_threshold"] = classification_at(scores, labels, threshold)
    report["at_best_f1"] = best_f1(scores, labels)
    report.update({
        "protocol": protocol,
        "samples": int(labels.size),
        "seconds_per_sample": elapsed / labels.size,
        "fps": labels.size / elapsed if elapsed > 0 else float("inf"),
        "peak_memory_bytes": peak,
        "method": detector.method,
        "backbones": detector.info.get("backbones"),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    })
    if keep_results:
        report["results"] = kept
    return report
