"""``xmodal benchmark``: the study of Wang et al.'s "Benchmarking unsupervised anomaly detection"
as a command, on your data and hardware, for every registered method.

Every (method, category) pair is a job: fit on the category's good training images (calibrated
on its validation split), save the model (its size on disk), evaluate on the test split with
bootstrap intervals, and time every test image after a warm-up. The output folder gets:

- ``accuracy.md`` / ``accuracy.csv``: I-AUROC, P-AUROC, AUPRO@30 % and @1 % in the study's
  layout (categories as rows, methods as columns, the average last) with 95 % bootstrap
  intervals (:func:`xmodal.metrics.evaluate_maps`); the CSV and JSON hold all six metrics;
- ``efficiency.md`` / ``efficiency.csv``: like the study's Table 3 on this machine: images/s,
  ms per image (median and p95), fit time, peak memory, model size on disk, extra parameters
  beyond the backbone; the machine, torch and xmodal versions and the commit;
- ``figure1.png``: accuracy against ms per image, one point per method (needs matplotlib:
  ``pip install 'xmodal[plot]'``);
- ``summary.md``: one line per method (average accuracy, ms per image, images/s, fit time,
  model size);
- ``benchmark.md`` (all of it), ``benchmark.json`` (every job's result, the settings, the
  machine) and ``jobs/<method>/<category>/result.json``.

Resumable: a job whose ``result.json`` holds a finished result for the same settings is not run
again; a failed job (reported as "failed" in the tables, its error listed) is retried by the
next run. Jobs run in this process (``workers=0``), in ``workers`` local processes pinned to
disjoint CPU sets, or as Ray tasks (``ray="local"`` or a cluster address; ``xmodal[ray]``).

Example::

    from xmodal.benchmark import run_benchmark
    run_benchmark("mvtec3d_root", "runs/study", methods=["padim", "patchcore"], workers=2,
                  options={"patchcore": {"modality": "rgb"}})
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from . import _plot, _tables
from ._job import _json_default, read_result, write_result

__all__ = ["FORMAT", "is_benchmark_dir", "read_result", "run_benchmark", "write_result"]

FORMAT = "xmodal-benchmark/1"
MARKER = "benchmark.json"
DATASETS = ("mvtec3d", "eyecandies")


def is_benchmark_dir(folder: Path) -> bool:
    """Whether ``folder`` is an earlier ``xmodal benchmark`` output (resumable, replaceable)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _normalised(value):
    return json.loads(json.dumps(value))


def _check_options(methods: list[str], options: dict, common: dict) -> dict:
    """{method: {**common, **its options}} for the chosen methods; an option a method does not
    take, or a bad value, fails here, before any job runs."""
    from ..methods import create

    if not isinstance(options, dict):
        msg = f"options must be a dict {{method: {{option: value}}}}; got {type(options).__name__}"
        raise TypeError(msg)
    unknown = sorted(set(options) - set(methods))
    if unknown:
        msg = f"options name methods that are not benchmarked: {', '.join(unknown)} (methods: {', '.join(methods)})"
        raise ValueError(msg)
    checked = {}
    for method in methods:
        given = options.get(method, {})
        if not isinstance(given, dict):
            msg = f"options[{method!r}] must be a dict of constructor options; got {type(given).__name__}"
            raise TypeError(msg)
        given = {**common, **given}
        try:
            create(method, **given)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"options for {method}: {exc}") from None
        checked[method] = _normalised(given)
    return checked


def run_benchmark(data, out, *, methods=None, categories=None, dataset: str = "mvtec3d", options=None,
                  protocol: str = "exact", bootstrap: int = 200, seed: int = 0, max_train=None, device: str = "cpu",
                  backbones: str | None = None, workers: int = 1, ray: str | None = None, keep_models: bool = False,
                  overwrite: bool = False, log=print) -> dict:
    """Fits and tests every method on every category; writes the tables and the plot into ``out``.

    Args:
        data: dataset root in the MVTec 3D-AD layout (only read).
        out: output folder: new, empty, or an earlier benchmark (resumed).
        methods: registry names (default: every registered method, :func:`xmodal.methods.method_names`).
        categories: category folders (default: every category under ``data``).
        dataset: "mvtec3d" or "eyecandies" (after ``xmodal convert-eyecandies``).
        options: ``{method: {constructor option: value}}``, e.g. ``{"cfm": {"epochs": 2}}``.
        protocol: "exact", "m3dm" or "cfm" (:mod:`xmodal.metrics`).
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: seeds the bootstrap.
        max_train: fit on the first N training images only.
        device: "cpu" or "cuda[:N]", passed to every method.
        backbones: "auto" / "paper" / "offline" for every method (None: each method's default).
        workers: 0 runs the jobs in this process; N >= 1 in up to N local processes at a time.
        ray: "local" or a Ray cluster address: run the jobs as Ray tasks instead.
        keep_models: keep each fitted model in ``out/jobs/<method>/<category>/model``.
        overwrite: allow ``out`` to be a folder xmodal did not write (never anything outside it).
        log: called with one line per event (None: silent).

    Returns:
        dict with ``out``, the output ``files``, and the counts ``ran``, ``reused``, ``failed``.
    """
    from .. import _arrays
    from ..data import categories as find_categories
    from ..io import check_output
    from ..methods import method_names
    from ..methods.base import check_device
    from ..metrics import PROTOCOLS

    log = log or (lambda _line: None)
    root = Path(data)
    if not root.is_dir():
        msg = f"data {data}: no such dataset folder"
        raise FileNotFoundError(msg)
    _arrays.one_of(dataset, "dataset", DATASETS)
    _arrays.one_of(protocol, "protocol", tuple(PROTOCOLS))
    bootstrap = _arrays.integer(bootstrap, "bootstrap", minimum=0)
    seed = _arrays.integer(seed, "seed", minimum=0)
    workers = _arrays.integer(workers, "workers", minimum=0)
    max_train = _arrays.integer(max_train, "max_train", minimum=1, allow_none=True)
    device = check_device(device)
    methods = list(method_names() if methods is None else methods)
    known = method_names()
    for m in methods:
        _arrays.one_of(m, "methods", tuple(known))
    if not methods or len(set(methods)) != len(methods):
        msg = f"methods must name distinct registered methods; got {methods}"
        raise ValueError(msg)
    found = find_categories(root)
    categories = list(found if categories is None else categories)
    for c in categories:
        if c not in found:
            msg = f"categories: {c!r} is not in {root} (found: {', '.join(found) or 'none'})"
            raise ValueError(msg)
    if not categories:
        msg = f"no category folders in {root}"
        raise ValueError(msg)
    common = {"device": device, "progress": False}
    if backbones is not None:
        common["backbones"] = backbones
    per_method = _check_options(methods, {} if options is None else options, common)
    folder = check_output(out, "out", directory=True, protected=[root], reusable=is_benchmark_dir,
                          overwrite=overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"data": str(root.resolve()), "dataset": dataset, "methods": methods, "categories": categories,
                "protocol": protocol, "bootstrap": bootstrap, "seed": seed, "max_train": max_train,
                "options": per_method, "workers": workers, "ray": ray}
    _write_json(folder / MARKER, {"format": FORMAT, "status": "running", "settings": settings})

    jobs, results = [], {}
    for m in methods:
        for c in categories:
            spec = {"method": m, "category": c, "options": per_method[m], "data": settings["data"],
                    "dataset": dataset, "protocol": protocol, "bootstrap": bootstrap, "seed": seed,
                    "max_train": max_train}
            job_dir = folder / "jobs" / m / c
            earlier = read_result(job_dir)
            if earlier is not None and earlier.get("status") == "ok" and earlier.get("spec") == spec:
                results[(m, c)] = earlier
                log(f"{m} / {c}: finished earlier, not recomputed")
            else:
                jobs.append((spec, job_dir))
    counts = {"ran": len(jobs), "reused": len(results), "failed": 0}
    machine_facts = _tables.machine()
    order = [(m, c) for m in methods for c in categories]

    def on_done(spec: dict, result: dict) -> None:
        key = (spec["method"], spec["category"])
        results[key] = result
        if result["status"] == "ok":
            metrics = result["metrics"]
            log(f"{key[0]} / {key[1]}: I-AUROC {metrics['I-AUROC']:.3f}, AUPRO@30% {metrics['AUPRO@30%']:.3f}, "
                f"{result['ms_median']:.0f} ms/image, fit {result['fit_seconds']:.1f} s")
        else:
            counts["failed"] += 1
            log(f"{key[0]} / {key[1]}: FAILED: {result['error']}")
        _write_reports(folder, {k: results[k] for k in order if k in results}, settings, machine_facts, plot=False)

    started = time.perf_counter()
    if jobs:
        log(f"{len(jobs)} job(s) to run" + (f", {len(results)} reused" if results else "") +
            (f" on Ray ({ray})" if ray else f" in {workers} process(es)" if workers else " in this process"))
        from . import _runners

        if ray:
            threads = max(1, len(_runners.cpu_sets(1)[0]) // max(1, workers)) if ray == "local" else 1
            gpus = 1 if device.startswith("cuda") else 0
            _runners.run_ray(jobs, ray, keep_models, on_done, cpus_per_task=threads, gpus_per_task=gpus)
        elif workers == 0:
            _runners.run_inline(jobs, keep_models, on_done)
        else:
            _runners.run_processes(jobs, workers, keep_models, on_done)
    ordered = {k: results[k] for k in order if k in results}
    files = _write_reports(folder, ordered, settings, machine_facts, plot=True)
    _write_json(folder / MARKER, _document(ordered, settings, machine_facts, status="finished",
                                           seconds=time.perf_counter() - started))
    files.append(folder / MARKER)
    return {"out": folder, "files": files, **counts}


def _write_json(path: Path, document: dict) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=1, default=_json_default) + "\n")


def _write_text(path: Path, text: str) -> Path:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _document(results: dict, settings: dict, machine_facts: dict, status: str, seconds: float | None = None) -> dict:
    methods, categories = settings["methods"], settings["categories"]
    return {"format": FORMAT, "status": status, "settings": settings, "machine": machine_facts,
            "seconds": seconds,
            "average": {metric: {m: v for m, (v, _) in _tables.averages(results, methods, categories, metric).items()}
                        for metric in _tables.SHOWN},
            "efficiency": _tables.efficiency(results, methods),
            "jobs": [{**r, "latency_ms": r.get("latency_ms")} for r in results.values()]}


def _write_reports(folder: Path, results: dict, settings: dict, machine_facts: dict, plot: bool) -> list[Path]:
    methods, categories = settings["methods"], settings["categories"]
    accuracy = _tables.accuracy_markdown(results, methods, categories, settings) + _tables.failures_markdown(results)
    rows = _tables.efficiency(results, methods)
    speed = _tables.efficiency_markdown(rows, machine_facts)
    summary = _tables.summary_markdown(results, methods, categories, rows)
    files = [_write_text(folder / "accuracy.md", accuracy), _write_text(folder / "efficiency.md", speed),
             _write_text(folder / "summary.md", summary),
             _write_text(folder / "accuracy.csv", _csv(_tables.accuracy_rows(results))),
             _write_text(folder / "efficiency.csv", _csv([{k: v for k, v in r.items() if k != "backbones"}
                                                         for r in rows]))]
    figure = ""
    if plot:
        means = {metric: _tables.averages(results, methods, categories, metric) for metric in ("I-AUROC", "AUPRO@30%")}
        points = [{"method": r["method"], "ms_median": r.get("ms_median"),
                   **{metric: means[metric][r["method"]][0] for metric in means}} for r in rows]
        title = f"xmodal benchmark: {_tables.machine_line(machine_facts)}"
        path = _plot.accuracy_vs_time(points, folder / "figure1.png", title)
        if path is not None:
            files.append(path)
            figure = "\n![accuracy against time](figure1.png)\n"
        else:
            figure = "\n(figure1.png not drawn: matplotlib is not installed; pip install 'xmodal[plot]')\n"
    title = (f"# xmodal benchmark\n\n{len(methods)} methods x {len(categories)} categories of {settings['data']} "
             f"({settings['dataset']} layout), protocol {settings['protocol']}.\n")
    sections = [title, "## Summary (averages over the categories)\n\n" + summary, "## Accuracy\n\n" + accuracy,
                "## Efficiency\n\n" + speed + figure]
    files.append(_write_text(folder / "benchmark.md", "\n\n".join(sections)))
    _write_json(folder / MARKER, _document(results, settings, machine_facts, status="running"))
    return files

