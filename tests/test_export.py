"""Detector.export / xmodal.load of exported directories, engines and bf16 (xmodal.engines).

Scores of the onnxruntime (and OpenVINO) path are compared with the torch path of the same
fitted model, for CFM and PatchCore with the offline and the (random-weight) paper backbones.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import xmodal  # noqa: E402
from tests import _export_data  # noqa: E402
from xmodal import engines  # noqa: E402
from xmodal.data import MVTec3D  # noqa: E402
from xmodal.engines import export as export_mod  # noqa: E402
from xmodal.methods import CFM, PatchCore  # noqa: E402

REL = _export_data.REL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _export_data.make_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def tests(dataset):
    return _export_data.picked_samples(dataset)


def _fit(det, dataset):
    return det.fit(MVTec3D(dataset, "puck", "train"))


@pytest.fixture(scope="module")
def cfm(dataset):
    return _fit(CFM(backbones="offline", epochs=2, progress=False, seed=7), dataset)


@pytest.fixture(scope="module")
def patchcore(dataset):
    return _fit(PatchCore(backbones="offline", progress=False), dataset)


@pytest.fixture(scope="module")
def cfm_export(cfm, tmp_path_factory):
    return cfm.export(tmp_path_factory.mktemp("exports") / "cfm")


def _torch_results(det, samples):
    det.engine, det.precision = "torch", "fp32"
    return [det.predict(s) for s in samples]


# --- export + load ----------------------------------------------------------------------------


def test_exported_cfm_runs_with_onnxruntime_like_torch(cfm, cfm_export, tests):
    reference = _torch_results(cfm, tests)
    assert sorted(os.listdir(cfm_export)) == ["config.json", "graph.mlp_2d3d.onnx", "graph.mlp_3d2d.onnx",
                                             "graph.rgb_backbone.onnx", "manifest.json", "model.safetensors"]
    loaded = xmodal.load(cfm_export)
    assert loaded.engine == "onnxruntime"
    _export_data.assert_same(reference, [loaded.predict(s) for s in tests])
    # the graphs stand in for the modules: no backbone was loaded from weight files
    assert type(loaded.extractor.rgb_backbone).__name__ == "Runner"
    assert loaded.extractor.xyz_backbone is loaded.extractor.rgb_backbone


def test_manifest_names_graphs_ops_and_tensorrt_path(cfm_export, cfm):
    manifest = json.loads((cfm_export / "manifest.json").read_text())
    assert manifest["format"] == "xmodal-export/1" and manifest["method"] == "cfm"
    assert manifest["aliases"] == {"xyz_backbone": "rgb_backbone"}
    graph = manifest["graphs"]["rgb_backbone"]
    assert graph["inputs"] == {"images": ["batch", 3, 224, 224]}
    assert graph["used_as"] == ["rgb_backbone", "xyz_backbone"]
    assert manifest["graphs"]["mlp_2d3d"]["inputs"] == {"rows": ["rows", 120]}
    assert any("{mlp_2d3d}" in step for step in manifest["pipeline"])
    assert "mlp_2d3d.0.weight" in manifest["state"]["arrays"] and "calibration.image_scores" in manifest["state"][
        "arrays"]
    trt = manifest["tensorrt"]
    assert trt["status"].startswith("never run")
    assert trt["profiles"]["rgb_backbone"] == {"min": "images:1x3x224x224", "opt": "images:1x3x224x224",
                                               "max": "images:8x3x224x224"}
    assert trt["profiles"]["mlp_3d2d"]["max"] == f"rows:{224 * 224}x120"
    assert trt["trtexec"]["rgb_backbone"].startswith("trtexec --onnx=graph.rgb_backbone.onnx --minShapes=images:1x3")
    for name in manifest["graphs"]:
        onnx.checker.check_model(str(cfm_export / f"graph.{name}.onnx"), full_check=True)


def test_exported_patchcore_with_a_fixed_batch(patchcore, tests, tmp_path):
    reference = _torch_results(patchcore, tests)
    path = patchcore.export(tmp_path / "pc", batch=2)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["batch"] == 2 and manifest["graphs"]["rgb_backbone"]["inputs"]["images"][0] == 2
    loaded = xmodal.load(path)
    _export_data.assert_same(reference, loaded.predict_batch(tests, batch_size=3))  # chunks of 2, the last one padded
    _export_data.assert_same(reference, [loaded.predict(s) for s in tests])


def test_engine_option_without_export(patchcore, tests):
    reference = _torch_results(patchcore, tests[:2])
    patchcore.engine = "onnxruntime"
    try:
        _export_data.assert_same(reference, [patchcore.predict(s) for s in tests[:2]])
    finally:
        patchcore.engine = "torch"
    twin = PatchCore(backbones="offline", engine="onnxruntime", precision="fp32")
    assert (twin.engine, twin.precision) == ("onnxruntime", "fp32") and "engine" not in twin.config


def test_paper_backbones_random_weights_cfm(dataset, tests, tmp_path):
    # the smaller mapping networks and one training image keep the 1152-channel training short
    det = CFM(backbones="paper", random_weights=True, pruning="T", epochs=1, progress=False, calibration=0,
              mlp="encoder_decoder", pointmae={"num_group": 64, "group_size": 16})
    det.fit([MVTec3D(dataset, "puck", "train")[0]])
    reference = _torch_results(det, tests[:2])
    path = det.export(tmp_path / "cfm-paper")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["graphs"]["xyz_backbone"]["inputs"] == {"neighborhoods": ["batch", "groups", "group_size", 3],
                                                             "centers": ["batch", "groups", 3]}
    assert manifest["tensorrt"]["profiles"]["xyz_backbone"]["max"] == "neighborhoods:8x64x16x3,centers:8x64x3"
    _export_data.assert_same(reference, [xmodal.load(path).predict(s) for s in tests[:2]])


def test_paper_backbones_random_weights_patchcore(dataset, tests, tmp_path):
    det = _fit(PatchCore(modality="rgb", backbones="paper", random_weights=True, progress=False, calibration=0),
               dataset)
    reference = _torch_results(det, tests[:2])
    path = det.export(tmp_path / "pc-paper")
    assert json.loads((path / "manifest.json").read_text())["graphs"]["rgb_backbone"]["outputs"] == {
        "layer2": ["batch", 512, 28, 28], "layer3": ["batch", 1024, 14, 14]}
    _export_data.assert_same(reference, [xmodal.load(path).predict(s) for s in tests[:2]])


# --- save rules, corrupt exports, bad input ----------------------------------------------------


def test_export_follows_the_save_rules(cfm, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"export\(path\).*did not write"):
        cfm.export(user)
    assert (user / "notes.txt").read_text() == "mine"
    path = cfm.save(tmp_path / "exp")
    cfm.export(path)  # a saved model directory (or an earlier export) is replaced atomically
    assert sorted(os.listdir(path))[:2] == ["config.json", "graph.mlp_2d3d.onnx"]
    (path / "graph.mine.txt").write_text("x")
    with pytest.raises(ValueError, match="did not write"):
        cfm.export(path)


def test_corrupt_or_incomplete_exports_are_refused(cfm_export, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cfm_export, broken)
    graph = broken / "graph.mlp_2d3d.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"corrupt export .*graph.mlp_2d3d.onnx.*SHA-256"):
        xmodal.load(broken)
    graph.unlink()
    with pytest.raises(ValueError, match=r"incomplete export: graph.mlp_2d3d.onnx is missing"):
        xmodal.load(broken)
    (broken / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt export manifest"):
        xmodal.load(broken)


def test_bad_options(cfm, cfm_export, tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        CFM(backbones="offline", engine="tflite")
    with pytest.raises(ValueError, match="precision must be one of"):
        cfm.precision = "fp16"
    with pytest.raises(ValueError, match="format must be one of"):
        cfm.export(tmp_path / "x", format="tflite")
    with pytest.raises(ValueError, match="batch"):
        cfm.export(tmp_path / "x", batch=0)
    with pytest.raises(ValueError, match="engine must be one of"):
        xmodal.load(cfm_export, engine="onnx")
    with pytest.raises(ValueError, match=r"bf16.*onnxruntime"):
        xmodal.load(cfm_export, precision="bf16").predict(_export_data.small_sample())
    with pytest.raises(ValueError, match="was exported with batch 'dynamic'"):
        xmodal.load(cfm_export).export(tmp_path / "y", batch=4)
    with pytest.raises(RuntimeError, match=r"unfitted|not fitted"):
        CFM(backbones="offline").export(tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()




def test_reexport_of_an_export_copies_its_graphs(cfm_export, tests, tmp_path):
    path = xmodal.load(cfm_export).export(tmp_path / "again")
    first = json.loads((cfm_export / "manifest.json").read_text())["graphs"]
    second = json.loads((path / "manifest.json").read_text())["graphs"]
    assert {n: g["sha256"] for n, g in first.items()} == {n: g["sha256"] for n, g in second.items()}


def test_runner_rejects_inputs_the_graph_was_not_exported_for(cfm_export):
    loaded = xmodal.load(cfm_export)
    runner = loaded.extractor.rgb_backbone
    with pytest.raises(ValueError, match=r"images has shape \(1, 3, 112, 112\); the exported graph takes "
                                         r"\(batch, 3, 224, 224\)"):
        runner(torch.zeros(1, 3, 112, 112))


# --- TensorRT: what can be tested without a GPU ------------------------------------------------


def test_tensorrt_engine_says_what_it_needs(cfm_export, tests):
    if engines.available()["tensorrt"]:
        pytest.skip("a TensorRT execution provider is installed: this checks the error without one")
    loaded = xmodal.load(cfm_export, engine="tensorrt")
    with pytest.raises(RuntimeError, match=r"TensorRT execution provider.*trtexec"):
        loaded.predict(tests[0])


def test_tensorrt_profiles_of_dynamic_axes():
    described = {"head": {"inputs": {"rows": ["rows", 7]}}, "fixed": {"inputs": {"images": [2, 3, 64, 64]}},
                 "pm": {"inputs": {"neighborhoods": ["batch", "groups", "group_size", 3]}}}
    profiles = export_mod.tensorrt_profiles(described, {"rows": 100, "groups": 32, "group_size": 8}, max_batch=4)
    assert profiles["head"] == {"min": "rows:1x7", "opt": "rows:50x7", "max": "rows:100x7"}
    assert profiles["fixed"] == {level: "images:2x3x64x64" for level in ("min", "opt", "max")}
    assert profiles["pm"]["max"] == "neighborhoods:4x32x8x3" and profiles["pm"]["min"] == "neighborhoods:1x32x8x3"
    assert export_mod.trtexec_command("pm", profiles["pm"]).endswith("--saveEngine=pm.plan")


# --- other engines and bf16 --------------------------------------------------------------------


def test_openvino_engine(cfm, tests):
    pytest.importorskip("openvino")
    reference = _torch_results(cfm, tests[:2])
    cfm.engine = "openvino"
    try:
        _export_data.assert_same(reference, [cfm.predict(s) for s in tests[:2]])
    finally:
        cfm.engine = "torch"


def test_bf16_changes_scores_a_little(patchcore, tests):
    reference = _torch_results(patchcore, tests)
    patchcore.precision = "bf16"
    try:
        results = [patchcore.predict(s) for s in tests]
        runner = patchcore.extractor.rgb_backbone
    finally:
        patchcore.precision = "fp32"
    assert type(runner).__name__ == "Bf16Module"
    rel = [abs(r.score - f.score) / abs(f.score) for r, f in zip(results, reference, strict=True)]
    # bf16's 8-bit mantissa: features ~0.4 % off, scores within a few %, but not bit-identical
    assert max(rel) < 0.05 and max(rel) > 0, rel
    assert all(r.map.dtype == np.float32 for r in results)


def test_cli_export_and_engine(cfm, tests, tmp_path, capsys):
    from xmodal.cli import main
    from xmodal.data._files import write_rgb, write_xyz

    model = cfm.save(tmp_path / "model")
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(model), "--format", "onnx", "--out", str(out)]) == 0
    assert "graph.rgb_backbone.onnx" in capsys.readouterr().out
    sample = tests[0]
    rgb, xyz = tmp_path / "rgb.png", tmp_path / "xyz.tiff"
    write_rgb(rgb, sample.rgb)
    write_xyz(xyz, sample.xyz)
    scores = {}
    for args in (["--model", str(model)], ["--model", str(out)], ["--model", str(out), "--engine", "openvino"]):
        if "openvino" in args and not engines.available()["openvino"]:
            continue
        assert main(["predict", *args, str(rgb), str(xyz), "--quiet"]) == 0
        scores[len(scores)] = json.loads(capsys.readouterr().out.splitlines()[0])["score"]
    assert all(abs(s - scores[0]) <= REL * abs(scores[0]) for s in scores.values()), scores
    with pytest.raises(SystemExit):
        main(["export", "--model", str(model), "--out", str(out), "--batch", "0"])
    # a folder holding what xmodal did not write
    assert main(["export", "--model", str(model), "--out", str(tmp_path)]) == 1



def test_engine_discrepancy_equals_the_fused_kernel():
    from xmodal.engines import runtime
    from xmodal.methods.cfm import mapping_network
    from xmodal.ops import crossmodal_discrepancy

    torch.manual_seed(0)
    net23, net32 = mapping_network(24, 17).eval(), mapping_network(17, 24).eval()
    f2d, f3d = torch.randn(300, 24), torch.randn(300, 17)
    mask = torch.rand(300) > 0.3
    want = crossmodal_discrepancy(f2d, f3d, net23, net32, mask)
    with torch.no_grad():
        got = runtime.crossmodal_discrepancy(net23, net32, f2d, f3d, mask)
    for a, b in ((got.d_2d, want.d_2d), (got.d_3d, want.d_3d)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        assert bool((a[~mask] == 0).all())
    empty = runtime.crossmodal_discrepancy(net23, net32, f2d, f3d, torch.zeros(300, dtype=torch.bool))
    assert float(empty.d_2d.abs().sum() + empty.d_3d.abs().sum()) == 0
