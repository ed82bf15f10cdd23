"""The neural parts of a detector and their ONNX graphs.

A part is a torch module with one of four call signatures, each exported with named inputs and
outputs so that a runner can stand in for the module:

- CNN backbone (EfficientNet-Lite0, WideResNet-50): ``images (B, 3, S, S) -> {stage: map}``,
  one graph output per stage, in the module's order;
- DINO ViT: ``images (B, 3, S, S) -> features (B, 768, S/8, S/8)``;
- Point-MAE: ``neighborhoods (B, G, K, 3), centers (B, G, 3) -> features (B, C, G)``;
- head (a ``torch.nn.Sequential`` MLP such as CFM's mapping networks): ``rows (N, Din) ->
  mapped (N, Dout)``.

The batch axis is dynamic unless a fixed ``batch`` is asked for; image sides are fixed at the
size the extractor feeds (SAME padding and position embeddings are traced for it); Point-MAE's
group count and size and a head's row count are always dynamic.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import OPSET

# Attributes of an extractor that hold neural modules (FeatureExtractor, BTF's extractor).
EXTRACTOR_PARTS = ("rgb_backbone", "xyz_backbone", "network")
# Attributes the runners copy from the module they stand in for (what the extractors read).
PASSED_ATTRIBUTES = ("mean", "std", "out_channels", "strides", "stride", "implementation", "load_report", "depth")
DEFAULT_IMAGE_SIZE = 224


@dataclass
class Graph:
    """One exported part: its ONNX bytes and its signature (dims are ints or axis names)."""

    name: str
    kind: str  # "cnn" | "vit" | "pointmae" | "head"
    inputs: dict[str, list]
    outputs: dict[str, list]
    data: bytes = field(repr=False, default=b"")
    path: str | None = None  # the graph's file, for a graph read from an exported directory

    def describe(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "outputs": self.outputs}


def kind_of(module) -> str:
    """Which of the four signatures ``module`` has (ValueError for a module xmodal cannot export)."""
    from torch import nn

    name = type(module).__name__
    if name == "DinoViT":
        return "vit"
    if name == "PointMAE":
        return "pointmae"
    if isinstance(module, nn.Sequential):
        return "head"
    if hasattr(module, "out_channels") and hasattr(module, "strides"):
        return "cnn"
    msg = f"cannot export a {name}: xmodal exports CNN / ViT / Point-MAE backbones and Sequential heads"
    raise ValueError(msg)


def extractor_parts(extractor) -> dict[str, str]:
    """{attribute: attribute it shares its module with, or itself} for the extractor's neural
    modules (the offline extractor reads depth with its RGB network: one graph for both)."""
    from torch import nn

    parts: dict[str, str] = {}
    for attr in EXTRACTOR_PARTS:
        module = getattr(extractor, attr, None)
        if not isinstance(module, nn.Module):
            continue
        same = [a for a in parts if getattr(extractor, a) is module]
        parts[attr] = same[0] if same else attr
    return parts


def image_size(extractor) -> int:
    """Side of the square images the extractor feeds its 2D networks."""
    import sys

    for attr in ("input_size", "image_size"):  # PaDiM's extractor has an image_size option
        if isinstance(getattr(extractor, attr, None), int):
            return int(getattr(extractor, attr))
    return int(getattr(sys.modules[type(extractor).__module__], "INPUT_SIZE", DEFAULT_IMAGE_SIZE))


def example_inputs(module, kind: str, *, size: int = DEFAULT_IMAGE_SIZE, batch: int = 1, groups: int = 64,
                   group_size: int = 32) -> tuple:
    """Inputs of the right shapes to trace ``module`` with (values do not matter)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    if kind in ("cnn", "vit"):
        return (torch.rand(batch, 3, size, size, generator=gen),)
    if kind == "pointmae":
        return (torch.rand(batch, groups, group_size, 3, generator=gen) - 0.5,
                torch.rand(batch, groups, 3, generator=gen))
    first = next(layer for layer in module if hasattr(layer, "in_features"))
    return (torch.rand(8, first.in_features, generator=gen),)


def export(module, name: str, example: tuple, *, batch: int | None = None) -> Graph:
    """The ONNX graph of ``module`` traced on ``example`` (batch axis dynamic when ``batch`` is
    None, else fixed at ``batch``; ``example`` must have that batch size)."""
    import torch

    kind = kind_of(module)
    if kind == "pointmae" and module.reference_train_mode:
        msg = ("cannot export Point-MAE with reference_train_mode=True: its BatchNorms use each cloud's own "
               "statistics and its DropPath is random, which a fixed graph cannot reproduce")
        raise ValueError(msg)
    if kind == "head" and batch is not None:
        batch = None  # heads see the foreground rows of an image: their count is never fixed
    names = {"cnn": ["images"], "vit": ["images"], "pointmae": ["neighborhoods", "centers"], "head": ["rows"]}[kind]
    restore = _prepare(module, kind)
    try:
        with torch.no_grad():
            out = module(*example)
        outputs = list(out) if isinstance(out, dict) else ["mapped" if kind == "head" else "features"]
        values = list(out.values()) if isinstance(out, dict) else [out]
        axes = _dynamic_axes(kind, names, outputs, batch is None)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The tracer warns about Python-side shape checks (constant for the traced shapes)
            # and torch about the TorchScript exporter; neither changes the graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, buffer, dynamo=False, input_names=names, output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    finally:
        restore()
    shapes_in = {n: _shape(t.shape, axes.get(n, {})) for n, t in zip(names, example, strict=True)}
    shapes_out = {n: _shape(t.shape, axes.get(n, {})) for n, t in zip(outputs, values, strict=True)}
    return Graph(name, kind, shapes_in, shapes_out, buffer.getvalue())


def _prepare(module, kind: str):
    """Makes the module traceable as one graph; returns the undo."""
    if kind != "pointmae":
        return lambda: None
    encoder = module.encoder
    chunk = encoder.chunk_points
    encoder.chunk_points = 1 << 62  # one chunk: the chunk loop would be unrolled for the traced size

    def undo():
        encoder.chunk_points = chunk

    return undo


def _dynamic_axes(kind: str, inputs: list[str], outputs: list[str], dynamic_batch: bool) -> dict:
    if kind == "head":
        return {inputs[0]: {0: "rows"}, outputs[0]: {0: "rows"}}
    axes: dict[str, dict] = {}
    if kind == "pointmae":
        axes = {"neighborhoods": {1: "groups", 2: "group_size"}, "centers": {1: "groups"}, "features": {2: "groups"}}
    if dynamic_batch:
        for n in (*inputs, *outputs):
            axes.setdefault(n, {})[0] = "batch"
    return axes


def _shape(shape, axes: dict) -> list:
    return [axes.get(i, int(d)) for i, d in enumerate(shape)]


def check_inputs(graph_inputs: dict[str, list], arrays: list[np.ndarray]) -> None:
    """ValueError when an input does not fit a graph's fixed dims (a different image size than
    the graph was exported for, say): the engines would fail with less clear messages."""
    for (name, dims), a in zip(graph_inputs.items(), arrays, strict=True):
        if a.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, a.shape, strict=True)):
            want = "(" + ", ".join(str(d) for d in dims) + ")"
            msg = f"{name} has shape {tuple(a.shape)}; the exported graph takes {want}"
            raise ValueError(msg)
