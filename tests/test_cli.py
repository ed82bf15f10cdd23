"""The xmodal command line: every subcommand runs; user errors are one line with exit code != 0."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xmodal.cli import main  # noqa: E402
from xmodal.data import synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(root: Path) -> dict:
    """Every path under root with its size, modification time and mode."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    synthetic.make_dataset(root, categories=["puck"], n_train=4, n_test=1, n_test_good=2, image_size=96, seed=5)
    return root


@pytest.fixture(scope="module")
def dataset_snapshot(dataset):
    return _snapshot(dataset)


@pytest.fixture(scope="module")
def model(dataset, dataset_snapshot, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-model") / "puck"
    code = main(["fit", "--method", "cfm", "--data", str(dataset), "--category", "puck", "--out", str(out),
                 "--backbones", "offline", "--epochs", "1", "--quiet"])
    assert code == 0
    return out


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fit_writes_a_loadable_model(model):
    config = json.loads((model / "config.json").read_text())
    assert config["method"] == "cfm" and config["info"]["backbones"] == "offline"
    assert config["info"]["category"] == "puck" and config["config"]["epochs"] == 1


def test_test_writes_reports_and_maps(model, dataset, tmp_path, capsys):
    code, out, _ = run(["test", "--model", str(model), "--data", str(dataset), "--category", "puck",
                        "--out", str(tmp_path), "--save-maps", "--quiet", "--protocol", "cfm"], capsys)
    assert code == 0
    assert "| I-AUROC |" in out and "fps" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["metrics"]) >= {"I-AUROC", "P-AUROC", "AUPRO@30%", "AUPRO@1%", "fps", "peak_memory_bytes"}
    assert report["metrics"]["protocol"] == "cfm" and report["model"]["info"]["backbones"] == "offline"
    assert len(list((tmp_path / "maps").glob("*.png"))) == 2 + 7
    assert "backbones: offline" in (tmp_path / "report.md").read_text()


def test_predict_prints_score_and_saves_overlay(model, dataset, tmp_path, capsys):
    rgb = dataset / "puck" / "test" / "dent" / "rgb" / "000.png"
    xyz = dataset / "puck" / "test" / "dent" / "xyz" / "000.tiff"
    out_png = tmp_path / "heat.png"
    code, out, _ = run(["predict", "--model", str(model), str(rgb), str(xyz), "--save-map", str(out_png),
                        "--quiet"], capsys)
    assert code == 0
    assert np.isfinite(json.loads(out.splitlines()[0])["score"])
    from PIL import Image

    with Image.open(out_png) as overlay:
        assert overlay.size == (2 * 96, 96)


def test_info_and_bench(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0 and "efficientnet_lite0:" in out and "cuda_available" in out
    code, out, _ = run(["bench", "--quick"], capsys)
    assert code == 0 and "knn" in out and "greedy_coreset" in out


def test_demo_tiny(tmp_path, capsys):
    code, out, _ = run(["demo", "--size", "tiny", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "| I-AUROC |" in out and "heat maps:" in out
    assert list((tmp_path / "results" / "puck" / "maps").glob("*.png"))
    assert (tmp_path / "results" / "puck" / "model" / "config.json").is_file()


def test_patchcore_fit_and_test(dataset, tmp_path, capsys):
    out = tmp_path / "pc"
    code, _, _ = run(["fit", "--method", "patchcore", "--modality", "rgb+xyz", "--data", str(dataset),
                      "--category", "puck", "--out", str(out), "--backbones", "offline", "--quiet"], capsys)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "patchcore" and config["config"]["modality"] == "rgb+xyz"
    code, stdout, _ = run(["test", "--model", str(out), "--data", str(dataset), "--category", "puck",
                           "--out", str(tmp_path / "report"), "--quiet"], capsys)
    assert code == 0 and "| I-AUROC |" in stdout
    assert "patchcore" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--method", "cfm", "--data", "/nonexistent", "--category", "puck", "--out", "x"], "no such dataset"),
        (["fit", "--method", "nope", "--data", ".", "--category", "puck", "--out", "x"], "unknown"),
        (["fit", "--method", "cfm", "--data", "DATA", "--category", "bagel", "--out", "x"], "categories found: puck"),
        (["fit", "--method", "cfm", "--data", "DATA", "--category", "puck", "--out", "x", "--modality", "rgb"],
         "--modality applies to --method patchcore"),
        (["test", "--model", "/nonexistent", "--data", "DATA", "--category", "puck"], "model directory not found"),
        (["predict", "--model", "MODEL", "/nonexistent.png", "/nonexistent.tiff"], "nonexistent"),
    ],
)
def test_user_errors_are_one_line(args, message, dataset, model, capsys):
    args = [str(dataset) if a == "DATA" else str(model) if a == "MODEL" else a for a in args]
    code, _, err = run([*args, "--quiet"], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_corrupt_model_dir(model, dataset, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"")
    code, _, err = run(["test", "--model", str(broken), "--data", str(dataset), "--category", "puck"], capsys)
    assert code == 1 and "not an xmodal model config" in err and len(err.strip().splitlines()) == 1


def test_argument_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["fit"])
    assert exc.value.code == 2


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "xmodal.cli", "info"], capture_output=True, text=True)
    assert result.returncode == 0 and "xmodal" in result.stdout


# --- a CLI that behaves (issue 10 item 3) --------------------------------------------------------


def _subcommands():
    from xmodal.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version(capsys):
    import xmodal

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"xmodal {xmodal.__version__}"


def test_choices_are_the_library_constants():
    from xmodal.methods import method_names
    from xmodal.methods._backbones import CHOICES
    from xmodal.methods.options import IMAGE_MODALITIES, MODALITIES
    from xmodal.metrics import PROTOCOLS

    _, commands = _subcommands()
    options = {a.dest: a for a in commands["fit"]._actions}
    assert list(options["method"].choices) == method_names()
    assert {"cfm", "patchcore", "btf"} <= set(method_names())
    assert tuple(options["modality"].choices) == tuple(dict.fromkeys((*MODALITIES, *IMAGE_MODALITIES)))
    assert tuple(options["backbones"].choices) == CHOICES
    assert tuple({a.dest: a for a in commands["test"]._actions}["protocol"].choices) == tuple(PROTOCOLS)


def test_every_option_has_help_and_seed_only_where_it_acts():
    parser, commands = _subcommands()
    for name, sub in [("xmodal", parser), *commands.items()]:
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    with_seed = {name for name, sub in commands.items() if any(a.dest == "seed" for a in sub._actions)}
    assert with_seed == {"fit", "demo"}
    with_device = {name for name, sub in commands.items() if any(a.dest == "device" for a in sub._actions)}
    assert with_device == {"fit", "test", "predict", "demo", "benchmark"}


def test_device_is_honoured_by_test_and_predict(model, dataset, tmp_path, capsys, monkeypatch):
    import xmodal.methods

    rgb = str(dataset / "puck" / "test" / "good" / "rgb" / "000.png")
    xyz = str(dataset / "puck" / "test" / "good" / "xyz" / "000.tiff")
    for args in (["test", "--model", str(model), "--data", str(dataset), "--category", "puck", "--out", str(tmp_path)],
                 ["predict", "--model", str(model), rgb, xyz]):
        code, _, err = run([*args, "--device", "tpu", "--quiet"], capsys)
        assert code == 1 and "device must be 'cpu', 'cuda' or 'cuda:N'" in err and len(err.strip().splitlines()) == 1
        if not torch.cuda.is_available():
            code, _, err = run([*args, "--device", "cuda:0", "--quiet"], capsys)
            assert code == 1 and "torch sees no CUDA device" in err
    seen = []
    real = xmodal.methods.load
    monkeypatch.setattr(xmodal.methods, "load", lambda path, device=None: seen.append(device) or real(path, device))
    code, _, _ = run(["predict", "--model", str(model), rgb, xyz, "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and seen == ["cpu"]


PROBE = """
import sys
from xmodal.cli import main
cases = [line.split("\\t") for line in sys.stdin.read().splitlines()]
for case in cases:
    code = main(case)
    print("RESULT", code, "torch" in sys.modules, flush=True)
"""


def test_output_paths_are_checked_before_any_work(dataset, model, tmp_path):
    """Each mistake: exit 1, one line naming the option, and no torch imported (so no model was
    built or trained: the answer comes at once)."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    (tmp_path / "file.png").write_bytes(b"not written by xmodal")
    (tmp_path / "folder.png").mkdir()
    data = str(dataset)
    rgb = str(dataset / "puck" / "test" / "dent" / "rgb" / "000.png")
    xyz = str(dataset / "puck" / "test" / "dent" / "xyz" / "000.tiff")
    fit = ["fit", "--method", "cfm", "--data", data, "--category", "puck", "--quiet", "--out"]
    test = ["test", "--model", str(model), "--data", data, "--category", "puck", "--quiet"]
    predict = ["predict", "--model", str(model), rgb, xyz, "--quiet", "--save-map"]
    cases = [
        ([*fit, "."], "--out .: refusing to write to the current folder"),
        ([*fit, ".."], "--out ..: refusing to write to the current folder"),
        ([*fit, str(dataset / "puck" / "model")], "which xmodal only reads"),
        ([*fit, str(dataset.parent)], "current folder|which xmodal only reads"),
        ([*fit, "/proc/xmodal-model"], "is not writable"),
        ([*fit, str(notes)], "an existing folder that xmodal did not write"),
        ([*fit, str(tmp_path / "file.png")], "an existing file, not a folder"),
        ([*test, "--out", str(dataset / "reports")], "which xmodal only reads"),
        ([*test, "--out", str(notes)], "an existing folder that xmodal did not write"),
        ([*predict, str(dataset / "puck" / "test" / "dent" / "rgb" / "heat.png")], "which xmodal only reads"),
        ([*predict, str(tmp_path / "heat.jpg")], "ending in .png"),
        ([*predict, str(tmp_path / "file.png")], "an existing file that xmodal did not write"),
        ([*predict, str(tmp_path / "folder.png")], "is a folder"),
        (["convert-eyecandies", data, str(dataset / "converted")], "which xmodal only reads"),
        (["demo", "--out", str(notes), "--quiet"], "an existing folder that xmodal did not write"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", PROBE], input="\n".join("\t".join(c) for c, _ in cases),
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    results = [line.split() for line in result.stdout.splitlines() if line.startswith("RESULT")]
    errors = result.stderr.strip().splitlines()
    assert len(results) == len(cases) == len(errors), result.stderr
    for (case, message), (_, code, torch_loaded), error in zip(cases, results, errors, strict=False):
        assert code == "1" and re.search(message, error), (case, error)
        assert torch_loaded == "False", f"{case}: torch was imported before the error"
    assert (notes / "todo.txt").read_text() == "mine"
    assert (tmp_path / "file.png").read_bytes() == b"not written by xmodal"


def test_predict_prints_the_verdict_and_writes_the_raw_map(model, dataset, tmp_path, capsys):
    import tifffile

    import xmodal

    detector = xmodal.load(model)
    for defect in ("good", "crack"):
        rgb = dataset / "puck" / "test" / defect / "rgb" / "000.png"
        xyz = dataset / "puck" / "test" / defect / "xyz" / "000.tiff"
        picture = tmp_path / f"{defect}.png"
        code, out, _ = run(["predict", "--model", str(model), str(rgb), str(xyz), "--save-map", str(picture),
                            "--quiet"], capsys)
        assert code == 0  # whatever the verdict
        line, human = out.splitlines()[:2]
        printed = json.loads(line)
        result = detector.predict(xmodal.data.MVTec3D(dataset, "puck", "test", defects=[defect])[0])
        assert printed["score"] == result.score and printed["threshold"] == detector.threshold
        assert printed["normalized_score"] == result.normalized_score
        assert printed["verdict"] == result.verdict and printed["verdict"] in ("good", "anomalous")
        assert human.startswith(result.verdict) and "threshold" in human and "normalised score" in human
        raw = tifffile.imread(picture.with_suffix(".tiff"))
        assert raw.dtype == np.float32 and raw.shape == (96, 96)
        sample = xmodal.data.MVTec3D(dataset, "puck", "test", defects=[defect])[0]
        np.testing.assert_array_equal(raw, detector.map_on_image(result, sample))
        # a second run replaces xmodal's own files; --overwrite is not needed for them
        assert run(["predict", "--model", str(model), str(rgb), str(xyz), "--save-map", str(picture), "--quiet"],
                   capsys)[0] == 0


def test_a_model_without_calibration_says_so(model, dataset, tmp_path, capsys):
    import shutil

    from safetensors.numpy import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(model, old)
    document = json.loads((old / "config.json").read_text())
    document["info"].pop("calibration")
    (old / "config.json").write_text(json.dumps(document))
    state = {k: v for k, v in load_file(str(old / "model.safetensors")).items() if not k.startswith("calibration.")}
    save_file(state, str(old / "model.safetensors"))
    rgb = dataset / "puck" / "test" / "good" / "rgb" / "000.png"
    xyz = dataset / "puck" / "test" / "good" / "xyz" / "000.tiff"
    code, out, _ = run(["predict", "--model", str(old), str(rgb), str(xyz), "--save-map", str(tmp_path / "h.png"),
                        "--quiet"], capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["threshold"] is None
    assert "verdict unavailable (the model has no threshold" in out
    code, out, _ = run(["test", "--model", str(old), "--data", str(dataset), "--category", "puck", "--quiet",
                        "--out", str(tmp_path / "r")], capsys)
    assert code == 0 and "no calibrated threshold in this model" in out


def test_test_reports_precision_recall_f1(model, dataset, capsys):
    """Also: the default --out is the model directory, --save-maps writes there (and a second run
    replaces xmodal's own report and pictures)."""
    for _ in range(2):
        code, out, err = run(["test", "--model", str(model), "--data", str(dataset), "--category", "puck",
                              "--save-maps"], capsys)
        assert code == 0, err
    assert len(list((model / "maps").glob("*.png"))) == 9
    metrics = json.loads((model / "report.json").read_text())["metrics"]
    assert set(metrics["at_threshold"]) >= {"threshold", "precision", "recall", "F1", "TP", "FP", "FN", "TN"}
    assert metrics["at_threshold"]["threshold"] == json.loads((model / "config.json").read_text())["info"][
        "calibration"]["threshold"]
    assert "at the calibrated threshold" in out and "chosen on this test set" in out
    # the progress bar counts samples (its total; tqdm redraws on a timer, so 9/9 itself may never be drawn)
    assert re.search(r"evaluating:.*\b\d/9\b.*sample", err)


def test_corrupt_model_is_one_line_for_every_command(model, dataset, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    document = json.loads((broken / "config.json").read_text())
    document["config"]["mlp"] = 3
    (broken / "config.json").write_text(json.dumps(document))
    rgb = str(dataset / "puck" / "test" / "good" / "rgb" / "000.png")
    xyz = str(dataset / "puck" / "test" / "good" / "xyz" / "000.tiff")
    for args in (["predict", "--model", str(broken), rgb, xyz],
                 ["test", "--model", str(broken), "--data", str(dataset), "--category", "puck"]):
        code, _, err = run([*args, "--quiet"], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "corrupt model config" in err and str(broken / "config.json") in err


def test_convert_eyecandies(tmp_path, capsys):
    from tests.test_eyecandies import POSES, digest, write_raw_sample
    from xmodal.data import convert_eyecandies

    src = tmp_path / "raw"
    write_raw_sample(src / "Confetto" / "train" / "data", "000", POSES[0], seed=1)
    write_raw_sample(src / "Confetto" / "test_public" / "data", "00", POSES[1], mask=np.zeros((64, 64), bool))
    before = digest(src)
    code, out, _ = run(["convert-eyecandies", str(src), str(tmp_path / "out")], capsys)
    assert code == 0 and "--dataset eyecandies" in out
    convert_eyecandies(src, tmp_path / "python")
    assert digest(tmp_path / "out") == digest(tmp_path / "python") and digest(src) == before
    code, _, err = run(["convert-eyecandies", str(src), str(tmp_path / "out")], capsys)
    assert code == 1 and "--overwrite" in err  # a second conversion does not silently overwrite
    assert run(["convert-eyecandies", str(src), str(tmp_path / "out"), "--overwrite"], capsys)[0] == 0


def _interrupt_fit(dataset, out: Path, tmp: Path, sig: int) -> subprocess.CompletedProcess:
    log = tmp / f"stderr-{sig}"
    env = {**os.environ, "TMPDIR": str(tmp / "tmpdir")}
    (tmp / "tmpdir").mkdir(exist_ok=True)
    with open(log, "w") as stderr:
        command = [sys.executable, "-m", "xmodal.cli", "fit", "--method", "cfm", "--data", str(dataset), "--category",
                   "puck", "--out", str(out), "--backbones", "offline", "--epochs", "500", "--overwrite"]
        process = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL, env=env,  # SIGINT as in a
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # terminal
        deadline = time.monotonic() + 300
        while "training mapping networks" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(sig)
        process.wait(timeout=120)
    return process.returncode, log.read_text()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_fit_keeps_the_previous_model(dataset, model, tmp_path, sig, status):
    import shutil

    previous = tmp_path / "model"
    shutil.copytree(model, previous)
    before = {str(p.relative_to(previous)): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    code, err = _interrupt_fit(dataset, previous, tmp_path, sig)
    assert code == status, err
    assert {str(p.relative_to(previous)): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert list((tmp_path / "tmpdir").iterdir()) == []  # the feature cache is gone too


def test_background_removal_cache_stays_outside_the_dataset(dataset, tmp_path):
    from xmodal.data import MVTec3D
    from xmodal.data.preprocess import BackgroundRemoved

    test = MVTec3D(dataset, "puck", "test", defects=["good"])
    with pytest.raises(ValueError, match="lies inside the dataset root"):
        BackgroundRemoved(test, dataset / "cache")
    cached = BackgroundRemoved(test, tmp_path / "cache")
    cached.prepare()
    assert len(list((tmp_path / "cache").rglob("*.tiff"))) == len(test)


def test_no_command_wrote_into_the_dataset(dataset, dataset_snapshot):
    """Runs last in this module: fit, test --save-maps (into the model directory), predict
    --save-map, demo, the background-removal cache and convert-eyecandies have all run by now."""
    assert _snapshot(dataset) == dataset_snapshot
