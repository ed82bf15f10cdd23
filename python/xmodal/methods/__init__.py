"""Anomaly detection methods, all behind one interface (:class:`Detector`).

>>> det = xmodal.methods.CFM(backbones="offline")
>>> det.fit(train_samples)                      # iterable of xmodal.data.Sample
>>> res = det.predict(sample)                   # AnomalyResult(score, map)
>>> det.save("model_dir"); det = xmodal.load("model_dir")
"""

from .base import AnomalyResult, Detector, as_sample, load, method_names, register
from .cfm import CFM
from .patchcore import PatchCore

__all__ = ["CFM", "AnomalyResult", "Detector", "as_sample", "load", "method_names", "register", "create"]
__all__ += ["PatchCore"]


def create(method: str, **options) -> Detector:
    """A detector by registry name ("cfm", "patchcore", ...) with its constructor options."""
    from .base import _REGISTRY

    if method not in _REGISTRY:
        msg = f"method must be one of {', '.join(method_names())}; got {method!r}"
        raise ValueError(msg)
    return _REGISTRY[method](**options)
