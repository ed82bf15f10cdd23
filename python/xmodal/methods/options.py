"""Options shared by several methods: the Point-MAE settings and the renamed keyword arguments.

Every method that can run Point-MAE takes ``pointmae=PointMAEOptions(...)`` (or a dict with the
same keys). The four flat keyword arguments of earlier versions (``num_group=``,
``group_size=``, ``reference_fps=``, ``reference_train_mode=``) keep working, and CFM's
``max_cache_bytes=`` is a deprecated alias of ``max_memory=``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from .._arrays import integer

# modality option -> the modalities it scores (PatchCore today; the 2D baselines and BridgeNet next)
MODALITIES = {"rgb": ("rgb",), "xyz": ("xyz",), "rgb+xyz": ("rgb", "xyz")}
# modality option of the 2D methods of the benchmark study (PaDiM, FastFlow): the image they read
IMAGE_MODALITIES = ("rgb", "depth")
POINTMAE_KEYS = ("num_group", "group_size", "reference_fps", "reference_train_mode")
# old keyword -> current keyword (kept working, with a DeprecationWarning)
RENAMED = {"max_cache_bytes": "max_memory"}


@dataclass(frozen=True)
class PointMAEOptions:
    """How Point-MAE groups a cloud (see :class:`xmodal.backbones.FeatureExtractor`).

    Attributes:
        num_group: patch centres chosen by farthest point sampling (paper: 1024).
        group_size: points per patch, its nearest neighbours (paper: 128).
        reference_fps: start the farthest point sampling where the reference CUDA kernel
            does (reproduces the reference features exactly) instead of at point 0.
        reference_train_mode: run Point-MAE in train mode as the reference code does
            (dropout off, but its batch-norm layers use batch statistics).
    """

    num_group: int = 1024
    group_size: int = 128
    reference_fps: bool = False
    reference_train_mode: bool = False

    def __post_init__(self) -> None:
        integer(self.num_group, "pointmae.num_group", minimum=1)
        integer(self.group_size, "pointmae.group_size", minimum=1)
        for name in ("reference_fps", "reference_train_mode"):
            if not isinstance(getattr(self, name), bool):
                msg = f"pointmae.{name} must be True or False; got {getattr(self, name)!r}"
                raise TypeError(msg)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, value, legacy: dict) -> PointMAEOptions:
        """``value`` (None, a PointMAEOptions or a dict of its fields) updated by the flat
        keyword arguments popped from ``legacy``."""
        flat = {k: legacy.pop(k) for k in POINTMAE_KEYS if k in legacy}
        if value is None:
            base = {}
        elif isinstance(value, PointMAEOptions):
            base = value.as_dict()
        elif isinstance(value, dict):
            unknown = sorted(set(value) - set(POINTMAE_KEYS))
            if unknown:
                msg = f"pointmae has unknown keys {unknown}; expected some of {list(POINTMAE_KEYS)}"
                raise ValueError(msg)
            base = dict(value)
        else:
            msg = f"pointmae must be a PointMAEOptions, a dict or None; got {type(value).__name__}"
            raise TypeError(msg)
        return cls(**{**base, **flat})


def take_renamed(legacy: dict, current: str, value, default):
    """The value of option ``current``, or of its deprecated old name popped from ``legacy``
    (with a DeprecationWarning); giving both different values is an error."""
    for old, new in RENAMED.items():
        if new != current or old not in legacy:
            continue
        old_value = legacy.pop(old)
        warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=4)
        if value != default and value != old_value:
            msg = f"give {new}= or its deprecated alias {old}=, not both ({value!r} and {old_value!r})"
            raise ValueError(msg)
        return old_value
    return value


def reject_unknown(legacy: dict, cls: type) -> None:
    """Python's own error for keyword arguments a constructor does not take."""
    if legacy:
        name = sorted(legacy)[0]
        msg = f"{cls.__name__}() got an unexpected keyword argument {name!r}"
        raise TypeError(msg)


def migrate_config(config: dict) -> dict:
    """A saved model's constructor options with renamed keys brought up to date (loading an
    old model must not warn about options its user never typed)."""
    config = dict(config)
    for old, new in RENAMED.items():
        if old in config:
            config.setdefault(new, config.pop(old))
            config.pop(old, None)
    return config
