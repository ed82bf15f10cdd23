"""The xmodal command line: every subcommand runs; user errors are one line with exit code != 0."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from xmodal.cli import main  # noqa: E402
from xmodal.data import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    synthetic.make_dataset(root, categories=["puck"], n_train=4, n_test=1, n_test_good=2, image_size=96, seed=5)
    return root


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
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

    assert Image.open(out_png).size == (2 * 96, 96)


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
    code, _, err = run(args + ["--quiet"], capsys)
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
