"""Detectors on an engine: the runners that replace their modules, the exported directory, and
the TensorRT shape profiles.

An exported directory is a model directory (``config.json`` + ``model.safetensors``, so the save
rules and ``xmodal.load`` apply) with, in addition:

- ``graph.<part>.onnx``: one ONNX graph per neural part (``rgb_backbone``, ``xyz_backbone``,
  ``network``, ``backbone`` -- ``backbone_<side>`` per side for an extractor reading several
  image sizes -- and the heads a method declares: CFM's ``mlp_2d3d`` / ``mlp_3d2d``, G2SF's
  ``lspn``, BridgeNet's ``heads``, the flows' ``flow`` or ``decoder_<level>``); a part that
  shares its module with another (the offline extractor reads depth with its RGB network)
  names that graph;
- ``manifest.json``: the graphs (file, SHA-256, kind, input and output shapes with their dynamic
  axes), the pipeline with the xmodal ops that run between the graphs, the arrays of
  ``model.safetensors`` (banks, statistics, calibration, and the heads' weights so that the
  torch engine can run the directory too), and the TensorRT profiles and ``trtexec`` commands.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .._arrays import integer, one_of
from . import ENGINES, OPSET, graphs, runtime

FORMAT = "xmodal-export/1"
MANIFEST = "manifest.json"
FORMATS = ("onnx",)
MAX_BATCH = 8  # TensorRT profiles: largest batch an engine is built for (trtexec --maxShapes)


def graph_file(name: str) -> str:
    return f"graph.{name}.onnx"


# --- runners for a detector -------------------------------------------------------------------


def attach(detector, extractor):
    """``extractor`` with its neural modules replaced by runners for ``detector.engine`` and
    ``detector.precision`` (unchanged for torch in fp32)."""
    if detector.engine == "torch" and detector.precision == "fp32":
        return extractor
    for attr, alias in graphs.extractor_parts(extractor).items():
        if alias != attr:
            setattr(extractor, attr, getattr(extractor, alias))
            continue
        module = getattr(extractor, attr)
        sized = graphs.part_graphs(extractor, attr)
        if detector.engine == "torch" or len(sized) == 1:
            name, size = next(iter(sized.items()))
            setattr(extractor, attr, _runner(detector, name, module, extractor, size))
            continue
        runners = {size: _runner(detector, name, module, extractor, size) for name, size in sized.items()}
        setattr(extractor, attr, runtime.SizedRunner(runners, module))
    return extractor


def heads(detector) -> dict | None:
    """Runners for the detector's heads (None for torch in fp32: the method's own path)."""
    if detector.engine == "torch" and detector.precision == "fp32":
        return None
    declared = checked_heads(detector, f"run on engine={detector.engine!r} / precision={detector.precision!r}")
    return {name: _runner(detector, name, module, None) for name, module in declared.items()}


def checked_heads(detector, action: str) -> dict:
    """``detector._heads()``, ValueError naming the method and the head when one is missing."""
    out = detector._heads()
    for name, head in out.items():
        try:
            graphs.check_head(head, name)
        except ValueError as exc:
            msg = f"cannot {action} this {detector.method} model: {exc}"
            raise ValueError(msg) from None
    return out


def _runner(detector, name: str, module, extractor, size=None):
    device = detector.config.get("device", "cpu")
    if detector.engine == "torch":
        return runtime.Bf16Module(module, "cuda" if str(device).startswith("cuda") else "cpu")
    exported = detector._exported
    if exported is not None:
        graph = exported.graph(name)
        model = graph.path
    else:
        graph = graphs.export(module, name, _example(module, extractor, size))
        model = graph.data
    engine, precision = detector.engine, detector.precision
    if engine == "onnxruntime":
        if precision != "fp32":
            msg = "precision='bf16' runs with engine='torch' or engine='openvino'; onnxruntime's CPU engine is fp32"
            raise ValueError(msg)
        session = runtime.onnxruntime_session(model, graph)
    elif engine == "openvino":
        session = runtime.openvino_session(model, graph, precision)
    else:
        profile = tensorrt_profiles({name: graph.describe()}, _dims(detector))[name]
        session = runtime.tensorrt_session(model, graph, profile, precision)
    return runtime.Runner(graph, session, module, device)


def _example(module, extractor, size=None) -> tuple:
    kind = graphs.kind_of(module)
    if size is None:
        size = graphs.image_size(extractor) if extractor is not None else graphs.DEFAULT_IMAGE_SIZE
    return graphs.example_inputs(module, kind, size=size)


# --- writing ------------------------------------------------------------------------------------


def export(detector, path, format: str = "onnx", *, batch=None, overwrite: bool = False) -> Path:
    """Writes ``detector`` as an exported directory (module docstring); see :meth:`Detector.export`."""
    from ..methods import _model_dir

    one_of(format, "format", FORMATS)
    batch = integer(batch, "batch", minimum=1, allow_none=True, expected="None (dynamic) or a positive int")
    detector._require_fitted()
    from ..io import check_output

    # the path is checked before the (slow) export; _model_dir.write checks it again when writing
    check_output(path, "export(path)", directory=True, reusable=_model_dir.replaceable, overwrite=overwrite)
    exported = _graphs(detector, batch)
    files = detector._model_files()
    aliases = {}
    for name, graph in exported.items():
        if isinstance(graph, str):
            aliases[name] = graph
            continue
        files[graph_file(name)] = _bytes_writer(graph.data)
    manifest = _manifest(detector, exported, aliases, batch)
    text = json.dumps(manifest, indent=2)
    files[MANIFEST] = lambda p: p.write_text(text)
    return _model_dir.write(path, files, overwrite=overwrite, option="export(path)")


def _bytes_writer(data: bytes):
    def write(p: Path) -> None:
        p.write_bytes(data)

    return write


def _graphs(detector, batch) -> dict:
    """{part: Graph, or the name of the part whose graph it shares}."""
    if detector._exported is not None:
        return detector._exported.copy(batch)
    extractor = detector.extractor if detector.engine == "torch" and detector.precision == "fp32" else None
    if extractor is None:
        extractor = detector._build_extractor()  # the torch modules, not the runners
    heads = checked_heads(detector, "export")  # before the (slow) backbones
    out: dict = {}
    for attr, alias in graphs.extractor_parts(extractor).items():
        module = getattr(extractor, attr)
        for name, size in graphs.part_graphs(extractor, attr).items():
            if alias != attr:
                out[name] = alias + name[len(attr) :]
                continue
            example = _example(module, extractor, size)
            if batch is not None:
                example = tuple(t.expand(batch, *t.shape[1:]).contiguous() for t in example)
            out[name] = graphs.export(module, name, example, batch=batch)
    for name, module in heads.items():
        out[name] = graphs.export(module, name, _example(module, None))
    return out


def _dims(detector) -> dict:
    """Sizes of the dynamic axes for the TensorRT profiles."""
    pointmae = detector.config.get("pointmae") or {}
    return {"groups": int(pointmae.get("num_group", 1024)), "group_size": int(pointmae.get("group_size", 128)),
            "rows": int(detector.map_size) ** 2}


def _manifest(detector, exported: dict, aliases: dict, batch) -> dict:
    from .. import __version__

    described = {n: g.describe() for n, g in exported.items() if not isinstance(g, str)}
    graph_entries = {}
    for name, graph in exported.items():
        if isinstance(graph, str):
            continue
        used = [name, *(a for a, target in aliases.items() if target == name)]
        graph_entries[name] = {"file": graph_file(name), "sha256": hashlib.sha256(graph.data).hexdigest(),
                               "used_as": used, **graph.describe()}
    profiles = tensorrt_profiles(described, _dims(detector))
    return {
        "format": FORMAT, "xmodal_version": __version__, "method": detector.method, "opset": OPSET,
        "batch": "dynamic" if batch is None else batch, "engines": [e for e in ENGINES if e != "torch"],
        "graphs": graph_entries, "aliases": aliases,
        "pipeline": list(getattr(detector, "pipeline", ())),
        "state": {"file": "model.safetensors", "arrays": sorted(detector._model_arrays())},
        "kernels": "xmodal ops between the graphs run in float32 whatever the engine or precision",
        "tensorrt": {"status": "never run: no GPU where xmodal is built; graphs checked with onnx.checker",
                     "profiles": profiles,
                     "trtexec": {n: trtexec_command(n, p) for n, p in profiles.items()}},
    }


# --- TensorRT -----------------------------------------------------------------------------------


def tensorrt_profiles(described: dict, dims: dict, max_batch: int = MAX_BATCH) -> dict:
    """{graph: {"min" | "opt" | "max": "input:1x3x224x224,..."}}: TensorRT optimisation profiles
    for the graphs' dynamic axes (batch 1 / 1 / ``max_batch``, Point-MAE's group count and size
    as configured, heads 1 / half / all of the map's pixels as foreground rows, or of the
    head's declared ``max_rows``)."""
    profiles = {}
    for name, info in described.items():
        levels = {"min": [], "opt": [], "max": []}
        own = {**dims, "rows": int(info.get("max_rows") or dims["rows"])}
        for input_name, shape in info["inputs"].items():
            for level in levels:
                sizes = [d if isinstance(d, int) else _axis(d, level, own, max_batch) for d in shape]
                levels[level].append(f"{input_name}:{'x'.join(str(s) for s in sizes)}")
        profiles[name] = {level: ",".join(parts) for level, parts in levels.items()}
    return profiles


def _axis(axis: str, level: str, dims: dict, max_batch: int) -> int:
    if axis == "batch":
        return {"min": 1, "opt": 1, "max": max_batch}[level]
    if axis == "rows":
        return {"min": 1, "opt": max(1, dims["rows"] // 2), "max": dims["rows"]}[level]
    return int(dims[axis])


def trtexec_command(name: str, profile: dict) -> str:
    """The documented path to a TensorRT engine for one exported graph (add --bf16 or --fp16
    for reduced precision)."""
    return (f"trtexec --onnx={graph_file(name)} --minShapes={profile['min']} --optShapes={profile['opt']} "
            f"--maxShapes={profile['max']} --saveEngine={name}.plan")


# --- reading ------------------------------------------------------------------------------------


class Exported:
    """The graphs of an exported directory, checked against its manifest."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest

    @classmethod
    def read(cls, path: Path) -> Exported | None:
        """None for a plain model directory; ValueError naming the file for a corrupt export."""
        file = path / MANIFEST
        if not file.is_file():
            return None
        try:
            manifest = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"corrupt export manifest {file}: {exc}"
            raise ValueError(msg) from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            msg = f"{file} is not an xmodal export manifest (expected format {FORMAT!r})"
            raise ValueError(msg)
        entries = manifest.get("graphs")
        if not isinstance(entries, dict) or not isinstance(manifest.get("aliases", {}), dict):
            msg = f"corrupt export manifest {file}: 'graphs' must be a JSON object"
            raise ValueError(msg)
        for name, entry in entries.items():
            graph = path / graph_file(name)
            if not isinstance(entry, dict) or entry.get("file") != graph.name:
                msg = f"corrupt export manifest {file}: graph {name!r} must name the file {graph.name}"
                raise ValueError(msg)
            if not graph.is_file():
                msg = f"{path} is an incomplete export: {graph.name} is missing"
                raise ValueError(msg)
            if _sha256(graph) != entry.get("sha256"):
                msg = f"corrupt export {graph}: its SHA-256 differs from the one in {MANIFEST}"
                raise ValueError(msg)
        return cls(path, manifest)

    def graph(self, name: str) -> graphs.Graph:
        name = self.manifest.get("aliases", {}).get(name, name)
        entry = self.manifest["graphs"].get(name)
        if entry is None:
            msg = f"the export {self.path} has no graph for {name!r} (graphs: {sorted(self.manifest['graphs'])})"
            raise ValueError(msg)
        return graphs.Graph(name, entry["kind"], entry["inputs"], entry["outputs"],
                            path=str(self.path / entry["file"]), max_rows=entry.get("max_rows"))

    def require(self, names) -> None:
        """ValueError when the export has no graph for one of ``names`` (the method's heads):
        its head would otherwise have to run in torch, which an export does not promise."""
        known = set(self.manifest["graphs"]) | set(self.manifest.get("aliases", {}))
        missing = sorted(set(names) - known)
        if missing:
            msg = (f"the export {self.path} has no graph for the head(s) {missing} of its method (graphs: "
                   f"{sorted(self.manifest['graphs'])}); export the saved model again with this xmodal")
            raise ValueError(msg)

    def copy(self, batch) -> dict:
        """The graphs (with their bytes) for re-exporting this directory with the same batch."""
        if batch != (None if self.manifest["batch"] == "dynamic" else self.manifest["batch"]):
            msg = (f"batch={batch!r}: {self.path} was exported with batch {self.manifest['batch']!r}; export the "
                   "saved (not exported) model to change it")
            raise ValueError(msg)
        out: dict = dict(self.manifest.get("aliases", {}))
        for name in self.manifest["graphs"]:
            graph = self.graph(name)
            graph.data = Path(graph.path).read_bytes()
            graph.path = None
            out[name] = graph
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
