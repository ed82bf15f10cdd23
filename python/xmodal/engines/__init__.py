"""Inference engines and reduced precision for the neural parts of the methods, and ONNX export.

The neural parts of a detector are its backbones (the extractor's ``rgb_backbone``,
``xyz_backbone``, ``network`` or ``backbone``) and its heads (CFM's two mapping networks, G2SF's
LSPN, BridgeNet's adaptor + discriminator, the flows; a method lists its own in
``Detector._heads``). Everything else (preprocessing, point grouping, patch pooling,
memory-bank search, map smoothing, calibration) runs in xmodal's kernels whatever the engine.

- ``engine="torch"`` (default): the torch modules as they are.
- ``engine="onnxruntime"``: each neural part is exported to ONNX (opset 17) on first use and run
  by an onnxruntime CPU session; a runner stands in for the module, same call, same outputs.
- ``engine="openvino"``: the same ONNX graphs compiled by OpenVINO for the CPU
  (``pip install xmodal[openvino]``).
- ``engine="tensorrt"``: the same graphs through onnxruntime's TensorRT execution provider with
  the dynamic-shape profiles of :func:`xmodal.engines.export.tensorrt_profiles`; the
  ``trtexec`` commands are in the export manifest. This path has never run: no GPU where
  xmodal is built (graph validity and profiles are tested).

``precision="bf16"`` runs the neural parts in bfloat16 (torch autocast on the CPU, where
AVX512-BF16 / AMX make it fast, or on a GPU's tensor cores; OpenVINO's bf16 inference hint):
features and head outputs come back as float32, and every kernel after them (k-NN, coresets,
discrepancies, metrics) keeps its float32 exactness contract on those features. bf16 has an
8-bit mantissa: features differ from fp32 ones by ~0.4 % relative, enough to move near-ties
in k-NN and coreset selection, so banks fitted in bf16 are not the fp32 banks.

``Detector.export(dir)`` writes the graphs next to the model files (:mod:`.export`);
``xmodal.load(dir)`` runs them with onnxruntime by default, without the backbones' weight files.
"""

from __future__ import annotations

import importlib.util

from .._arrays import one_of

ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "bf16")
OPSET = 17

__all__ = ["ENGINES", "OPSET", "PRECISIONS", "available", "bf16_native", "check_engine", "check_precision"]


def check_engine(engine) -> str:
    """``engine`` validated (ValueError naming the choices)."""
    return one_of(engine, "engine", ENGINES)


def check_precision(precision) -> str:
    """``precision`` validated (ValueError naming the choices)."""
    return one_of(precision, "precision", PRECISIONS)


def available() -> dict[str, bool]:
    """Which engines can run here: {"torch": True, "onnxruntime": ..., "openvino": ..., "tensorrt": ...}."""
    found = {"torch": importlib.util.find_spec("torch") is not None,
             "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
             "openvino": importlib.util.find_spec("openvino") is not None, "tensorrt": False}
    if found["onnxruntime"]:
        import onnxruntime

        found["tensorrt"] = "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    return found


def bf16_native() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    (correct but slower than fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
