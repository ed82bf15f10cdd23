"""Runners: stand-ins for a detector's torch modules that run them on another engine or precision.

A runner is called like the module it replaces (torch tensors in, the module's output structure
out: a dict of stage maps, one tensor, or the tuple of a declared head's outputs) and carries
the attributes the extractors read from it (``mean``, ``std``, ``out_channels``, ...), so the
rest of the pipeline does not change.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from . import graphs


def _threads() -> int:
    """The engines use as many threads as torch (sized by xmodal for the CPUs this process may use)."""
    import torch

    return max(1, torch.get_num_threads())


class Runner:
    """Calls ``session`` (a function of numpy inputs returning numpy outputs in graph order)
    with a module's inputs; returns torch tensors shaped like the module's outputs."""

    def __init__(self, graph: graphs.Graph, session, like, device="cpu"):
        self.graph = graph
        self.session = session
        self.device = device
        for attr in graphs.PASSED_ATTRIBUTES:
            if hasattr(like, attr):
                setattr(self, attr, getattr(like, attr))
        self.engine = getattr(session, "engine", "onnx")

    def __call__(self, *args):
        import torch

        arrays = [np.ascontiguousarray(a.detach().to("cpu", torch.float32).numpy()) for a in args]
        fixed = next(iter(self.graph.inputs.values()))[0]
        if isinstance(fixed, int) and arrays[0].shape[0] != fixed:
            outputs = self._fixed_batch(arrays, fixed)
        else:
            graphs.check_inputs(self.graph.inputs, arrays)
            outputs = self.session(arrays)
        tensors = [torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)).to(self.device) for o in outputs]
        if self.graph.kind == "cnn":
            return dict(zip(self.graph.outputs, tensors, strict=True))
        if self.graph.kind == "module":
            return tuple(tensors)  # a declared head's outputs in its order, as Head.__call__
        return tensors[0]

    def _fixed_batch(self, arrays: list[np.ndarray], size: int) -> list[np.ndarray]:
        """A graph exported for a fixed batch runs the inputs in chunks of it, the last one padded
        with copies of its first item (padding rows are dropped from the outputs)."""
        n = arrays[0].shape[0]
        parts = []
        for start in range(0, n, size):
            chunk = [a[start : start + size] for a in arrays]
            real = chunk[0].shape[0]
            if real < size:
                chunk = [np.concatenate([c, np.repeat(c[:1], size - real, axis=0)]) for c in chunk]
            graphs.check_inputs(self.graph.inputs, chunk)
            parts.append([o[:real] for o in self.session(chunk)])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


class SizedRunner:
    """Stands in for a 2D backbone that the extractor calls at several image sides (CS-Flow,
    DifferNet): one runner per side, picked by the side of the images."""

    def __init__(self, runners: dict[int, Runner], like):
        self.runners = runners
        for attr in graphs.PASSED_ATTRIBUTES:
            if hasattr(like, attr):
                setattr(self, attr, getattr(like, attr))

    def __call__(self, images):
        side = int(images.shape[-1])
        runner = self.runners.get(side)
        if runner is None:
            msg = f"images have side {side}; the exported graphs take sides {sorted(self.runners, reverse=True)}"
            raise ValueError(msg)
        return runner(images)


class Bf16Module:
    """A torch module run under bfloat16 autocast, its outputs returned as float32."""

    def __init__(self, module, device_type: str):
        self.module = module
        self.device_type = device_type
        for attr in graphs.PASSED_ATTRIBUTES:
            if hasattr(module, attr):
                setattr(self, attr, getattr(module, attr))

    def __call__(self, *args):
        import torch

        with torch.no_grad(), torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.module(*args)
        if isinstance(out, dict):
            return {k: v.float() for k, v in out.items()}
        if isinstance(out, (tuple, list)):
            return tuple(v.float() for v in out)
        return out.float()


# --- sessions -------------------------------------------------------------------------------


def onnxruntime_session(model, graph: graphs.Graph):
    """A function running the ONNX ``model`` (bytes or a file path) with onnxruntime on the CPU."""
    ort = _import("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle threads sleep instead of spinning: on a shared machine spinning takes others' share
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    return _named(session, graph, "onnxruntime")


def tensorrt_session(model, graph: graphs.Graph, profile: dict, precision: str = "fp32"):
    """onnxruntime with the TensorRT execution provider and ``profile``'s dynamic shapes
    (min / opt / max); needs onnxruntime-gpu built with TensorRT and an NVIDIA GPU. Never run:
    no GPU where xmodal is built."""
    ort = _import("onnxruntime", "onnx")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        msg = ("engine='tensorrt' needs onnxruntime-gpu with the TensorRT execution provider and an NVIDIA GPU "
               f"(this onnxruntime has {ort.get_available_providers()}); or build engines from the exported "
               "graphs with trtexec (the commands are in the export's manifest.json)")
        raise RuntimeError(msg)
    if precision != "fp32":
        msg = "engine='tensorrt' runs fp32 here; for bf16, build the engine with trtexec --bf16 (see manifest.json)"
        raise ValueError(msg)
    options = {"trt_profile_min_shapes": profile["min"], "trt_profile_opt_shapes": profile["opt"],
               "trt_profile_max_shapes": profile["max"]}
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                   providers=[("TensorrtExecutionProvider", options), "CUDAExecutionProvider"])
    return _named(session, graph, "tensorrt")


def _named(session, graph: graphs.Graph, engine: str):
    names = list(graph.inputs)
    outputs = list(graph.outputs)

    def run(arrays):
        return session.run(outputs, dict(zip(names, arrays, strict=True)))

    run.engine = engine
    return run


def openvino_session(model, graph: graphs.Graph, precision: str = "fp32"):
    """A function running the ONNX ``model`` compiled by OpenVINO for the CPU; ``precision``
    sets its inference precision hint (bf16 on CPUs with AVX512-BF16 / AMX)."""
    ov = _import("openvino", "openvino")
    core = ov.Core()
    source = io.BytesIO(model) if isinstance(model, bytes) else str(model)
    ir = ov.convert_model(source) if isinstance(model, bytes) else core.read_model(source)
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": _threads()}
    compiled = core.compile_model(ir, "CPU", config)
    request = compiled.create_infer_request()
    names = list(graph.inputs)
    ports = [compiled.output(name) for name in graph.outputs]

    def run(arrays):
        result = request.infer(dict(zip(names, arrays, strict=True)))
        return [np.array(result[p], copy=True) for p in ports]

    run.engine = "openvino"
    return run


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"this engine needs {module}: pip install 'xmodal[{extra}]'"
        raise ImportError(msg) from exc


# --- CFM-style heads: crossmodal discrepancy from two mapping runners --------------------------


def crossmodal_discrepancy(map_2d3d, map_3d2d, f2d, f3d, mask):
    """What :func:`xmodal.ops.crossmodal_discrepancy` computes, with the mapping networks run by
    two runners (another engine or precision) and the distances in float32 torch:
    ``d_3d = || n(map_2d3d(f2d)) - n(f3d) ||``, ``d_2d = || n(map_3d2d(f3d)) - n(f2d) ||`` on the
    foreground rows, 0 elsewhere, ``n(v) = v / max(||v||, 1e-12)``."""
    import torch
    import torch.nn.functional as F

    from ..ops import CrossmodalDiscrepancy

    fg = mask.reshape(-1).to(torch.bool)
    d_2d = torch.zeros(f2d.shape[0], dtype=torch.float32, device=f2d.device)
    d_3d = torch.zeros_like(d_2d)
    if bool(fg.any()):
        a, b = f2d[fg].float().contiguous(), f3d[fg].float().contiguous()
        d_3d[fg] = torch.linalg.vector_norm(F.normalize(map_2d3d(a).float(), dim=1) - F.normalize(b, dim=1), dim=1)
        d_2d[fg] = torch.linalg.vector_norm(F.normalize(map_3d2d(b).float(), dim=1) - F.normalize(a, dim=1), dim=1)
    return CrossmodalDiscrepancy(d_2d, d_3d)


@contextlib.contextmanager
def skeleton_weights(detector):
    """Builds an exported detector's extractor without its weight files: its modules are
    replaced by the exported graphs, only their structure (and attributes) is used."""
    config = detector.config
    had = "random_weights" in config
    old = config.get("random_weights")
    config["random_weights"] = True
    try:
        yield
    finally:
        if had:
            config["random_weights"] = old
        else:
            del config["random_weights"]
