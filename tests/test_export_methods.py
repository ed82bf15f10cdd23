"""Every method's neural parts exported and run on the engines (issue 18, item 1).

For each method beyond CFM and PatchCore (tests/test_export.py): the exported directory names
every graph (backbones, and the heads the method declares: G2SF's LSPN, BridgeNet's adaptor +
discriminator, the flows), each graph passes onnx.checker, ``xmodal.load`` runs it with
onnxruntime with scores and maps equal to the torch path within 1e-4 relative, and every graph
is actually called (a counter on the runners: a head left in torch would not be), also with
OpenVINO and bf16. Models are tiny (synthetic 96 px images, one or two epochs).
"""

import json
import os
import re
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import xmodal  # noqa: E402
from tests._export_data import assert_same, make_dataset, picked_samples, small_sample  # noqa: E402
from xmodal import engines  # noqa: E402
from xmodal.data import MVTec3D  # noqa: E402
from xmodal.engines import runtime  # noqa: E402
from xmodal.methods import create  # noqa: E402

BF16_REL = 0.1  # bf16 backbones and heads: scores within this share of fp32 (measured: see the report)

# tiny settings; calibration is kept (the verdicts are compared too)
SETTINGS = {
    "padim": {"n_features": 20},
    "btf": {"modality": "rgb+xyz"},
    "g2sf": {"n_synthetic": 2, "epochs": 1, "fuser_max_patches": 400},
    "bridgenet": {"image_size": 64, "embed_dim": 32, "hidden": 32, "epochs": 1},
    "fastflow": {"input_size": 64, "epochs": 1, "flow_steps": 2, "batch_size": 4},
    "cflow": {"input_size": 64, "epochs": 1, "coupling_blocks": 2, "fiber_batch": 1024, "batch_size": 4},
    "csflow": {"input_sizes": [128, 64], "epochs": 1, "coupling_blocks": 2, "hidden_channels": 16, "batch_size": 4},
    "differnet": {"input_sizes": [64, 32], "epochs": 1, "coupling_blocks": 2, "hidden": 32, "test_transforms": 2,
                  "batch_size": 4},
}
# the graphs each export must hold, and the attribute holding each method's head
GRAPHS = {
    "padim": {"network"},
    "btf": {"network"},
    "g2sf": {"rgb_backbone", "lspn"},  # the offline depth network is the RGB one (an alias)
    "bridgenet": {"backbone", "heads"},
    "fastflow": {"backbone", "flow"},
    "cflow": {"backbone", "decoder_0", "decoder_1", "decoder_2"},
    "csflow": {"backbone_128", "backbone_64", "flow"},
    "differnet": {"backbone_64", "backbone_32", "flow"},
}
HEAD = {"g2sf": ("lspn", "lspn"), "bridgenet": ("heads", "heads"), "fastflow": ("flow", "flow"),
        "cflow": ("flow", "decoder_0"), "csflow": ("flow", "flow"), "differnet": ("flow", "flow")}
METHODS = sorted(SETTINGS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def tests(dataset):
    return picked_samples(dataset)


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, dataset, tests, tmp_path_factory):
    """(detector, its torch fp32 results on ``tests``, its exported directory)."""
    name = request.param
    det = create(name, backbones="offline", progress=False, seed=1, **SETTINGS[name])
    det.fit(MVTec3D(dataset, "puck", "train"))
    reference = [det.predict(s) for s in tests]
    return det, reference, det.export(tmp_path_factory.mktemp("exports") / name)


@pytest.fixture
def calls(monkeypatch):
    """The names of the graphs the runners ran."""
    seen = []
    run = runtime.Runner.__call__

    def counted(self, *args):
        seen.append(self.graph.name)
        return run(self, *args)

    monkeypatch.setattr(runtime.Runner, "__call__", counted)
    return seen


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_export_names_every_graph_and_the_ops_between(fitted):
    det, _, path = fitted
    manifest = _manifest(path)
    assert set(manifest["graphs"]) == GRAPHS[det.method]
    assert sorted(f for f in os.listdir(path) if f.endswith(".onnx")) == sorted(
        f"graph.{g}.onnx" for g in GRAPHS[det.method])
    steps = " ".join(manifest["pipeline"])
    for name in manifest["graphs"]:
        part = re.sub(r"_\d+$", "", name)  # backbone_64 -> {backbone} (a graph per image side)
        assert f"{{{name}}}" in steps or f"{{{part}}}" in steps or f"{{{part}_<" in steps, (name, steps)
        onnx.checker.check_model(str(path / f"graph.{name}.onnx"), full_check=True)
    if det.method in HEAD:  # a declared head: its signature and TensorRT row bound are in the manifest
        entry = manifest["graphs"][HEAD[det.method][1]]
        lead = {dims[0] for dims in entry["inputs"].values()}
        assert entry["kind"] == "module" and lead in ({"rows"}, {"batch"}), entry
        assert ("max_rows" in entry) == (lead == {"rows"}), entry


def test_loaded_export_runs_every_graph_with_onnxruntime_like_torch(fitted, tests, calls):
    det, reference, path = fitted
    loaded = xmodal.load(path)
    assert loaded.engine == "onnxruntime"
    results = [loaded.predict(s) for s in tests]
    assert_same(reference, results)
    # every graph ran for every image: a head (or backbone) silently kept in torch would not
    assert set(calls) == GRAPHS[det.method]
    per_image = {g: calls.count(g) / len(tests) for g in GRAPHS[det.method]}
    assert min(per_image.values()) >= 1, per_image


def test_fixed_batch_and_predict_batch(fitted, tests, tmp_path, calls):
    det, reference, _ = fitted
    path = det.export(tmp_path / "fixed", batch=2)  # a second export (the first one is the fixture's)
    # exporting leaves the heads in eval mode (BatchNorm, Dropout), so the torch path is unchanged
    for head in det._heads().values():
        assert not any(m.training for m in head.module.modules()), det.method
    again = det.predict(tests[0])
    assert again.score == reference[0].score and np.array_equal(again.map, reference[0].map)
    manifest = _manifest(path)
    for name, entry in manifest["graphs"].items():
        first = next(iter(entry["inputs"].values()))[0]
        assert first == (2 if entry["kind"] == "cnn" else "rows" if "rows" in str(entry["inputs"]) else "batch"), name
    assert_same(reference, xmodal.load(path).predict_batch(tests, batch_size=3))
    assert set(calls) == GRAPHS[det.method]


def test_openvino_engine(fitted, tests, calls):
    pytest.importorskip("openvino")
    det, reference, path = fitted
    assert_same(reference[:2], [xmodal.load(path, engine="openvino").predict(s) for s in tests[:2]])
    assert set(calls) == GRAPHS[det.method]
    calls.clear()
    bf16 = xmodal.load(path, engine="openvino", precision="bf16").predict(tests[0])  # OpenVINO's bf16 hint
    assert abs(bf16.score - reference[0].score) <= BF16_REL * abs(reference[0].score)
    assert set(calls) == GRAPHS[det.method]


def test_bf16_runs_the_heads_in_bf16(fitted, tests):
    det, reference, _ = fitted
    det.precision = "bf16"
    try:
        results = [det.predict(s) for s in tests[:2]]
        runners = det._head_runners() or {}
    finally:
        det.precision = "fp32"
    heads = set(det._heads())
    assert set(runners) == heads and all(isinstance(r, runtime.Bf16Module) for r in runners.values())
    assert all(np.isfinite(r.score) and np.isfinite(r.map).all() for r in results)
    # bf16's 8-bit mantissa moves the scores a little, never to a different scale
    rel = [abs(r.score - f.score) / abs(f.score) for r, f in zip(results, reference, strict=False)]
    print(f"{det.method} bf16 max relative score change: {max(rel):.2e}")
    assert max(rel) < BF16_REL, rel
    assert det._head_runners() is None  # back to the method's own fp32 path


def test_torch_path_does_not_touch_the_runners(fitted, tests, calls):
    det, reference, _ = fitted
    assert det.engine == "torch" and det._head_runners() is None
    again = det.predict(tests[0])
    assert again.score == reference[0].score and np.array_equal(again.map, reference[0].map)
    assert calls == []


def test_export_without_a_head_is_refused(fitted, tmp_path):
    det, _, path = fitted
    if det.method not in HEAD:
        pytest.skip("no head")
    method = det.method
    attr, graph = HEAD[method]
    kept = getattr(det, attr)
    setattr(det, attr, None)
    try:
        with pytest.raises(ValueError, match=rf"cannot export this {method} model.*head '{graph}' is missing"):
            det.export(tmp_path / "no-head")
    finally:
        setattr(det, attr, kept)
    assert not (tmp_path / "no-head").exists()
    # an export whose manifest lost the head's graph is refused on load, not run in torch
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    manifest = _manifest(broken)
    del manifest["graphs"][graph]
    (broken / f"graph.{graph}.onnx").unlink()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"has no graph for the head\(s\) \['{graph}'\]"):
        xmodal.load(broken)


def test_tensorrt_profiles_of_the_heads(fitted):
    det, _, path = fitted
    if det.method not in HEAD:
        pytest.skip("no head")
    manifest = _manifest(path)
    graph = HEAD[det.method][1]
    entry = manifest["graphs"][graph]
    profile = manifest["tensorrt"]["profiles"][graph]
    first_input, dims = next(iter(entry["inputs"].items()))
    if dims[0] == "rows":
        width = "x".join(str(d) for d in dims[1:])
        assert f"{first_input}:{entry['max_rows']}x{width}" in profile["max"]
        assert f"{first_input}:1x{width}" in profile["min"]
    else:
        assert profile["max"].startswith(f"{first_input}:8x")
    if not engines.available()["tensorrt"]:
        with pytest.raises(RuntimeError, match="TensorRT execution provider"):
            xmodal.load(path, engine="tensorrt").predict(small_sample())

