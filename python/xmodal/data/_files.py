"""Reading and writing the files of the MVTec 3D-AD layout, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DatasetError", "read_gt", "read_image", "read_rgb", "read_sample_files", "read_xyz", "write_gt",
           "write_rgb", "write_xyz"]


class DatasetError(ValueError):
    """A dataset file or folder is missing, unreadable or not in the expected format."""


def read_image(path: str | os.PathLike, what: str, mode: str | None = None) -> np.ndarray:
    """The pixels of an image file (converted to PIL ``mode`` when given), decoded at once so
    a truncated or corrupt file raises a DatasetError that names it and says what it was."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if mode and img.mode in _WIDE_GRAY:
                img = _to_8bit(img, path, what)
            elif mode and img.mode == "F":
                msg = f"{path}: the {what} is a floating-point image; expected an 8-bit (or 16-bit) PNG"
                raise DatasetError(msg)
            return np.array(img.convert(mode) if mode else img)
    except (FileNotFoundError, DatasetError):
        raise
    except Exception as exc:
        msg = f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})"
        raise DatasetError(msg) from exc


# 16-bit gray PNGs open in these modes; PIL's convert("RGB"/"L") clips them at 255 instead of
# scaling (a 16-bit image became white, a 16-bit mask all defective)
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(img, path, what: str):
    """A 16-bit gray image at 8 bits (round(v / 257): 65535 -> 255), so that every rule stated
    on the 8-bit scale (a mask pixel is defective from 128) holds for 16-bit files too."""
    from PIL import Image

    wide = np.asarray(img, dtype=np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        msg = f"{path}: the {what} holds values outside 0..65535; expected an 8-bit or 16-bit PNG"
        raise DatasetError(msg)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 from a PNG (any PIL mode is converted to RGB; 16-bit images are scaled
    to 8 bits)."""
    return read_image(path, "RGB image", "RGB").astype(np.uint8, copy=False)


def read_gt(path: str | os.PathLike) -> np.ndarray:
    """(H, W) bool from a mask PNG: a pixel is defective when its gray value is >= 128 (the
    reference loaders' ``ToTensor() > 0.5``). Colour masks are converted to gray first; 16-bit
    masks are scaled to 8 bits first (defective from 32768)."""
    return read_image(path, "ground-truth mask", "L") >= 128


def read_xyz(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 organized point cloud from a TIFF; float64 files are converted.

    Raises:
        DatasetError: unreadable file, wrong shape or dtype, NaN/inf values, or no valid point.
    """
    import tifffile

    try:
        xyz = tifffile.imread(path)
    except FileNotFoundError:
        raise
    except Exception as exc:
        msg = f"{path}: cannot read the point cloud TIFF ({type(exc).__name__}: {exc})"
        raise DatasetError(msg) from exc
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        msg = f"{path}: an organized point cloud must have shape (H, W, 3); got {xyz.shape}"
        raise DatasetError(msg)
    if xyz.dtype not in (np.float32, np.float64):
        msg = f"{path}: point coordinates must be float32 (or float64); got {xyz.dtype}"
        raise DatasetError(msg)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    if not np.isfinite(xyz).all():
        msg = f"{path}: the point cloud contains NaN or infinite values (missing points must be (0, 0, 0))"
        raise DatasetError(msg)
    if not np.any(np.all(xyz != 0, axis=-1)):
        msg = f"{path}: the point cloud has no valid point (every pixel is missing)"
        raise DatasetError(msg)
    return xyz


def read_sample_files(rgb: str | os.PathLike, xyz: str | os.PathLike, gt: str | os.PathLike | None = None,
                      **fields):
    """One part's files as a :class:`~xmodal.data.Sample`: the RGB image, the organized cloud and,
    when given, the ground-truth mask, with their sizes checked against each other.

    The one reader of the dataset splits and of ``xmodal predict``, so a bad file gives the same
    one-line :class:`DatasetError` naming it wherever it is read. ``fields`` (label, defect,
    category) are passed to the Sample; ``paths`` is filled in.
    """
    from .sample import Sample

    image, cloud = read_rgb(rgb), read_xyz(xyz)
    if image.shape[:2] != cloud.shape[:2]:
        msg = f"{xyz}: point cloud is {cloud.shape[:2]} but the image {rgb} is {image.shape[:2]}"
        raise DatasetError(msg)
    paths = {"rgb": str(rgb), "xyz": str(xyz)}
    mask = None
    if gt is not None:
        mask = read_gt(gt)
        if mask.shape != image.shape[:2]:
            msg = f"{gt}: mask is {mask.shape} but the image {rgb} is {image.shape[:2]}"
            raise DatasetError(msg)
        paths["gt"] = str(gt)
    return Sample(rgb=image, xyz=cloud, gt=mask, paths=paths, **fields)


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, format="PNG")


def write_gt(path: str | os.PathLike, gt: np.ndarray) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(gt, 255, 0).astype(np.uint8)).save(path, format="PNG")


def write_xyz(path: str | os.PathLike, xyz: np.ndarray) -> None:
    import tifffile

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Three contiguous samples per pixel, as the MVTec 3D-AD files store them.
    tifffile.imwrite(path, np.ascontiguousarray(xyz, dtype=np.float32), photometric="rgb")
