"""Readers for the MVTec 3D-AD layout (and Eyecandies converted to it)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._arrays import one_of
from ._files import DatasetError, read_sample_files
from .sample import Sample

__all__ = ["SPLITS", "Entry", "Eyecandies", "MVTec3D", "categories"]

SPLITS = ("train", "validation", "test")


class Entry(NamedTuple):
    """The files of one sample, known without loading them."""

    defect: str
    stem: str
    rgb: Path
    xyz: Path
    gt: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == "good" else 1


def categories(root: str | os.PathLike) -> list[str]:
    """Sorted names of the category folders under ``root`` (folders with a train, validation or
    test sub-folder).

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"dataset root {root} is not a directory"
        raise FileNotFoundError(msg)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / s).is_dir() for s in SPLITS))


class MVTec3D(Sequence):
    """One category and split of a dataset in the MVTec 3D-AD layout, loaded lazily.

    Layout: ``<root>/<category>/<split>/<defect>/{rgb/*.png, xyz/*.tiff, gt/*.png}``. Defect
    folders are read in sorted order and, inside each, the rgb and xyz files are paired by file
    stem (sorted); every rgb must have an xyz and vice versa. Ground truth: ``gt/<stem>.png``
    when present (required for defect folders other than "good"); good samples without a mask
    get an all-False mask, as the reference loaders give good test samples. Files are only
    read when a sample is indexed; nothing is ever written.

    Args:
        root: dataset root (the folder that holds the category folders).
        category: category folder name, e.g. "bagel".
        split: "train", "validation" or "test".
        defects: optional subset of defect folder names to read (default: all).

    Raises:
        ValueError: an unknown split.
        FileNotFoundError: missing root, category or split folder, or a defect folder without
            rgb/ or xyz/.
        DatasetError (a ValueError): rgb and xyz files that do not pair up, a missing mask.
    """

    dataset_name = "MVTec 3D-AD"

    def __init__(self, root: str | os.PathLike, category: str, split: str = "train", defects=None):
        one_of(split, "split", SPLITS)
        self.root = Path(root)
        self.category = str(category)
        self.split = split
        folder = self.root / self.category / split
        for path, what in ((self.root, "dataset root"), (self.root / self.category, "category folder"),
                           (folder, f"{split} split folder")):
            if not path.is_dir():
                msg = f"{self.dataset_name}: {what} {path} does not exist"
                raise FileNotFoundError(msg)
        available = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if defects is not None:
            missing = sorted(set(defects) - set(available))
            if missing:
                msg = f"{self.dataset_name}: defect folders {missing} not found in {folder} (found {available})"
                raise FileNotFoundError(msg)
            available = [d for d in available if d in set(defects)]
        self.entries: list[Entry] = [e for d in available for e in _index_defect(folder / d, d)]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            msg = f"index must be an int; got {type(index).__name__}"
            raise TypeError(msg)
        n = len(self.entries)
        if not -n <= index < n:
            msg = f"index {index} out of range for {n} samples"
            raise IndexError(msg)
        return self.load(self.entries[int(index)])

    def __iter__(self) -> Iterator[Sample]:
        for entry in self.entries:
            yield self.load(entry)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, category={self.category!r}, "
            f"split={self.split!r}, n={len(self)})"
        )

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels (0 good, 1 anomalous) without loading any file."""
        return np.array([e.label for e in self.entries], dtype=np.int64)

    @property
    def defects(self) -> list[str]:
        """Defect folder names present in this split, sorted."""
        return sorted({e.defect for e in self.entries})

    def load(self, entry: Entry) -> Sample:
        """Reads the files of one entry into a :class:`Sample` (a good part without a mask file
        gets an all-False mask)."""
        sample = read_sample_files(entry.rgb, entry.xyz, entry.gt, label=entry.label, defect=entry.defect,
                                   category=self.category)
        return sample if sample.gt is not None else sample.replace(gt=np.zeros(sample.shape, dtype=bool))


class Eyecandies(MVTec3D):
    """Eyecandies after :func:`xmodal.data.convert_eyecandies`: the MVTec 3D-AD layout with
    defect folders "good" and "bad" (``train/good``, ``test/{good,bad}``, and
    ``validation/{good,bad}`` when the raw ``val`` split was converted). Same arguments and
    behaviour as :class:`MVTec3D`."""

    dataset_name = "Eyecandies (converted)"


def _files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix}


def _index_defect(folder: Path, defect: str) -> list[Entry]:
    for sub in ("rgb", "xyz"):
        if not (folder / sub).is_dir():
            msg = f"{folder}: missing the {sub}/ folder (expected {sub}/ with one file per sample)"
            raise FileNotFoundError(msg)
    rgb = _files_by_stem(folder / "rgb", ".png")
    xyz = {**_files_by_stem(folder / "xyz", ".tif"), **_files_by_stem(folder / "xyz", ".tiff")}
    if rgb.keys() != xyz.keys():
        only_rgb = sorted(rgb.keys() - xyz.keys())[:5]
        only_xyz = sorted(xyz.keys() - rgb.keys())[:5]
        msg = (f"{folder}: {len(rgb)} rgb/*.png and {len(xyz)} xyz/*.tiff files do not pair up by name "
               f"(only in rgb: {only_rgb}; only in xyz: {only_xyz})")
        raise DatasetError(msg)
    gt = _files_by_stem(folder / "gt", ".png") if (folder / "gt").is_dir() else {}
    entries = []
    for stem in sorted(rgb):
        mask = gt.get(stem)
        if mask is None and defect != "good":
            msg = f"{folder / 'gt' / (stem + '.png')}: missing ground-truth mask of anomalous sample {rgb[stem]}"
            raise DatasetError(msg)
        entries.append(Entry(defect, stem, rgb[stem], xyz[stem], mask))
    return entries
