"""``xmodal benchmark``: every registered method on the tiny synthetic set gives every table and
the plot; finished jobs are not recomputed; a failing job is reported and the others run; local
processes and (marked) Ray tasks give the same tables; the command line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xmodal.benchmark import FORMAT, is_benchmark_dir, read_result, run_benchmark
from xmodal.benchmark import _job as job_module
from xmodal.data import synthetic
from xmodal.methods import method_names

pytest.importorskip("torch")

CATEGORIES = ("puck", "ring")
FAST = {  # options that keep each job to seconds
    "cfm": {"epochs": 1},
    "padim": {"n_features": 16},
    "bridgenet": {"epochs": 1, "image_size": 96, "embed_dim": 64, "hidden": 64, "repeats": 2},
    "g2sf": {"n_synthetic": 2, "epochs": 1, "fuser_max_patches": 1000},
    "fastflow": {"input_size": 64, "epochs": 1, "batch_size": 4},
    "cflow": {"input_size": 64, "epochs": 1, "batch_size": 4, "coupling_blocks": 2},
    "csflow": {"input_sizes": [128, 64, 32], "epochs": 1, "batch_size": 4, "hidden_channels": 16},
    "differnet": {"input_sizes": [128, 64, 32], "epochs": 1, "batch_size": 4, "hidden": 32, "rotations": False},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "data"
    synthetic.make_dataset(root, categories=CATEGORIES, n_train=3, n_validation=2, n_test=1, n_test_good=1,
                           image_size=100, seed=5, defects=("stain", "dent"))
    return root


def test_every_method_has_fast_options():
    """The full run below fits every registered method: a new method brings options that keep it to
    seconds (a default training schedule would take the CI machine minutes per job)."""
    assert set(method_names()) <= set(FAST) | {"patchcore", "btf"}, set(method_names()) - set(FAST)


def _options(methods):
    return {m: FAST[m] for m in methods if m in FAST}


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """Every registered method on both categories, in this process."""
    out = tmp_path_factory.mktemp("runs") / "all"
    methods = method_names()
    lines = []
    summary = run_benchmark(data, out, methods=methods, options=_options(methods), backbones="offline", bootstrap=20,
                            workers=0, log=lines.append)
    return out, methods, summary, lines


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_method_and_category_gives_every_table(full_run):
    out, methods, summary, _ = full_run
    assert summary["ran"] == len(methods) * len(CATEGORIES) and summary["failed"] == 0
    for m in methods:
        for c in CATEGORIES:
            result = read_result(out / "jobs" / m / c)
            assert result["status"] == "ok", result.get("traceback")
            assert 0 <= result["metrics"]["I-AUROC"] <= 1 and result["test_samples"] == 3
            assert len(result["latency_ms"]) == 3  # every test image, timed after a warm-up prediction
            assert result["ms_p95"] >= result["ms_median"] > 0 and result["model_bytes"] > 0
            assert set(result["ci"]) >= {"I-AUROC", "AUPRO@30%", "AUPRO@1%"}
    accuracy = (out / "accuracy.md").read_text()
    for metric in ("I-AUROC", "P-AUROC", "AUPRO@30%", "AUPRO@1%"):
        assert f"**{metric}**" in accuracy
    header = next(line for line in accuracy.splitlines() if line.startswith("| Category |"))
    assert header == "| Category | " + " | ".join(methods) + " |"
    assert all(f"| {c} |" in accuracy for c in CATEGORIES) and accuracy.count("| **average** |") == 4
    rows = _read_csv(out / "accuracy.csv")
    assert {(r["method"], r["category"]) for r in rows} == {(m, c) for m in methods for c in CATEGORIES}
    assert {r["metric"] for r in rows} == {"I-AUROC", "P-AUROC", "AUPRO@30%", "AUPRO@10%", "AUPRO@5%", "AUPRO@1%"}
    speed = _read_csv(out / "efficiency.csv")
    assert [r["method"] for r in speed] == methods and all(int(r["images"]) == 6 for r in speed)
    efficiency = (out / "efficiency.md").read_text()
    assert "ms/image (median)" in efficiency and "torch" in efficiency and "commit" in efficiency
    document = json.loads((out / "benchmark.json").read_text())
    assert document["format"] == FORMAT and document["status"] == "finished" and is_benchmark_dir(out)
    assert len(document["jobs"]) == len(methods) * len(CATEGORIES) and document["machine"]["cores"] >= 1
    assert "## Accuracy" in (out / "benchmark.md").read_text()
    summary = (out / "summary.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in summary[2:]] == [f"| {m}" for m in methods]


def test_averages_are_the_mean_over_categories(full_run):
    out, methods, _, _ = full_run
    document = json.loads((out / "benchmark.json").read_text())
    for m in methods:
        values = [read_result(out / "jobs" / m / c)["metrics"]["I-AUROC"] for c in CATEGORIES]
        assert document["average"]["I-AUROC"][m] == pytest.approx(np.mean(values))
        assert f"**{np.mean(values):.3f}**" in (out / "accuracy.md").read_text()


def test_the_plot_is_drawn(full_run):
    pytest.importorskip("matplotlib")
    out = full_run[0]
    picture = (out / "figure1.png").read_bytes()
    assert picture.startswith(b"\x89PNG") and len(picture) > 10_000
    assert "figure1.png" in (out / "benchmark.md").read_text()


def test_resume_recomputes_nothing(full_run, data, monkeypatch):
    out, methods, _, _ = full_run
    before = {(m, c): (out / "jobs" / m / c / "result.json").stat().st_mtime_ns for m in methods for c in CATEGORIES}

    def refuse(spec, model_dir):
        raise AssertionError(f"recomputed {spec['method']}/{spec['category']}")

    monkeypatch.setattr(job_module, "_run", refuse)
    lines = []
    summary = run_benchmark(data, out, methods=methods, options=_options(methods), backbones="offline", bootstrap=20,
                            workers=0, log=lines.append)
    assert summary["ran"] == 0 and summary["reused"] == len(before)
    assert all((out / "jobs" / m / c / "result.json").stat().st_mtime_ns == t for (m, c), t in before.items())
    assert sum("not recomputed" in line for line in lines) == len(before)


def test_a_failure_is_reported_and_the_others_run(data, tmp_path, monkeypatch):
    from xmodal.methods import PaDiM

    out = tmp_path / "run"

    def broken(self, samples):
        raise RuntimeError("simulated failure")

    with monkeypatch.context() as patch:
        patch.setattr(PaDiM, "_fit", broken)
        summary = run_benchmark(data, out, methods=["padim", "btf"], options={"btf": {"modality": "xyz"}},
                                bootstrap=0, workers=0, categories=["puck"], log=None)
    assert summary["failed"] == 1 and read_result(out / "jobs" / "btf" / "puck")["status"] == "ok"
    failed = read_result(out / "jobs" / "padim" / "puck")
    assert failed["status"] == "failed" and "simulated failure" in failed["error"]
    accuracy = (out / "accuracy.md").read_text()
    assert "| puck | failed |" in accuracy and "padim / puck: RuntimeError: simulated failure" in accuracy
    # the next run retries the failed job only
    summary = run_benchmark(data, out, methods=["padim", "btf"], options={"btf": {"modality": "xyz"},
                            "padim": {"n_features": 16}}, backbones=None, bootstrap=0, workers=0,
                            categories=["puck"], log=None)
    assert (summary["ran"], summary["reused"], summary["failed"]) == (1, 1, 0)
    assert read_result(out / "jobs" / "padim" / "puck")["status"] == "ok"


def test_changed_settings_are_recomputed(data, tmp_path):
    out = tmp_path / "run"
    kwargs = {"methods": ["btf"], "categories": ["ring"], "bootstrap": 0, "workers": 0, "log": None}
    run_benchmark(data, out, options={"btf": {"modality": "xyz"}}, **kwargs)
    summary = run_benchmark(data, out, options={"btf": {"modality": "xyz", "grid": 14}}, **kwargs)
    assert summary["ran"] == 1 and read_result(out / "jobs" / "btf" / "ring")["spec"]["options"]["grid"] == 14


def test_local_processes(data, tmp_path):
    """Two jobs at a time, each in its own pinned process; a job failing in its process (d larger
    than the network's channels) is reported and the other finishes."""
    import os

    out = tmp_path / "procs"
    summary = run_benchmark(data, out, methods=["padim", "btf"], options={"padim": {"n_features": 1000},
                            "btf": {"modality": "xyz"}}, backbones="offline", bootstrap=0, workers=2, log=None)
    assert (summary["ran"], summary["failed"]) == (4, 2)
    for c in CATEGORIES:
        ok = read_result(out / "jobs" / "btf" / c)
        assert ok["status"] == "ok" and ok["pid"] != os.getpid()
        assert "n_features must be at most" in read_result(out / "jobs" / "padim" / c)["error"]


@pytest.mark.ray
def test_ray_local(data, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    summary = run_benchmark(data, out, methods=["btf"], options={"btf": {"modality": "xyz"}}, bootstrap=0,
                            ray="local", log=None)
    assert (summary["ran"], summary["failed"]) == (2, 0)
    assert all(read_result(out / "jobs" / "btf" / c)["status"] == "ok" for c in CATEGORIES)
    assert "| btf |" in (out / "efficiency.md").read_text()


# --- checks before any work --------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"methods": ["nope"]}, ValueError, "methods must be one of"),
    ({"methods": ["btf", "btf"]}, ValueError, "distinct"),
    ({"categories": ["bagel"]}, ValueError, "'bagel' is not in"),
    ({"protocol": "fast"}, ValueError, "protocol must be one of"),
    ({"bootstrap": -1}, ValueError, "bootstrap must be"),
    ({"workers": 1.5}, TypeError, "workers must be an int"),
    ({"options": {"padim": {"colour": 1}}}, TypeError, "options for padim: .*colour"),
    ({"options": {"padim": {"covariance": "diag"}}}, ValueError, "options for padim: covariance must be"),
    ({"options": {"cfm": {}}, "methods": ["btf"]}, ValueError, "not benchmarked: cfm"),
    ({"dataset": "mvtec"}, ValueError, "dataset must be one of"),
])
def test_bad_arguments(data, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        run_benchmark(data, tmp_path / "out", **{"methods": ["padim"], **kwargs})
    assert not (tmp_path / "out").exists()  # nothing written


def test_output_folder_rules(data, tmp_path):
    from xmodal.io import OutputPathError

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputPathError, match="out"):
        run_benchmark(data, other, methods=["btf"], log=None)
    with pytest.raises(OutputPathError, match="only reads"):
        run_benchmark(data, data / "puck" / "out", methods=["btf"], log=None)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        run_benchmark(tmp_path / "missing", tmp_path / "out", log=None)


def test_command_line(data, tmp_path, capsys):
    from xmodal.cli import main

    out = tmp_path / "cli"
    args = ["benchmark", "--data", str(data), "--out", str(out), "--methods", "btf", "--categories", "puck",
            "--set", "btf.modality=xyz", "--set", "btf.grid=14", "--bootstrap", "0", "--workers", "0", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ran 1 job(s), reused 0, failed 0" in printed and "| puck |" in printed
    assert read_result(out / "jobs" / "btf" / "puck")["spec"]["options"] == {"device": "cpu", "progress": False,
                                                                            "modality": "xyz", "grid": 14}
    assert main(args) == 0 and "ran 0 job(s), reused 1" in capsys.readouterr().out
    assert main([*args[:-1], "--set", "btf=1"]) == 1
    assert "expected METHOD.OPTION=VALUE" in capsys.readouterr().err
    assert main([*args[:-1], "--set", "cfm.epochs=1"]) == 1
    assert "cfm is not among the benchmarked methods" in capsys.readouterr().err
    assert main([*args[:3], "--out", str(tmp_path / "x"), "--methods", "nope"]) == 1
    assert "--methods: unknown nope" in capsys.readouterr().err
