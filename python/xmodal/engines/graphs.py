"""The neural parts of a detector and their ONNX graphs.

A part is a torch module with one of four call signatures, each exported with named inputs and
outputs so that a runner can stand in for the module:

- CNN backbone (EfficientNet-Lite0, WideResNet-50): ``images (B, 3, S, S) -> {stage: map}``,
  one graph output per stage, in the module's order;
- DINO ViT: ``images (B, 3, S, S) -> features (B, 768, S/8, S/8)``;
- Point-MAE: ``neighborhoods (B, G, K, 3), centers (B, G, 3) -> features (B, C, G)``;
- head (a ``torch.nn.Sequential`` MLP such as CFM's mapping networks): ``rows (N, Din) ->
  mapped (N, Dout)``;
- module (a :class:`Head` a method declares: G2SF's LSPN, BridgeNet's adaptor + discriminator,
  the flows): named inputs with their dims, named outputs, and what to call on the module.

The batch axis is dynamic unless a fixed ``batch`` is asked for; image sides are fixed at the
size the extractor feeds (SAME padding and position embeddings are traced for it), so an
extractor that reads its images at several sizes (CS-Flow, DifferNet) gets one graph per size,
``<part>_<side>``; Point-MAE's group count and size and a head's row count are always dynamic.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import OPSET

# Attributes of an extractor that hold neural modules (FeatureExtractor, BTF's extractor).
EXTRACTOR_PARTS = ("rgb_backbone", "xyz_backbone", "network", "backbone")
# Attributes the runners copy from the module they stand in for (what the extractors read).
PASSED_ATTRIBUTES = ("mean", "std", "out_channels", "strides", "stride", "implementation", "load_report", "depth")
DEFAULT_IMAGE_SIZE = 224
DYNAMIC_AXES = ("batch", "rows")  # the axis names a Head may leave open
EXAMPLE_ROWS = 8  # rows of the example a head is traced with (any count works afterwards)


@dataclass
class Head:
    """A method's neural part with a declared signature (the "module" kind).

    ``inputs``: {name: dims}, each dim an int or an axis name of ``DYNAMIC_AXES`` ("batch": the
    images of a batch, "rows": feature rows, any count); every output shares the first
    input's leading axis. ``call(module, *inputs)`` returns one tensor or a tuple in
    ``outputs`` order (default: ``module(*inputs)``). ``max_rows`` is the largest row count per
    call the method makes (TensorRT's profile; default the map's pixels). Calling a Head runs
    it in torch and returns the tuple of its outputs, as its runner on an engine does.
    """

    module: Any
    inputs: dict[str, list]
    outputs: tuple[str, ...]
    call: Callable | None = None
    max_rows: int | None = None

    def __call__(self, *inputs) -> tuple:
        out = self.module(*inputs) if self.call is None else self.call(self.module, *inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _traceable(head: Head):
    """``head`` as a torch module whose forward is the head's call (what the exporter traces)."""
    from torch import nn

    class Call(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = head.module

        def forward(self, *inputs):
            return head(*inputs)

    # the exporter restores the wrapper's mode afterwards, and that mode propagates to the head's
    # modules: a wrapper in (default) training mode would leave BatchNorm and Dropout training
    return Call().train(bool(getattr(head.module, "training", False)))


@dataclass
class Graph:
    """One exported part: its ONNX bytes and its signature (dims are ints or axis names)."""

    name: str
    kind: str  # "cnn" | "vit" | "pointmae" | "head" | "module"
    inputs: dict[str, list]
    outputs: dict[str, list]
    data: bytes = field(repr=False, default=b"")
    path: str | None = None  # the graph's file, for a graph read from an exported directory
    max_rows: int | None = None  # a module head's largest row count per call (TensorRT profile)

    def describe(self) -> dict:
        info = {"kind": self.kind, "inputs": self.inputs, "outputs": self.outputs}
        if self.max_rows is not None:
            info["max_rows"] = self.max_rows
        return info


def kind_of(module) -> str:
    """Which of the five signatures ``module`` has (ValueError for a module xmodal cannot export)."""
    from torch import nn

    if isinstance(module, Head):
        return "module"
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
    """Side of the square images the extractor feeds its 2D networks (the largest, for an
    extractor that reads several sizes)."""
    return image_sizes(extractor)[0]


def image_sizes(extractor) -> tuple[int, ...]:
    """Sides of the square images the extractor feeds its 2D networks, largest first: one
    graph is exported per side (the flow methods' ``input_sizes``)."""
    import sys

    sizes = getattr(extractor, "input_sizes", None)
    if isinstance(sizes, (tuple, list)) and sizes and all(isinstance(s, int) for s in sizes):
        return tuple(sorted({int(s) for s in sizes}, reverse=True))
    for attr in ("input_size", "image_size"):  # PaDiM's and BridgeNet's extractors have an image_size option
        if isinstance(getattr(extractor, attr, None), int):
            return (int(getattr(extractor, attr)),)
    return (int(getattr(sys.modules[type(extractor).__module__], "INPUT_SIZE", DEFAULT_IMAGE_SIZE)),)


def part_graphs(extractor, attr: str) -> dict[str, int | None]:
    """{graph name: image side (None for Point-MAE)} of one extractor part: the part's own name,
    or ``<part>_<side>`` per side when the extractor reads images at several sizes."""
    if kind_of(getattr(extractor, attr)) == "pointmae":
        return {attr: None}
    sizes = image_sizes(extractor)
    return {attr: sizes[0]} if len(sizes) == 1 else {f"{attr}_{s}": s for s in sizes}


def example_inputs(module, kind: str, *, size: int = DEFAULT_IMAGE_SIZE, batch: int = 1, groups: int = 64,
                   group_size: int = 32) -> tuple:
    """Inputs of the right shapes to trace ``module`` with (values do not matter)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    if kind == "module":
        sizes = {"batch": max(batch, 2), "rows": EXAMPLE_ROWS}  # > 1: a traced size-1 axis may broadcast
        return tuple(torch.randn(*[sizes[d] if isinstance(d, str) else d for d in dims], generator=gen)
                     for dims in module.inputs.values())
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
    if kind in ("head", "module") and batch is not None:
        batch = None  # heads see the foreground rows of an image: their count is never fixed
    if kind == "module":
        check_head(module, name)
        names, traced = list(module.inputs), _traceable(module)
    else:
        names = {"cnn": ["images"], "vit": ["images"], "pointmae": ["neighborhoods", "centers"], "head": ["rows"]}[kind]
        traced = module
    restore = _prepare(module, kind)
    try:
        with torch.no_grad():
            out = traced(*example)
        if kind == "module":
            outputs, values = list(module.outputs), list(out)
            if len(values) != len(outputs):
                msg = f"head {name!r} returned {len(values)} tensors; it declares the outputs {outputs}"
                raise ValueError(msg)
            axes = _module_axes(module)
        else:
            outputs = list(out) if isinstance(out, dict) else ["mapped" if kind == "head" else "features"]
            values = list(out.values()) if isinstance(out, dict) else [out]
            axes = _dynamic_axes(kind, names, outputs, batch is None)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The tracer warns about Python-side shape checks (constant for the traced shapes)
            # and torch about the TorchScript exporter; neither changes the graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(traced, example, buffer, dynamo=False, input_names=names, output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    finally:
        restore()
    shapes_in = {n: _shape(t.shape, axes.get(n, {})) for n, t in zip(names, example, strict=True)}
    shapes_out = {n: _shape(t.shape, axes.get(n, {})) for n, t in zip(outputs, values, strict=True)}
    max_rows = module.max_rows if kind == "module" else None
    return Graph(name, kind, shapes_in, shapes_out, buffer.getvalue(), max_rows=max_rows)


def check_head(head, name: str) -> None:
    """ValueError naming the head when a method declares a head it does not have (an unfitted
    or incomplete model) or declares it wrongly."""
    module = head.module if isinstance(head, Head) else head
    if module is None:
        msg = f"the head {name!r} is missing (is the model fitted, and was it restored completely?)"
        raise ValueError(msg)
    if not isinstance(head, Head):
        return
    first = next(iter(head.inputs.values()), None)
    if first is None or not head.outputs:
        msg = f"head {name!r} must declare at least one input and one output"
        raise ValueError(msg)
    for dims in head.inputs.values():
        bad = [d for d in dims if isinstance(d, str) and d not in DYNAMIC_AXES]
        if bad:
            msg = f"head {name!r}: axis names must be one of {DYNAMIC_AXES}; got {bad}"
            raise ValueError(msg)


def _module_axes(head: Head) -> dict:
    """A head's dynamic axes: the named dims of its inputs, and its outputs' leading axis when
    the first input's is named (outputs share it)."""
    axes = {n: {i: d for i, d in enumerate(dims) if isinstance(d, str)} for n, dims in head.inputs.items()}
    lead = next(iter(head.inputs.values()))[0]
    if isinstance(lead, str):
        axes.update({n: {0: lead} for n in head.outputs})
    return {n: a for n, a in axes.items() if a}


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
