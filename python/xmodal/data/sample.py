"""The unit of data every layer above passes around: one RGB image and its organized cloud."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .._arrays import check_finite

__all__ = ["Sample", "foreground_mask"]


def foreground_mask(xyz: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose three coordinates are all non-zero.

    This is the foreground test of every reference implementation (``np.all(p != 0, axis=-1)``):
    missing points are (0, 0, 0), and the Eyecandies conversion marks its background with
    x = 0 only, which this test also treats as background.
    """
    # Three comparisons on strided views: several times faster than np.all(..., axis=-1).
    return (xyz[..., 0] != 0) & (xyz[..., 1] != 0) & (xyz[..., 2] != 0)


@dataclass
class Sample:
    """One inspected part: an RGB image and the organized point cloud registered to it.

    Attributes:
        rgb: (H, W, 3) uint8 image.
        xyz: (H, W, 3) float32 organized point cloud, one 3D point per pixel (metres for MVTec
            3D-AD); (0, 0, 0) marks a missing point.
        gt: (H, W) bool ground-truth defect mask, or None when unknown.
        label: 0 for a good part, 1 for an anomalous one.
        defect: defect type ("good" for good parts).
        category: object class (e.g. "bagel").
        paths: source files, e.g. {"rgb": ..., "xyz": ..., "gt": ...}.
    """

    rgb: np.ndarray
    xyz: np.ndarray
    gt: np.ndarray | None = None
    label: int = 0
    defect: str = "good"
    category: str = ""
    paths: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_array(self.rgb, "rgb", np.uint8, 3)
        _check_array(self.xyz, "xyz", np.float32, 3)
        # a NaN/inf point would flow into every feature and score: missing points are (0, 0, 0)
        try:
            check_finite(self.xyz, "Sample.xyz")
        except ValueError as exc:
            raise ValueError(f"{exc}; missing points must be (0, 0, 0)") from None
        if self.rgb.shape[:2] != self.xyz.shape[:2]:
            msg = (
                "Sample.rgb and Sample.xyz must have the same height and width; "
                f"got {self.rgb.shape[:2]} and {self.xyz.shape[:2]}"
            )
            raise ValueError(msg)
        if self.gt is not None:
            _check_array(self.gt, "gt", np.bool_, 2)
            if self.gt.shape != self.rgb.shape[:2]:
                msg = f"Sample.gt must have shape {self.rgb.shape[:2]} like rgb; got {self.gt.shape}"
                raise ValueError(msg)
        if self.label not in (0, 1):
            msg = f"Sample.label must be 0 (good) or 1 (anomalous); got {self.label!r}"
            raise ValueError(msg)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return (int(self.rgb.shape[0]), int(self.rgb.shape[1]))

    @property
    def name(self) -> str:
        """``category/defect/stem`` of the source files (stem empty for in-memory samples)."""
        source = self.paths.get("xyz") or self.paths.get("rgb") or ""
        stem = str(source).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return f"{self.category}/{self.defect}/{stem}"

    def foreground(self) -> np.ndarray:
        """(H, W) bool: pixels with a valid point (all three coordinates non-zero)."""
        return foreground_mask(self.xyz)

    def points(self) -> np.ndarray:
        """(N, 3) float32: the valid points in row-major pixel order."""
        return self.xyz[self.foreground()]

    def mask(self) -> np.ndarray:
        """(H, W) bool ground truth; all False when ``gt`` is None."""
        return self.gt if self.gt is not None else np.zeros(self.shape, dtype=bool)

    def replace(self, **changes) -> Sample:
        """A copy with some fields replaced (arrays are shared, not copied)."""
        return dataclasses.replace(self, **changes)


def _check_array(a, name: str, dtype, ndim: int) -> None:
    if not isinstance(a, np.ndarray):
        msg = f"Sample.{name} must be a numpy array; got {type(a).__name__}"
        raise TypeError(msg)
    if a.dtype != dtype:
        msg = f"Sample.{name} must have dtype {np.dtype(dtype).name}; got {a.dtype}"
        raise TypeError(msg)
    if a.ndim != ndim or (ndim == 3 and a.shape[2] != 3):
        expected = "(H, W, 3)" if ndim == 3 else "(H, W)"
        msg = f"Sample.{name} must have shape {expected}; got {a.shape}"
        raise ValueError(msg)
