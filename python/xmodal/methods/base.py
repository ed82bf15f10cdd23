"""The interface every method implements, the plumbing they share, and model persistence.

A detector is fitted on normal samples and returns, for a new sample, an image-level anomaly
score, a per-pixel anomaly map and, once calibrated on good images it did not train on, a
verdict with a threshold and scores normalised on the fit-time scale
(:mod:`xmodal.methods.calibration`). Models are saved as a directory holding ``config.json``
(method, its configuration, the xmodal version, fit-time facts) and ``model.safetensors`` (all
arrays): no pickle, so loading a model never runs code from it.

A method module holds only what is particular to its paper. It subclasses :class:`Detector`
and implements ``_fit`` (train on a Sequence of good samples), ``_build_extractor`` (its
backbones, from ``self.info``), ``_features`` + ``_result`` (or ``_score_batch``) for
scoring, and ``_state`` / ``_restore`` / ``_state_spec`` for persistence. The base does the
rest: sample batching with progress bars that count samples, the lazy feature extractor,
recording the backbone choice, calibration and verdicts, logging, saving and loading.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import _arrays
from .._threads import configure_torch
from . import _model_dir
from .calibration import PIXEL_STRIDE, Calibration, normalize
from .options import PointMAEOptions, migrate_config, reject_unknown, take_renamed
from .samples import as_sequence, batches, check_share, plan_calibration

FORMAT = _model_dir.FORMAT
_REGISTRY: dict[str, type[Detector]] = {}
logger = logging.getLogger("xmodal")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass
class AnomalyResult:
    """What a detector says about one sample.

    Attributes:
        score: image-level anomaly score (higher = more anomalous).
        map: (H, W) float32 per-pixel anomaly scores at the method's working resolution
            (224 x 224 for the paper methods); ``map_at`` resizes it.
        extras: method-specific maps (e.g. CFM's per-modality discrepancies), same shape.
        threshold: the detector's image threshold when the result was computed (None: the
            model was not calibrated, e.g. saved by xmodal before calibration existed).
        is_anomalous: ``score > threshold`` (None without a threshold).
        normalized_score: ``score`` on the fit-time scale, 0.5 at the threshold, in (0, 1)
            (formula in :mod:`xmodal.methods.calibration`); None without calibration.
        pixel_threshold, pixel_scale: what ``normalized_map`` uses (None without calibration).
    """

    score: float
    map: np.ndarray
    extras: dict = field(default_factory=dict)
    threshold: float | None = None
    is_anomalous: bool | None = None
    normalized_score: float | None = None
    pixel_threshold: float | None = None
    pixel_scale: float | None = None

    @property
    def normalized_map(self) -> np.ndarray | None:
        """``map`` on the fit-time pixel scale: 0.5 at the pixel threshold, (H, W) float32 in
        (0, 1); None for an uncalibrated model."""
        return self.normalize_map(self.map)

    def normalize_map(self, values) -> np.ndarray | None:
        """Any map of this result (e.g. resized to the image) on the fit-time pixel scale."""
        if self.pixel_threshold is None or self.pixel_scale is None:
            return None
        return normalize(values, self.pixel_threshold, self.pixel_scale)

    def map_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The map bilinearly resized to ``shape`` = (H, W), e.g. the input image's size."""
        from .postprocess import resize_bilinear

        return resize_bilinear(self.map, shape)

    @property
    def verdict(self) -> str:
        """"anomalous", "good", or "unavailable (...)" for a model without a threshold."""
        if self.is_anomalous is None:
            return "unavailable (the model has no threshold: refit it, or set detector.threshold)"
        return "anomalous" if self.is_anomalous else "good"


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: makes a method loadable by ``xmodal.load`` under ``cls.method``."""
    _REGISTRY[cls.method] = cls
    return cls


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
    if _arrays.is_torch(x):
        _arrays.check_device(x, name)
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    msg = f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}"
    raise TypeError(msg)


def check_device(device) -> str:
    """"cpu", "cuda" or "cuda:N" (a torch.device is accepted too)."""
    text = str(device)
    if not _DEVICE.match(text):
        msg = f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}"
        raise ValueError(msg)
    return text


class Detector:
    """Base class of every xmodal method.

    Subclasses set ``method`` (the registry name), implement the hooks listed in the module
    docstring, and keep every constructor argument in ``self.config`` (JSON-serialisable) so
    that ``type(self)(**config)`` rebuilds an unfitted twin. Options every method shares
    (normalised by :meth:`common_options`): ``backbones``, ``weights_dir``, ``device``,
    ``seed``, ``batch_size``, ``max_memory``, ``calibration``, ``progress``,
    ``random_weights``, ``pointmae``.
    """

    method: ClassVar[str] = ""
    map_size: ClassVar[int] = 224  # side of ``AnomalyResult.map``

    def __init__(self, **config: Any) -> None:
        from .. import engines

        self._engine = engines.check_engine(config.pop("engine", "torch"))
        self._precision = engines.check_precision(config.pop("precision", "fp32"))
        self.config = dict(config)
        self.info: dict = {}  # facts recorded at fit time (backbones used, sizes, timings, calibration)
        self.fitted = False
        self.calibration: Calibration | None = None
        self._extractor = None
        self._runners = None  # the heads' runners for a non-default engine or precision
        self._exported = None  # the graphs of an exported directory this detector was loaded from

    @classmethod
    def common_options(cls, legacy: dict, *, backbones: str, weights_dir, device, seed: int, batch_size: int,
                       max_memory, max_memory_default, calibration: float, progress: bool, random_weights: bool,
                       pointmae) -> dict:
        """The shared options, validated, with the old keyword arguments in ``legacy`` mapped
        (Point-MAE's four flat options; ``max_cache_bytes``, deprecated) and any other
        unknown keyword rejected as Python would."""
        from .._arrays import integer, one_of
        from ._backbones import CHOICES

        one_of(backbones, "backbones", CHOICES)
        max_memory = take_renamed(legacy, "max_memory", max_memory, max_memory_default)
        options = PointMAEOptions.of(pointmae, legacy)
        runtime = {k: legacy.pop(k) for k in ("engine", "precision") if k in legacy}  # taken by Detector.__init__
        reject_unknown(legacy, cls)
        integer(seed, "seed", minimum=0)
        return {"backbones": backbones, "weights_dir": None if weights_dir is None else str(weights_dir),
                "device": check_device(device), "seed": int(seed), "batch_size": batch_size,
                "max_memory": max_memory, "calibration": check_share(calibration), "progress": bool(progress),
                "random_weights": bool(random_weights), "pointmae": options.as_dict(), **runtime}

    @property
    def pointmae(self) -> PointMAEOptions:
        return PointMAEOptions(**self.config["pointmae"])

    # --- to implement -----------------------------------------------------------------------
    def _fit(self, samples) -> None:
        """Trains on ``samples``, a Sequence of good samples (read it with :meth:`_batches`)."""
        raise NotImplementedError

    def _build_extractor(self):
        """The feature extractor the fitted model uses (from ``self.info``)."""
        raise NotImplementedError

    def _features(self, batch: list):
        raise NotImplementedError

    def _result(self, features, i: int) -> AnomalyResult:
        """The raw result (score, map, extras) of image ``i`` of a batch's features."""
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _state_spec(self) -> dict[str, tuple]:
        """name -> shape (None: any size) of the arrays ``_restore`` needs, from ``config`` and
        ``info``: ``xmodal.load`` checks them first, so a tampered file gets a clear error."""
        return {}

    # --- shared plumbing --------------------------------------------------------------------
    def _log(self, message: str) -> None:
        """An INFO message on the "xmodal" logger; when the application has not enabled INFO
        for it and ``progress`` is on, on stderr as ``[xmodal <method>] message``."""
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s: %s", self.method, message)
        elif self.config.get("progress"):
            print(f"[xmodal {self.method}] {message}", file=sys.stderr, flush=True)

    @property
    def extractor(self):
        """The backbones, built on first use (loading a model does not load them), run by
        ``engine`` in ``precision``."""
        if self._extractor is None:
            from ..engines import export, runtime

            if self._exported is not None and self._engine != "torch":
                with runtime.skeleton_weights(self):  # the graphs replace the modules: no weight files
                    extractor = self._build_extractor()
            else:
                extractor = self._build_extractor()
            self._extractor = export.attach(self, extractor)
        return self._extractor

    # --- engines and precision (xmodal.engines) -----------------------------------------------
    @property
    def engine(self) -> str:
        """What runs the neural parts: "torch" (default), "onnxruntime", "openvino" or
        "tensorrt" (:mod:`xmodal.engines`); settable, e.g. per machine after ``xmodal.load``."""
        return self._engine

    @engine.setter
    def engine(self, value) -> None:
        from .. import engines

        self._engine = engines.check_engine(value)
        self._extractor, self._runners = None, None

    @property
    def precision(self) -> str:
        """"fp32" (default) or "bf16" for the backbones and heads; the kernels stay fp32."""
        return self._precision

    @precision.setter
    def precision(self, value) -> None:
        from .. import engines

        self._precision = engines.check_precision(value)
        self._extractor, self._runners = None, None

    def _heads(self) -> dict:
        """The method's own neural modules besides the backbones, {name: torch module or
        :class:`xmodal.engines.graphs.Head`} (e.g. CFM's mapping networks, a flow with its
        declared inputs and outputs): exported as graphs and run by the engine. A method that
        declares heads calls :meth:`_head_runners` on its scoring path."""
        return {}

    def _head_runners(self) -> dict | None:
        """{name: callable} standing in for ``_heads()`` on the engine and precision; None for
        torch in fp32 (the method then uses its modules, or xmodal's fused kernels, directly)."""
        if self._runners is None:
            from ..engines import export

            self._runners = export.heads(self)
        return self._runners

    def export(self, path: str | os.PathLike, format: str = "onnx", *, batch: int | None = None,
               overwrite: bool = False) -> Path:
        """Writes the model as ONNX graphs of its neural parts plus the rest as safetensors.

        The directory is a model directory that ``xmodal.load`` runs with onnxruntime (or
        ``engine="openvino"`` / ``"tensorrt"``) without the backbones' weight files; its
        ``manifest.json`` names the graphs, their shapes and the xmodal ops between them, and
        gives the TensorRT profiles and ``trtexec`` commands. Save rules as :meth:`save`.

        Args:
            path: the output directory.
            format: "onnx".
            batch: None for a dynamic batch axis, or the fixed batch size of the backbone graphs
                (heads always take a dynamic number of rows).
            overwrite: as for :meth:`save`.
        """
        from ..engines import export

        return export.export(self, path, format, batch=batch, overwrite=overwrite)

    def _feature_extractor(self, rgb: str, xyz: str, grid: int, **options):
        """A :class:`xmodal.backbones.FeatureExtractor` with this detector's device, weights and
        Point-MAE options; random weights are drawn from ``seed`` (the same after a reload)."""
        import torch

        from ..backbones import FeatureExtractor

        c = self.config
        if xyz == "pointmae":
            options = {**self.pointmae.as_dict(), **options}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            return FeatureExtractor(rgb, xyz, grid, device=c["device"], weights_dir=c["weights_dir"],
                                    random_weights=c["random_weights"], **options)

    def _record_backbones(self, choice: str, reason: str, spec: dict | None = None, detail: str = "") -> None:
        """Announces the fit-time backbone choice and records it (with what the extractor
        reports) as the first facts of ``info``; the extractor is rebuilt only if it changed."""
        self._log(f"backbones: {choice} ({reason}){detail}")
        if (self.info.get("backbones"), self.info.get("backbone_spec")) != (choice, spec):
            self._extractor = None
        self.info = {"backbones": choice, "backbones_reason": reason}
        if spec is not None:
            self.info["backbone_spec"] = spec
        self.info["features"] = self.extractor.describe()

    def _batches(self, samples, description: str, size: int | None = None):
        return batches(samples, size or self.config["batch_size"], description, enabled=self.config["progress"])

    def _uses_points(self) -> bool:
        """Whether every score comes from the 3D foreground: then a sample without a single valid
        point cannot be judged (CFM). Default False: methods that score background cells too (BTF,
        PatchCore's banks) define what an empty cloud gives."""
        return False

    def _check_points(self, batch: list) -> None:
        """ValueError for a sample whose cloud has no valid point, when the method scores the 3D
        foreground: its map would be all zero and its verdict "good" whatever the part looks like
        (a camera fault, not a good part). Readers already refuse such files; this catches arrays."""
        if not self._uses_points():
            return
        for sample in batch:
            if not sample.foreground().any():
                where = sample.paths.get("xyz", "the sample")
                msg = (f"xyz of {where} has no valid point (every point is (0, 0, 0)): {self.method} scores the "
                       "3D foreground, so it cannot judge this part (check the 3D sensor)")
                raise ValueError(msg)

    def _score_batch(self, batch: list) -> list[AnomalyResult]:
        """Raw results of a list of Samples (one backbone pass)."""
        import torch

        self._check_points(batch)
        configure_torch()
        with torch.no_grad():
            features = self._features(batch)
            return [self._result(features, i) for i in range(len(batch))]

    # --- fit --------------------------------------------------------------------------------
    def fit(self, samples: Iterable, *, validation: Iterable | None = None) -> Detector:
        """Trains on good samples, then calibrates the verdict on good images it did not train on.

        Args:
            samples: good :class:`xmodal.data.Sample` objects (or (rgb, xyz) pairs). A
                Sequence such as ``MVTec3D(root, category, "train")`` is read batch by batch,
                never all in memory; any other iterable is first read into a list.
            validation: good samples to calibrate on. Default: the dataset's validation split
                when ``samples`` is a reader that has one (MVTec 3D-AD, converted Eyecandies:
                its good images), else ``calibration`` (a share) of ``samples`` held out of
                training. ``calibration=0`` skips calibration: no threshold.
        """
        samples = as_sequence(samples)
        if len(samples) == 0:
            msg = "samples must hold at least one training Sample; got none"
            raise ValueError(msg)
        train, held, source = plan_calibration(samples, validation, self.config["calibration"], self.config["seed"])
        configure_torch()
        self.fitted = False
        self.calibration = None
        self._runners = None
        self._fit(train)
        self._runners = None  # heads trained by _fit: their runners are made from the new weights
        self.info["train_images"] = len(train)
        self.fitted = True
        if held is None:
            self.info["calibration"] = {"threshold": None, "source": source}
            self._log(f"no calibration: {source}")
        else:
            self._calibrate(held, source)
        return self

    def _calibrate(self, samples, source: str) -> None:
        started = time.perf_counter()
        scores, maxima, pixels = [], [], []
        for batch in self._batches(samples, "calibrating on good images"):
            for result in self._score_batch(batch):
                scores.append(result.score)
                maxima.append(float(np.max(result.map)))
                pixels.append(np.asarray(result.map, dtype=np.float64).ravel()[::PIXEL_STRIDE])
        self.calibration = Calibration.fit(scores, maxima, np.concatenate(pixels), source)
        self.info["calibration"] = self.calibration.summary()
        self.info["calibration_seconds"] = round(time.perf_counter() - started, 3)
        c = self.calibration
        self._log(f"calibrated on {source}: threshold {c.threshold:.6g} (scale {c.scale:.3g}), "
                 f"pixel threshold {c.pixel_threshold:.6g}")

    # --- verdicts ---------------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """Image threshold: a score above it is anomalous. Calibrated at fit; may be set (the
        normalised scores then put 0.5 at the new value, with the fit-time scale)."""
        if self.calibration is not None:
            return self.calibration.threshold
        return self.info.get("calibration", {}).get("threshold")

    @threshold.setter
    def threshold(self, value) -> None:
        from .._arrays import number

        value = number(value, "threshold")
        if self.calibration is not None:
            self.calibration.threshold = value
            self.info["calibration"] = self.calibration.summary()
        else:
            self.info["calibration"] = {"threshold": value, "source": "set by the user (no calibration statistics)"}

    @property
    def pixel_threshold(self) -> float | None:
        """Pixel threshold of ``normalized_map`` (0.5 there); settable on a calibrated model."""
        return None if self.calibration is None else self.calibration.pixel_threshold

    @pixel_threshold.setter
    def pixel_threshold(self, value) -> None:
        from .._arrays import number

        if self.calibration is None:
            msg = "pixel_threshold needs a calibrated model (fit with calibration > 0)"
            raise ValueError(msg)
        self.calibration.pixel_threshold = number(value, "pixel_threshold")
        self.info["calibration"] = self.calibration.summary()

    def _judge(self, result: AnomalyResult) -> AnomalyResult:
        """Adds the verdict and the fit-time normalisation to a raw result."""
        threshold = self.threshold
        if threshold is not None:
            result.threshold = threshold
            result.is_anomalous = bool(result.score > threshold)
        c = self.calibration
        if c is not None:
            result.normalized_score = normalize(result.score, c.threshold, c.scale)
            result.pixel_threshold, result.pixel_scale = c.pixel_threshold, c.pixel_scale
        return result

    # --- predict ----------------------------------------------------------------------------
    def predict(self, sample=None, *, rgb=None, xyz=None) -> AnomalyResult:
        """Scores one sample: a Sample, an (rgb, xyz) pair or rgb=/xyz= numpy/torch arrays."""
        self._require_fitted()
        return self._judge(self._score_batch([as_sample(sample, rgb=rgb, xyz=xyz)])[0])

    def predict_batch(self, samples: Iterable, batch_size: int | None = None) -> list[AnomalyResult]:
        """Scores several samples, the backbones run on ``batch_size`` images at a time
        (default: the ``batch_size`` option). ``samples`` is read batch by batch."""
        self._require_fitted()
        size = batch_size or self.config["batch_size"]
        return [self._judge(r) for batch in batches(samples, size, "", enabled=False) for r in self._score_batch(batch)]

    def target_mask(self, sample) -> np.ndarray:
        """The sample's ground truth in the geometry of ``predict(...).map`` (bool): what the
        evaluation compares the map with. Default: nearest resize to the map size, > 0.5."""
        from ..data.preprocess import resize_gt

        return resize_gt(sample.mask(), self.map_size)

    def map_on_image(self, result: AnomalyResult, sample) -> np.ndarray:
        """``result.map`` in the geometry of the sample's own image: (H, W) float32."""
        return result.map_at(sample.shape)

    def _require_fitted(self) -> None:
        if not self.fitted:
            msg = f"this {type(self).__name__} is not fitted: call fit(samples) or xmodal.load(path) first"
            raise RuntimeError(msg)

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes the model directory; never loses data (rules in :mod:`._model_dir`).

        ``path`` may be new, an empty folder or an earlier xmodal model (replaced atomically).
        Anything else raises ValueError unless ``overwrite=True``, which replaces what is at
        ``path`` and nothing outside it.
        """
        self._require_fitted()
        return _model_dir.write(path, self._model_files(), overwrite=overwrite)

    def _model_arrays(self) -> dict[str, np.ndarray]:
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        if self.calibration is not None:
            state.update(self.calibration.arrays())
        return state

    def _model_files(self) -> dict:
        """{file name: writer} of the model directory (``config.json``, ``model.safetensors``)."""
        from safetensors.numpy import save_file

        from .. import __version__

        state = self._model_arrays()
        document = {"format": FORMAT, "xmodal_version": __version__, "method": self.method,
                    "config": self.config, "info": self.info}
        text = json.dumps(document, indent=2, default=_json_default)
        return {_model_dir.WEIGHTS: lambda p: save_file(state, str(p)),
                _model_dir.CONFIG: lambda p: p.write_text(text)}

    @classmethod
    def _from_saved(cls, path: Path, document: dict, state: dict[str, np.ndarray], device=None, engine=None,
                    precision=None) -> Detector:
        config_file, weights_file = path / _model_dir.CONFIG, path / _model_dir.WEIGHTS
        config = migrate_config(document["config"])
        if device is not None:
            config["device"] = check_device(device)
        try:
            detector = cls(**config)
            detector.info = document["info"]
            spec = detector._state_spec()
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"corrupt model config {config_file}: {_model_dir.one_line(exc)}"
            raise ValueError(msg) from exc
        _model_dir.check_state(weights_file, state, spec)
        own = {k: v for k, v in state.items() if not k.startswith("calibration.")}
        try:
            detector._restore(own)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            msg = f"corrupt model weights {weights_file}: {_model_dir.one_line(exc)} (does it belong to {config_file}?)"
            raise ValueError(msg) from exc
        summary = detector.info.get("calibration")
        if "calibration.image_scores" in state:
            try:
                detector.calibration = Calibration.restore(summary, state)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                msg = (f"corrupt model {path}: calibration in {config_file.name} / {weights_file.name}: "
                       f"{_model_dir.one_line(exc)}")
                raise ValueError(msg) from exc
        detector.fitted = True
        from ..engines.export import Exported

        detector._exported = Exported.read(path)
        if detector._exported is not None:
            detector._exported.require(detector._heads())
        detector.engine = engine or ("onnxruntime" if detector._exported is not None else "torch")
        detector.precision = precision or "fp32"
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


def load(path: str | os.PathLike, device: str | None = None, *, engine: str | None = None,
         precision: str | None = None) -> Detector:
    """Loads a model directory written by ``Detector.save`` or ``Detector.export``.

    Args:
        path: the model directory.
        device: run the model there ("cpu", "cuda[:N]") instead of the device it was fitted on.
        engine: what runs the neural parts (:mod:`xmodal.engines`); default "torch", and
            "onnxruntime" for an exported directory (its graphs, no backbone weight files).
        precision: "fp32" (default) or "bf16" for the neural parts.

    Raises:
        ValueError: the directory is missing, is not an xmodal model, or is corrupt (one line
            naming the file).
    """
    path = Path(path)
    document, state = _model_dir.read(path)
    from . import METHODS, method_class

    method = document["method"]
    if method not in METHODS:
        msg = f"{path / _model_dir.CONFIG}: unknown method {method!r}; known: {', '.join(sorted(METHODS))}"
        raise ValueError(msg)
    if engine is not None or precision is not None:
        from .. import engines

        engine = None if engine is None else engines.check_engine(engine)
        precision = None if precision is None else engines.check_precision(precision)
    return method_class(method)._from_saved(path, document, state, device, engine, precision)
