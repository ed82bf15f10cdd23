"""Anomaly detection methods, all behind one interface (:class:`Detector`).

>>> det = xmodal.methods.CFM(backbones="offline")
>>> det.fit(train_samples)                      # iterable of xmodal.data.Sample
>>> res = det.predict(sample)                   # AnomalyResult(score, map, threshold, is_anomalous, ...)
>>> det.save("model_dir"); det = xmodal.load("model_dir")

Method modules load on first use (``xmodal.methods.CFM``, :func:`create`, :func:`load`), so
that listing the methods, validating options and parsing the command line need no torch.
"""

from __future__ import annotations

import importlib

from .base import _REGISTRY, AnomalyResult, Detector, as_sample, load, register
from .calibration import Calibration
from .options import PointMAEOptions

# registry name -> (module, class). A new method adds one line here and @register on its class.
METHODS = {"cfm": ("cfm", "CFM"), "patchcore": ("patchcore", "PatchCore")}
METHODS["btf"] = ("btf", "BTF")
METHODS["padim"] = ("padim", "PaDiM")
METHODS["bridgenet"] = ("bridgenet", "BridgeNet")
METHODS["g2sf"] = ("g2sf", "G2SF")
_CLASSES = {cls: (module, name) for name, (module, cls) in METHODS.items()}

__all__ = ["BTF", "CFM", "G2SF", "METHODS", "AnomalyResult", "BridgeNet", "Calibration", "Detector", "PaDiM",
           "PatchCore", "PointMAEOptions", "as_sample", "create", "load", "method_names", "register"]


def method_names() -> list[str]:
    """Registry names of every method, e.g. ["cfm", "patchcore"] (no method module is imported)."""
    return sorted(METHODS)


def method_class(method: str) -> type[Detector]:
    """The Detector class registered under ``method`` (its module is imported on first use)."""
    if method not in METHODS:
        msg = f"method must be one of {', '.join(method_names())}; got {method!r}"
        raise ValueError(msg)
    if method not in _REGISTRY:
        importlib.import_module(f".{METHODS[method][0]}", __name__)
    return _REGISTRY[method]


def create(method: str, **options) -> Detector:
    """A detector by registry name ("cfm", "patchcore", ...) with its constructor options."""
    return method_class(method)(**options)


def __getattr__(name: str):
    if name in _CLASSES:
        module, method = _CLASSES[name]
        importlib.import_module(f".{module}", __name__)
        value = _REGISTRY[method]
        globals()[name] = value
        return value
    if name in {module for module, _ in METHODS.values()}:
        return importlib.import_module(f".{name}", __name__)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLASSES})
