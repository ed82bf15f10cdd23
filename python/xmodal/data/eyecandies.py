"""Conversion of the raw Eyecandies dataset to the MVTec 3D-AD layout, vectorised.

The reference converters (M3DM / CFM / G2SF ``preprocess_eyecandies.py``) back-project and
clean every pixel in Python loops; this module does the same arithmetic on whole arrays.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ._files import DatasetError, read_image, write_gt, write_xyz

__all__ = [
    "CATEGORIES",
    "FOCAL_LENGTH",
    "convert_eyecandies",
    "convert_sample",
    "depth_to_points",
    "read_depth",
    "remove_eyecandies_background",
]

FOCAL_LENGTH = 711.11  # pixels; the same camera for every Eyecandies image
CATEGORIES = ("CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear", "HazelnutTruffle",
              "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy")
# raw split folder -> (MVTec-layout split, whether samples carry masks)
_SPLITS = {"train": ("train", False), "val": ("validation", True), "test_public": ("test", True)}


def _normalization(path: Path) -> tuple[float, float]:
    text = path.read_text()
    try:
        import yaml

        info = yaml.safe_load(text)["normalization"]
        return float(info["min"]), float(info["max"])
    except ImportError:
        pass
    except Exception as exc:
        msg = f"{path}: expected 'normalization: {{min: ..., max: ...}}' ({type(exc).__name__}: {exc})"
        raise DatasetError(msg) from exc
    # Without PyYAML: the two numbers of the 'normalization' block.
    block = text.split("normalization", 1)[-1]
    found = {k: re.search(rf"\b{k}\s*:\s*([-+0-9.eE]+)", block) for k in ("min", "max")}
    if not all(found.values()):
        msg = f"{path}: expected 'normalization: {{min: ..., max: ...}}'"
        raise DatasetError(msg)
    return float(found["min"].group(1)), float(found["max"].group(1))


def read_depth(depth_png: str | os.PathLike, info_yaml: str | os.PathLike) -> np.ndarray:
    """(H, W) float64 metric depth: ``png / 65535 * (max - min) + min`` with min/max from the
    ``normalization`` block of ``*_info_depth.yaml``."""
    raw = read_image(depth_png, "16-bit depth PNG")
    if raw.ndim != 2:
        msg = f"{depth_png}: a depth PNG must have one channel; got shape {raw.shape}"
        raise DatasetError(msg)
    low, high = _normalization(Path(info_yaml))
    return raw.astype(np.float64) / 65535.0 * (high - low) + low


def depth_to_points(depth: np.ndarray, pose: np.ndarray, focal_length: float = FOCAL_LENGTH) -> np.ndarray:
    """(H, W, 3) float64 world points of a depth map: with ``P = K @ pose`` (K the 4x4
    intrinsics, principal point (W/2, H/2)), pixel (u, v) of depth d maps to
    ``d * inv(P) @ (u, v, 1, 1/d)``, first three coordinates (as the reference converter)."""
    h, w = depth.shape
    intrinsics = np.array([[focal_length, 0, w / 2, 0], [0, focal_length, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    inverse = np.linalg.inv(intrinsics @ np.asarray(pose, dtype=np.float64))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    vectors = np.stack([u, v, np.ones_like(u), 1.0 / depth], axis=-1)
    return (vectors @ inverse.T)[..., :3] * depth[..., None]


def remove_eyecandies_background(points: np.ndarray) -> np.ndarray:
    """(H, W, 3) float64 MVTec-like cloud from Eyecandies world points (the reference rule).

    Rotate about x so that the line through the top-centre and bottom-centre points becomes
    an axis; there, points with y > -0.02, z > 1.8 or |x| > 1 are background and move to the
    rotated frame's origin shift, which maps back to x = 0. Finally the axes are reordered to
    (x, z, y) and scaled by (0.1, -0.1, 0.1); background points end with x = 0 exactly, which
    the "all coordinates non-zero" foreground test rejects.
    """
    h, w, _ = points.shape
    flat = points.reshape(-1, 3)
    top, bottom = flat[w // 2], flat[-(w - w // 2)]
    dz, dy = top[1] - bottom[1], top[2] - bottom[2]
    norm = np.hypot(dz, dy)
    cos, sin = dy / norm, dz / norm
    rotation = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    start = np.array([0.0, bottom[1], bottom[2]])
    rotated = (flat - start) @ rotation.T
    background = (rotated[:, 1] > -0.02) | (rotated[:, 2] > 1.8) | (np.abs(rotated[:, 0]) > 1)
    rotated[background] = -start
    restored = rotated @ rotation + start
    return (restored[:, [0, 2, 1]] * np.array([0.1, -0.1, 0.1])).reshape(h, w, 3)


def _read_pose(path: Path) -> np.ndarray:
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except FileNotFoundError:
        raise
    except Exception as exc:
        msg = f"{path}: cannot read the 4x4 camera pose ({type(exc).__name__}: {exc})"
        raise DatasetError(msg) from exc
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        msg = f"{path}: the camera pose must be a finite 4x4 matrix; got shape {pose.shape}"
        raise DatasetError(msg)
    return pose


def convert_sample(data_dir: str | os.PathLike, sample_id: str) -> np.ndarray:
    """(H, W, 3) float32 converted cloud of raw sample ``<data_dir>/<sample_id>_*``."""
    data_dir = Path(data_dir)
    files = {k: data_dir / f"{sample_id}_{k}" for k in ("depth.png", "info_depth.yaml", "pose.txt")}
    for path in files.values():
        if not path.is_file():
            msg = f"{path}: missing file of Eyecandies sample {sample_id} in {data_dir}"
            raise DatasetError(msg)
    depth = read_depth(files["depth.png"], files["info_depth.yaml"])
    if not (np.isfinite(depth).all() and (depth > 0).all()):
        msg = f"{files['depth.png']}: decoded depths must be positive (check {files['info_depth.yaml']})"
        raise DatasetError(msg)
    points = depth_to_points(depth, _read_pose(files["pose.txt"]))
    return remove_eyecandies_background(points).astype(np.float32)


def convert_eyecandies(src: str | os.PathLike, dst: str | os.PathLike, categories=None,
                       splits=("train", "val", "test_public")) -> Path:
    """Converts raw Eyecandies to the MVTec 3D-AD layout read by :class:`xmodal.data.Eyecandies`.

    Raw input: ``<src>/<Category>/<split>/data/<id>_{depth.png, info_depth.yaml, pose.txt,
    image_4.png[, mask.png]}``. Output: ``<dst>/<Category>/train/good/{rgb,xyz}`` and
    ``<dst>/<Category>/{validation,test}/{good,bad}/{rgb,xyz,gt}``, files named by the sample
    id as three digits. The RGB is ``image_4.png`` copied unchanged; a sample with a mask
    that has any non-zero pixel is "bad"; masks are written as 0/255 gray PNGs; xyz is the
    back-projected cloud with the reference background rule (:func:`remove_eyecandies_background`).
    ``src`` is only read.

    Args:
        src: raw Eyecandies root.
        dst: output root (created; must not be inside ``src``).
        categories: category folder names (default: every folder of ``src`` with a
            ``train``/``val``/``test_public`` sub-folder).
        splits: raw splits to convert ("train", "val", "test_public"); missing ones are skipped.

    Returns:
        Path of ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        msg = f"Eyecandies source {src} is not a directory"
        raise FileNotFoundError(msg)
    if src.resolve() == dst.resolve() or src.resolve() in dst.resolve().parents:
        msg = f"dst {dst} lies inside the source dataset {src}; write the converted dataset elsewhere"
        raise ValueError(msg)
    unknown = [s for s in splits if s not in _SPLITS]
    if unknown:
        msg = f"splits must be names from {tuple(_SPLITS)}; got {unknown}"
        raise ValueError(msg)
    if categories is None:
        categories = sorted(p.name for p in src.iterdir() if p.is_dir() and any((p / s).is_dir() for s in _SPLITS))
    for category in categories:
        if not (src / category).is_dir():
            msg = f"Eyecandies category folder {src / category} does not exist"
            raise FileNotFoundError(msg)
        for raw_split in splits:
            data_dir = src / category / raw_split / "data"
            if not data_dir.is_dir():
                continue
            split, has_masks = _SPLITS[raw_split]
            ids = sorted(p.name[: -len("_depth.png")] for p in data_dir.glob("*_depth.png"))
            for sample_id in ids:
                mask = None
                if has_masks and (data_dir / f"{sample_id}_mask.png").exists():
                    mask = _read_mask(data_dir / f"{sample_id}_mask.png")
                defect = "bad" if mask is not None and mask.any() else "good"
                out = dst / category / split / defect
                stem = f"{int(sample_id):03d}" if sample_id.isdigit() else sample_id
                xyz = convert_sample(data_dir, sample_id)
                rgb_src = data_dir / f"{sample_id}_image_4.png"
                if not rgb_src.is_file():
                    msg = f"{rgb_src}: missing RGB image of Eyecandies sample {sample_id}"
                    raise DatasetError(msg)
                (out / "rgb").mkdir(parents=True, exist_ok=True)
                with atomic_path(out / "rgb" / f"{stem}.png") as tmp:
                    shutil.copyfile(rgb_src, tmp)
                with atomic_path(out / "xyz" / f"{stem}.tiff") as tmp:
                    write_xyz(tmp, xyz)
                if split != "train":
                    with atomic_path(out / "gt" / f"{stem}.png") as tmp:
                        write_gt(tmp, np.zeros(xyz.shape[:2], bool) if mask is None else mask)
    return dst


def _read_mask(path: Path) -> np.ndarray:
    """(H, W) bool: pixels with any non-zero channel (the reference decides "bad" by
    ``np.any(mask)``)."""
    arr = read_image(path, "Eyecandies mask")
    return arr.any(axis=-1) if arr.ndim == 3 else arr != 0

