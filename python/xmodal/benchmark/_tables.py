"""The benchmark's tables: accuracy in the study's layout, efficiency like its Table 3, the
machine they were measured on; as Markdown, CSV rows and JSON."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

SHOWN = ("I-AUROC", "P-AUROC", "AUPRO@30%", "AUPRO@1%")  # the accuracy tables (JSON/CSV hold all six)


def machine() -> dict:
    """CPU model, cores, torch / xmodal versions, the repository commit (when xmodal runs from a
    git checkout), date and load: the facts a speed table needs."""
    import xmodal

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        torch_version, gpu = None, None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "gpu": gpu, "torch": torch_version,
            "xmodal": xmodal.__version__, "commit": _commit(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None}


def _commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_line(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores{gpu}; torch {m['torch']}, xmodal {m['xmodal']}, "
            f"commit {m['commit'] or 'unknown'}, Python {m['python']}; {m['date']}; "
            f"load average {m['load_average']} at the start")


# --- accuracy ---------------------------------------------------------------------------------


def _cell(result: dict | None, metric: str) -> str:
    if result is None:
        return "—"
    if result["status"] != "ok":
        return "failed"
    value = result["metrics"].get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    interval = result.get("ci", {}).get(metric)
    if interval and not any(math.isnan(v) for v in interval):
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return text


def averages(results: dict, methods: list[str], categories: list[str], metric: str) -> dict:
    """method -> (mean over its finished categories, how many finished)."""
    out = {}
    for m in methods:
        values = [r["metrics"][metric] for c in categories if (r := results.get((m, c))) and r["status"] == "ok"]
        values = [v for v in values if v is not None and not math.isnan(v)]
        out[m] = (float(np.mean(values)) if values else math.nan, len(values))
    return out


def accuracy_markdown(results: dict, methods: list[str], categories: list[str], settings: dict) -> str:
    """One table per metric: categories as rows, methods as columns, the average last (the
    layout of the study's Tables 5 and 6)."""
    ci = (f"; [low, high]: 95 % bootstrap interval over test images ({settings['bootstrap']} resamples)"
          if settings["bootstrap"] else "")
    parts = []
    for metric in SHOWN:
        lines = [f"**{metric}** (protocol {settings['protocol']}{ci if metric != 'P-AUROC' else ''})", "",
                 "| Category | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        for c in categories:
            lines.append(f"| {c} | " + " | ".join(_cell(results.get((m, c)), metric) for m in methods) + " |")
        mean = averages(results, methods, categories, metric)
        cells = []
        for m in methods:
            value, count = mean[m]
            text = "—" if count == 0 else f"**{value:.3f}**"
            cells.append(text + (f" ({count} of {len(categories)})" if 0 < count < len(categories) else ""))
        lines.append("| **average** | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def failures_markdown(results: dict) -> str:
    failed = [(k, r) for k, r in results.items() if r["status"] != "ok"]
    if not failed:
        return ""
    lines = ["Failed jobs (their cells read \"failed\"; the other jobs ran; rerun the command to retry them):", ""]
    lines += [f"- {m} / {c}: {r['error']}" for (m, c), r in failed]
    return "\n".join(lines) + "\n"


def accuracy_rows(results: dict) -> list[dict]:
    """CSV rows, one per (method, category, metric)."""
    rows = []
    for (m, c), r in results.items():
        if r["status"] != "ok":
            rows.append({"method": m, "category": c, "status": r["status"], "metric": "", "value": "",
                         "ci_low": "", "ci_high": "", "error": r.get("error", "")})
            continue
        for metric, value in r["metrics"].items():
            low, high = r.get("ci", {}).get(metric, ("", ""))
            rows.append({"method": m, "category": c, "status": "ok", "metric": metric, "value": value,
                         "ci_low": low, "ci_high": high, "error": ""})
    return rows


# --- efficiency -------------------------------------------------------------------------------


def efficiency(results: dict, methods: list[str]) -> list[dict]:
    """Per method, over its finished categories: images/s and ms per image (median, p95) from
    every test image's latency after the warm-up, mean fit time, the largest peak memories,
    the mean model size on disk and extra parameters (values stored beyond the backbone)."""
    rows = []
    for m in methods:
        done = [r for (method, _), r in results.items() if method == m and r["status"] == "ok"]
        if not done:
            rows.append({"method": m, "categories": 0})
            continue
        latencies = np.concatenate([np.asarray(r["latency_ms"], dtype=np.float64) for r in done])

        def largest(key, jobs=done):
            values = [r[key] for r in jobs if r.get(key) is not None]
            return max(values) if values else None

        rows.append({
            "method": m, "categories": len(done), "images": int(latencies.size),
            "images_per_second": float(1000.0 / latencies.mean()),
            "ms_median": float(np.median(latencies)), "ms_p95": float(np.percentile(latencies, 95)),
            "fit_seconds": float(np.mean([r["fit_seconds"] for r in done])),
            "fit_peak_bytes": largest("fit_peak_bytes"), "test_peak_bytes": largest("test_peak_bytes"),
            "model_bytes": float(np.mean([r["model_bytes"] for r in done])),
            "extra_values": float(np.mean([r["extra_values"] for r in done])),
            "extra_bytes": float(np.mean([r["extra_bytes"] for r in done])),
            "backbones": sorted({str(r.get("backbones")) for r in done}),
        })
    return rows


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def efficiency_markdown(rows: list[dict], machine_facts: dict) -> str:
    lines = ["| Method | images/s | ms/image (median) | ms/image (p95) | fit (s/category) | peak RSS fit (MiB) | "
             "peak RSS test (MiB) | model on disk (MiB) | extra values (M) | extra (MiB) | backbones |",
             "|---|" + "---:|" * 9 + "---|"]
    for r in rows:
        if not r.get("categories"):
            lines.append(f"| {r['method']} | " + " | ".join(["—"] * 10) + " |")
            continue
        lines.append(
            f"| {r['method']} | {r['images_per_second']:.2f} | {r['ms_median']:.1f} | {r['ms_p95']:.1f} | "
            f"{r['fit_seconds']:.1f} | {_mib(r['fit_peak_bytes'])} | {_mib(r['test_peak_bytes'])} | "
            f"{_mib(r['model_bytes'])} | {r['extra_values'] / 1e6:.2f} | {_mib(r['extra_bytes'])} | "
            f"{', '.join(r['backbones'])} |")
    note = ("Per test image, batch 1, after one warm-up image, wall time of `predict` (features, scoring, map "
            "post-processing; image decoding excluded). Peak RSS: the job process's resident-set high-water mark "
            "during fit / evaluation. Extra values: every array the model stores beyond its pretrained backbone "
            "(memory banks, Gaussians, trained networks; the study's Table 3 counts trained weights only, so "
            f"PatchCore's bank is 0 there). Machine: {machine_line(machine_facts)}.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def summary_markdown(results: dict, methods: list[str], categories: list[str], rows: list[dict]) -> str:
    """One line per method: the average accuracy and the speed and size figures (``summary.md``,
    what a "which method for my line" section quotes)."""
    means = {metric: averages(results, methods, categories, metric) for metric in SHOWN}
    speed = {r["method"]: r for r in rows}
    lines = ["| Method | " + " | ".join(SHOWN) + " | ms/image (median) | images/s | fit (s) | model (MiB) |",
             "|---|" + "---:|" * (len(SHOWN) + 4)]
    for m in methods:
        cells = [("—" if means[metric][m][1] == 0 else f"{means[metric][m][0]:.3f}") for metric in SHOWN]
        r = speed.get(m, {})
        if r.get("categories"):
            cells += [f"{r['ms_median']:.1f}", f"{r['images_per_second']:.1f}", f"{r['fit_seconds']:.1f}",
                      _mib(r["model_bytes"])]
        else:
            cells += ["—"] * 4
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
