"""The interface every method implements, and model persistence.

A detector is fitted on normal samples and returns, for a new sample, an image-level anomaly
score and a per-pixel anomaly map. Models are saved as a directory holding ``config.json``
(method, its configuration, the xmodal version, the backbones used) and
``model.safetensors`` (all arrays): no pickle, so loading a model never runs code from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

FORMAT = "xmodal-model/1"
_REGISTRY: dict[str, type[Detector]] = {}


@dataclass
class AnomalyResult:
    """What a detector says about one sample.

    Attributes:
        score: image-level anomaly score (higher = more anomalous).
        map: (H, W) float32 per-pixel anomaly scores at the method's working resolution
            (224 x 224 for the paper methods); ``map_at`` resizes it.
        extras: method-specific maps (e.g. CFM's per-modality discrepancies), same shape.
    """

    score: float
    map: np.ndarray
    extras: dict = field(default_factory=dict)

    def map_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The map bilinearly resized to ``shape`` = (H, W), e.g. the input image's size."""
        from ._maps import resize_bilinear

        return resize_bilinear(self.map, shape)


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: makes a method loadable by ``xmodal.load`` under ``cls.method``."""
    _REGISTRY[cls.method] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def as_sample(sample=None, *, rgb=None, xyz=None):
    """A :class:`xmodal.data.Sample` from a Sample, an (rgb, xyz) pair, or rgb=/xyz= arrays.

    Arrays come straight from a user's pipeline: rgb (H, W, 3) uint8, xyz (H, W, 3) organized
    cloud ((0, 0, 0) = missing; float64 is converted to float32).
    """
    from ..data import Sample

    if isinstance(sample, Sample):
        if rgb is not None or xyz is not None:
            msg = "give either a Sample or rgb=/xyz= arrays, not both"
            raise ValueError(msg)
        return sample
    if sample is not None:
        if isinstance(sample, (tuple, list)) and len(sample) == 2:
            rgb, xyz = sample
        else:
            msg = f"sample must be an xmodal.data.Sample or an (rgb, xyz) pair; got {type(sample).__name__}"
            raise TypeError(msg)
    if rgb is None or xyz is None:
        msg = "predict needs a Sample, an (rgb, xyz) pair, or both rgb= and xyz="
        raise ValueError(msg)
    rgb = _to_numpy(rgb, "rgb")
    xyz = _to_numpy(xyz, "xyz")
    if rgb.dtype != np.uint8:
        msg = f"rgb must be a uint8 (H, W, 3) image; got dtype {rgb.dtype}"
        raise TypeError(msg)
    if xyz.dtype.kind != "f":
        msg = f"xyz must be a floating (H, W, 3) organized point cloud; got dtype {xyz.dtype}"
        raise TypeError(msg)
    return Sample(rgb=np.ascontiguousarray(rgb), xyz=np.ascontiguousarray(xyz, dtype=np.float32))


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    msg = f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}"
    raise TypeError(msg)


class Detector:
    """Base class of every xmodal method.

    Subclasses set ``method`` (the registry name), implement ``fit``, ``_predict`` (one Sample
    -> AnomalyResult), ``_state`` (name -> array) and ``_restore`` (the reverse), and keep
    every constructor argument in ``self.config`` (JSON-serialisable) so that
    ``type(self)(**config)`` rebuilds an unfitted twin.
    """

    method: ClassVar[str] = ""

    def __init__(self, **config: Any) -> None:
        self.config = dict(config)
        self.info: dict = {}  # facts recorded at fit time (backbones used, sizes, timings)
        self.fitted = False

    # --- to implement -----------------------------------------------------------------------
    def fit(self, samples: Iterable) -> Detector:
        raise NotImplementedError

    def _predict(self, sample) -> AnomalyResult:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def predict(self, sample=None, *, rgb=None, xyz=None) -> AnomalyResult:
        """Scores one sample: a Sample, an (rgb, xyz) pair or rgb=/xyz= numpy/torch arrays."""
        self._require_fitted()
        return self._predict(as_sample(sample, rgb=rgb, xyz=xyz))

    def predict_batch(self, samples: Iterable) -> list[AnomalyResult]:
        """Scores several samples (methods override this where batching pays off)."""
        return [self.predict(s) for s in samples]

    def target_mask(self, sample) -> np.ndarray:
        """The sample's ground truth in the geometry of ``predict(...).map`` (bool): what the
        evaluation compares the map with. Default: nearest resize to the map size, > 0.5."""
        from ..data.preprocess import resize_gt

        return resize_gt(sample.mask(), self.map_size)

    map_size: ClassVar[int] = 224

    def map_on_image(self, result: AnomalyResult, sample) -> np.ndarray:
        """``result.map`` in the geometry of the sample's own image: (H, W) float32."""
        return result.map_at(sample.shape)

    def _require_fitted(self) -> None:
        if not self.fitted:
            msg = f"this {type(self).__name__} is not fitted: call fit(samples) or xmodal.load(path) first"
            raise RuntimeError(msg)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the model directory atomically (a reader never sees a half-written model)."""
        from safetensors.numpy import save_file

        from .. import __version__

        self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
            save_file(state, str(tmp / "model.safetensors"))
            document = {"format": FORMAT, "xmodal_version": __version__, "method": self.method,
                        "config": self.config, "info": self.info}
            (tmp / "config.json").write_text(json.dumps(document, indent=2, default=_json_default))
            backup = None
            if path.exists():
                backup = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, backup)
            os.replace(tmp, path)
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def _from_saved(cls, document: dict, state: dict[str, np.ndarray]) -> Detector:
        detector = cls(**document["config"])
        detector.info = document.get("info", {})
        detector._restore(state)
        detector.fitted = True
        return detector

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args}){'' if self.fitted else ' [not fitted]'}"


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def load(path: str | os.PathLike) -> Detector:
    """Loads a model directory written by ``Detector.save``.

    Raises:
        ValueError: the directory is missing, is not an xmodal model, or is corrupt (the message
            names the file).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    if not path.is_dir():
        msg = f"model directory not found: {path}"
        raise ValueError(msg)
    for f in (config_file, weights_file):
        if not f.is_file():
            msg = f"{path} is not an xmodal model directory: {f.name} is missing"
            raise ValueError(msg)
    try:
        document = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"corrupt model config {config_file}: {exc}"
        raise ValueError(msg) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        msg = f"{config_file} is not an xmodal model config (format {document.get('format') if isinstance(document, dict) else None!r})"
        raise ValueError(msg)
    method = document.get("method")
    if method not in _REGISTRY:
        _import_methods()
    if method not in _REGISTRY:
        msg = f"{config_file}: unknown method {method!r}; known: {', '.join(method_names())}"
        raise ValueError(msg)
    try:
        state = load_file(str(weights_file))
    except (OSError, SafetensorError, ValueError) as exc:
        msg = f"corrupt model weights {weights_file}: {exc}"
        raise ValueError(msg) from exc
    try:
        return _REGISTRY[method]._from_saved(document, state)
    except KeyError as exc:
        msg = f"corrupt model {path}: missing array {exc}"
        raise ValueError(msg) from exc


def _import_methods() -> None:
    from .. import methods  # noqa: F401  (registers every method)
