"""The preprocessing of the reference implementations, on numpy arrays and :class:`Sample`.

* Network inputs: nearest resize of organized clouds (index rule of
  ``torch.nn.functional.interpolate(mode="nearest")``), RGB bicubic resize (PIL) + ImageNet
  normalisation with CFM's optional edge-replicating square pad, masks by nearest + > 0.5.
* MVTec 3D-AD background removal (BTF / M3DM / CFM / G2SF offline step): RANSAC plane on the
  10-pixel border strips, removal of points within 5 mm of it, zero padding to a square whose
  side is a multiple of 100, and DBSCAN largest-cluster cleaning. RANSAC and DBSCAN are the
  native :func:`xmodal.ops.ransac_plane` and :func:`xmodal.ops.dbscan`.
  :class:`BackgroundRemoved` caches the results in a folder the caller names, never in the
  dataset.
* BridgeNet depth images and foreground masks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _arrays
from ..io import atomic_path
from ._files import read_gt, read_rgb, read_xyz, write_gt, write_rgb, write_xyz
from .sample import Sample, foreground_mask

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackgroundRemoval",
    "BackgroundRemoved",
    "border_points",
    "depth_image",
    "largest_cluster",
    "nearest_indices",
    "normalize_rgb",
    "pad_to_multiple",
    "plane_distance",
    "remove_background",
    "resize_gt",
    "resize_organized",
    "resize_rgb",
    "rgb_tensor",
    "square_pad",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _size2(size, name: str = "size") -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else tuple(size)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in pair):
        msg = f"{name} must be a positive int or a pair (height, width) of positive ints; got {size!r}"
        raise ValueError(msg)
    return int(pair[0]), int(pair[1])


def _image(x, name: str, channels: bool):
    arr = np.asarray(x)
    if channels and (arr.ndim != 3 or arr.shape[2] != 3):
        msg = f"{name} must have shape (H, W, 3); got {arr.shape}"
        raise ValueError(msg)
    if not channels and arr.ndim != 2:
        msg = f"{name} must have shape (H, W); got {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        msg = f"{name} must not be empty; got shape {arr.shape}"
        raise ValueError(msg)
    return arr


# --- network inputs ------------------------------------------------------------------------


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """(out_size,) int64 source indices of torch's nearest interpolation along one axis:
    ``src = floor(dst * in_size / out_size)``, in exact integer arithmetic (PyTorch's CPU
    kernel gives these indices for every size pair we compared, including the ones where a
    float32 evaluation of ``dst * (in_size / out_size)`` would round below an integer)."""
    return np.minimum(np.arange(out_size, dtype=np.int64) * in_size // out_size, in_size - 1)


def resize_organized(xyz, size=224):
    """Nearest resize of an organized cloud (or any (H, W) / (H, W, C) map), exactly as
    ``torch.nn.functional.interpolate(x, size, mode="nearest")`` on the channel-first array.

    Every output pixel is a copy of one input pixel, so no point is invented and missing
    points stay (0, 0, 0).

    Args:
        xyz: (H, W, C) or (H, W) numpy array or torch tensor (any dtype, any device).
        size: output side, or (height, width). Default 224.

    Returns:
        (h, w, C) or (h, w) of the same kind, dtype and device.
    """
    out_h, out_w = _size2(size)
    if xyz.ndim not in (2, 3) or xyz.shape[0] == 0 or xyz.shape[1] == 0:
        msg = f"xyz must have shape (H, W, C) or (H, W) with H, W >= 1; got {tuple(xyz.shape)}"
        raise ValueError(msg)
    rows = nearest_indices(int(xyz.shape[0]), out_h)
    cols = nearest_indices(int(xyz.shape[1]), out_w)
    if _arrays.is_torch(xyz):
        torch = _arrays._torch()
        r = torch.from_numpy(rows).to(xyz.device)
        c = torch.from_numpy(cols).to(xyz.device)
        return xyz.index_select(0, r).index_select(1, c)
    return np.asarray(xyz)[rows][:, cols]


def square_pad(image: np.ndarray, mode: str = "edge") -> np.ndarray:
    """Pads an (H, W[, C]) image to a max(H, W) square as CFM's SquarePad does: left/top get
    ``(side - size) // 2``, right/bottom the rest, by edge replication (``mode="edge"``) or
    zeros (``mode="constant"``)."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode=mode)


def resize_rgb(rgb, size=224, square: bool = False) -> np.ndarray:
    """(size, size, 3) uint8: PIL bicubic resize, as torchvision's ``Resize(BICUBIC)`` on a PIL
    image; ``square=True`` first applies CFM's edge-replicating square pad."""
    from PIL import Image

    arr = _image(rgb, "rgb", channels=True)
    if arr.dtype != np.uint8:
        msg = f"rgb must be uint8; got {arr.dtype}"
        raise TypeError(msg)
    if square:
        arr = square_pad(arr)
    out_h, out_w = _size2(size)
    return np.array(Image.fromarray(np.ascontiguousarray(arr)).resize((out_w, out_h), Image.BICUBIC))


def normalize_rgb(rgb) -> np.ndarray:
    """(3, H, W) float32: ``ToTensor()`` (uint8 / 255, channels first) then ImageNet
    ``Normalize``."""
    arr = _image(rgb, "rgb", channels=True)
    if arr.dtype != np.uint8:
        msg = f"rgb must be uint8; got {arr.dtype}"
        raise TypeError(msg)
    x = arr.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def rgb_tensor(rgb, size=224, square: bool = False) -> np.ndarray:
    """(3, size, size) float32 network input: :func:`resize_rgb` then :func:`normalize_rgb`."""
    return normalize_rgb(resize_rgb(rgb, size, square))


def resize_gt(gt, size=224, square: bool = False) -> np.ndarray:
    """(size, size) bool: the reference ``Resize(NEAREST) -> ToTensor() > 0.5`` on a 0/255
    mask (PIL's nearest rule), with CFM's edge-replicating square pad first when asked."""
    from PIL import Image

    arr = _image(gt, "gt", channels=False)
    mask = np.where(arr.astype(bool), 255, 0).astype(np.uint8)
    if square:
        mask = square_pad(mask)
    out_h, out_w = _size2(size)
    return np.array(Image.fromarray(mask).resize((out_w, out_h), Image.NEAREST)) >= 128


# --- background removal (MVTec 3D-AD offline preprocessing) --------------------------------


def border_points(xyz: np.ndarray, border: int = 10) -> np.ndarray:
    """(M, 3) float32 valid points of the top, bottom, left and right ``border``-pixel strips,
    concatenated in that order (the corners appear twice, as in the reference code)."""
    xyz = np.asarray(xyz)
    strips = [xyz[:border], xyz[-border:], xyz[:, :border], xyz[:, -border:]]
    points = np.concatenate([s.reshape(-1, 3) for s in strips])
    return np.ascontiguousarray(points[np.all(points != 0, axis=1)], dtype=np.float32)


def plane_distance(xyz: np.ndarray, plane) -> np.ndarray:
    """(...) float64 |a x + b y + c z + d| of (..., 3) points, for a plane with unit normal."""
    plane = np.asarray(plane, dtype=np.float64)
    return np.abs(np.asarray(xyz, dtype=np.float64) @ plane[:3] + plane[3])


def pad_to_multiple(image: np.ndarray, multiple: int = 100) -> np.ndarray:
    """Zero-pads (H, W[, C]) to a centred square of side max(ceil(H / m), ceil(W / m)) * m;
    the extra pixel of an odd padding goes to the bottom / right."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    side = max(-(-h // multiple), -(-w // multiple)) * multiple
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="constant")


def largest_cluster(xyz: np.ndarray, eps: float = 0.006, min_points: int = 30) -> np.ndarray:
    """(H, W) bool: the valid points of the largest DBSCAN cluster.

    As in the reference code, the noise label -1 competes like a cluster id (when noise
    outnumbers every cluster, the noise points are kept), and equal sizes go to the lowest id.
    """
    valid = foreground_mask(xyz)
    keep = np.zeros(valid.shape, dtype=bool)
    keep[valid] = _largest_cluster_of(np.ascontiguousarray(xyz[valid], dtype=np.float32), eps, min_points)
    return keep


def _largest_cluster_of(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    from ..ops import dbscan

    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    labels = dbscan(points, eps, min_points)
    counts = np.bincount(labels + 1)  # slot 0 = noise (-1), which competes like a cluster
    return labels == int(np.argmax(counts)) - 1


@dataclass(frozen=True)
class BackgroundRemoval:
    """The MVTec 3D-AD background removal of the reference implementations, with its defaults.

    Attributes:
        border: width of the border strips the plane is fitted on (pixels).
        ransac_threshold, ransac_points, ransac_iterations, seed: :func:`xmodal.ops.ransac_plane`.
        plane_distance: points closer than this to the plane are removed (metres).
        pad_multiple: zero padding to a square whose side is a multiple of this (0: no padding).
        cluster_eps, cluster_min_points: DBSCAN of the largest-cluster cleaning (0: skip it).
        mask_rgb: also black out the RGB pixels of removed points (M3DM / G2SF); CFM keeps the
            original RGB (``mask_rgb=False``). Padding applies to RGB and mask either way.
    """

    border: int = 10
    ransac_threshold: float = 0.004
    ransac_points: int = 50
    ransac_iterations: int = 1000
    seed: int = 0
    plane_distance: float = 0.005
    pad_multiple: int = 100
    cluster_eps: float = 0.006
    cluster_min_points: int = 30
    mask_rgb: bool = True

    def key(self) -> str:
        """A short hash of the parameters (names the cache folder)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __call__(self, sample: Sample) -> Sample:
        from ..ops import ransac_plane

        h, w = sample.shape
        if 2 * self.border > min(h, w):
            msg = f"{sample.name}: image {h}x{w} is too small for border strips of {self.border} pixels"
            raise ValueError(msg)
        edges = border_points(sample.xyz, self.border)
        if len(edges) < self.ransac_points:
            msg = (f"{sample.name}: only {len(edges)} valid points in the {self.border}-pixel border strips; "
                   f"the plane fit needs at least ransac_points={self.ransac_points}")
            raise ValueError(msg)
        plane, _ = ransac_plane(edges, self.ransac_threshold, self.ransac_points, self.ransac_iterations, self.seed)
        # Work on the valid points only, in row-major order (the order the reference hands to
        # DBSCAN, which padding does not change), and scatter the survivors at the end.
        flat = sample.xyz.reshape(-1, 3)
        index = np.flatnonzero(foreground_mask(sample.xyz))
        index = index[plane_distance(flat[index], plane) >= self.plane_distance]
        if self.cluster_min_points:
            index = index[_largest_cluster_of(flat[index], self.cluster_eps, self.cluster_min_points)]
        side_h, side_w, top, left = h, w, 0, 0
        if self.pad_multiple:
            side = max(-(-h // self.pad_multiple), -(-w // self.pad_multiple)) * self.pad_multiple
            side_h = side_w = side
            top, left = (side - h) // 2, (side - w) // 2
        target = (index // w + top) * side_w + index % w + left
        xyz = np.zeros((side_h * side_w, 3), dtype=np.float32)
        xyz[target] = flat[index]
        if self.mask_rgb:
            rgb = np.zeros((side_h * side_w, 3), dtype=np.uint8)
            rgb[target] = sample.rgb.reshape(-1, 3)[index]
            rgb = rgb.reshape(side_h, side_w, 3)
        else:
            rgb = pad_to_multiple(sample.rgb, self.pad_multiple) if self.pad_multiple else sample.rgb.copy()
        gt = sample.gt
        if gt is not None and self.pad_multiple:
            gt = pad_to_multiple(gt, self.pad_multiple)
        return sample.replace(rgb=rgb, xyz=xyz.reshape(side_h, side_w, 3), gt=gt)


def remove_background(sample: Sample, **params) -> Sample:
    """:class:`BackgroundRemoval` with the given parameters applied to one sample."""
    return BackgroundRemoval(**params)(sample)


class BackgroundRemoved(Sequence):
    """A dataset whose samples went through :class:`BackgroundRemoval`, cached on disk.

    The cache is ``<cache_dir>/<params key>/<category>/<split>/<defect>/{rgb,xyz,gt}/<stem>``
    (the MVTec 3D-AD layout, so :class:`xmodal.data.MVTec3D` can read it too) plus a
    ``params.json``. A sample is computed on first access (or by :meth:`prepare`) and read
    back afterwards; files are written atomically. The cache is keyed by the parameters and
    the sample's path, not by the source file's content: clear it if the dataset changes.

    Args:
        dataset: an :class:`xmodal.data.MVTec3D` (or :class:`~xmodal.data.Eyecandies`).
        cache_dir: folder for the results; must not lie inside the dataset root.
        params: a :class:`BackgroundRemoval` (default: the reference parameters).
    """

    def __init__(self, dataset, cache_dir: str | os.PathLike, params: BackgroundRemoval | None = None):
        for attribute in ("entries", "root", "category", "split", "load"):
            if not hasattr(dataset, attribute):
                msg = f"dataset must be an xmodal.data.MVTec3D-like reader; got {type(dataset).__name__}"
                raise TypeError(msg)
        self.dataset = dataset
        self.params = params or BackgroundRemoval()
        cache = Path(cache_dir).resolve()
        data_root = Path(dataset.root).resolve()
        if cache == data_root or data_root in cache.parents:
            msg = f"cache_dir {cache} lies inside the dataset root {data_root}; choose a folder outside the dataset"
            raise ValueError(msg)
        self.folder = cache / self.params.key()
        self.folder.mkdir(parents=True, exist_ok=True)
        params_file = self.folder / "params.json"
        if not params_file.exists():
            with atomic_path(params_file) as tmp:
                Path(tmp).write_text(json.dumps(dataclasses.asdict(self.params), indent=2, sort_keys=True))

    def __len__(self) -> int:
        return len(self.dataset.entries)

    def _paths(self, entry) -> dict[str, Path]:
        base = self.folder / self.dataset.category / self.dataset.split / entry.defect
        return {"rgb": base / "rgb" / f"{entry.stem}.png", "xyz": base / "xyz" / f"{entry.stem}.tiff",
                "gt": base / "gt" / f"{entry.stem}.png"}

    def __getitem__(self, index: int) -> Sample:
        entry = self.dataset.entries[index]
        paths = self._paths(entry)
        if all(p.exists() for p in paths.values()):
            return Sample(rgb=read_rgb(paths["rgb"]), xyz=read_xyz(paths["xyz"]), gt=read_gt(paths["gt"]),
                          label=entry.label, defect=entry.defect, category=self.dataset.category,
                          paths={k: str(v) for k, v in paths.items()})
        sample = self.params(self.dataset.load(entry))
        for name, writer, value in (("xyz", write_xyz, sample.xyz), ("rgb", write_rgb, sample.rgb),
                                    ("gt", write_gt, sample.mask())):
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(paths[name]) as tmp:
                writer(tmp, value)
        return sample.replace(gt=sample.mask(), paths={k: str(v) for k, v in paths.items()})

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def prepare(self) -> None:
        """Computes and caches every sample that is not cached yet."""
        for i in range(len(self)):
            if not all(p.exists() for p in self._paths(self.dataset.entries[i]).values()):
                self[i]


# --- BridgeNet depth images ----------------------------------------------------------------


def _shift_reduce(mask: np.ndarray, radius: int, reduce, fill: bool) -> np.ndarray:
    """Square (2r+1)^2 binary dilation (reduce=np.logical_or) or erosion (np.logical_and),
    separably; pixels outside the image never win (OpenCV's default border)."""
    out = mask
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], constant_values=fill)
        n = out.shape[axis]

        def shifted(k, padded=padded, n=n, axis=axis):  # a view, not np.take's gathered copy
            return padded[k:k + n] if axis == 0 else padded[:, k:k + n]

        acc = shifted(0)
        for k in range(1, 2 * radius + 1):
            acc = reduce(acc, shifted(k))
        out = acc
    return out


def _fill_holes(depth: np.ndarray, iterations: int) -> np.ndarray:
    """Each iteration sets every zero pixel to the mean of the positive values of its 3x3
    neighbourhood (zero padding outside), leaving it 0 when there is none."""
    out = depth.astype(np.float64)
    h, w = out.shape
    for _ in range(iterations):
        padded = np.pad(out, 1)
        windows = [padded[i:i + h, j:j + w] for i in range(3) for j in range(3)]
        total = sum(windows)
        count = sum((win > 0).astype(np.float64) for win in windows)
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        out = np.where(out == 0, mean, out)
    return out


def depth_image(xyz, threshold: float = 0.005, fill_iterations: int = 2,
                background: str = "corners") -> tuple[np.ndarray, np.ndarray]:
    """BridgeNet's depth image and foreground mask of an organized cloud.

    The background plane goes through the mean valid points p1, p2, p3 of the top-left,
    top-right and bottom-left 3x3 corners (normal (p3 - p1) x (p2 - p1)); foreground = points
    farther than ``threshold`` from it with z != 0, cleaned by a 3x3 closing of 3 iterations
    and a 5x5 dilation + erosion (pixels without a point are then dropped again). Depth = z on
    the foreground, min-max normalised over the foreground (BridgeNet takes the max over the
    masked image, the same value for positive depths) and 0 elsewhere; then
    ``fill_iterations`` rounds of hole filling (a zero pixel, including the foreground's
    minimum, takes the mean of its positive 3x3 neighbours, so the object also grows by up
    to ``fill_iterations`` pixels into the background, as in BridgeNet).

    Args:
        xyz: (H, W, 3) organized cloud (numpy), (0, 0, 0) = missing.
        threshold: plane distance of the foreground (metres).
        fill_iterations: hole-filling rounds.
        background: "corners" (BridgeNet: the plane through the corner points is background),
            "missing" (the cloud's background was already removed, as in the MVTec 3D-AD
            preprocessing: every valid point is foreground) or "auto" (corners when all three
            corner blocks hold points, else missing).

    Returns:
        (depth (H, W) float32 in [0, 1], foreground (H, W) bool before hole filling).
    """
    xyz = _image(xyz, "xyz", channels=True).astype(np.float64)
    if min(xyz.shape[:2]) < 3:
        msg = f"xyz must be at least 3x3; got {xyz.shape}"
        raise ValueError(msg)

    def corner(block):
        count = np.count_nonzero(block[..., 2])
        return block.reshape(-1, 3).sum(axis=0) / (count + 1e-12)

    _arrays.one_of(background, "background", ("corners", "missing", "auto"))
    z = xyz[..., 2]
    blocks = (xyz[:3, :3], xyz[:3, -3:], xyz[-3:, :3])
    if background == "auto":
        background = "corners" if all(np.count_nonzero(b[..., 2]) for b in blocks) else "missing"
    if background == "missing":
        foreground = np.all(xyz != 0, axis=-1)
    else:
        p1, p2, p3 = (corner(b) for b in blocks)
        normal = np.cross(p3 - p1, p2 - p1)
        norm = np.linalg.norm(normal)
        if not norm > 0:
            msg = "xyz: the three corner points used for the background plane are missing or collinear"
            raise ValueError(msg)
        foreground = (np.abs(xyz @ normal - normal @ p3) / norm > threshold) & (z != 0)
        foreground = _shift_reduce(_shift_reduce(foreground, 3, np.logical_or, False), 3, np.logical_and, True)
        foreground = _shift_reduce(_shift_reduce(foreground, 2, np.logical_or, False), 2, np.logical_and, True)
        foreground &= z != 0
    depth = np.zeros_like(z)
    if foreground.any():
        low, high = z[foreground].min(), z[foreground].max()
        depth[foreground] = (z[foreground] - low) / (high - low) if high > low else 1.0
    return _fill_holes(depth, fill_iterations).astype(np.float32), foreground
