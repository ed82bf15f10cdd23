"""Data layer: MVTec 3D-AD / Eyecandies readers, the papers' preprocessing, synthetic data.

Everything here produces or consumes :class:`Sample` (an RGB image and its organized point
cloud, (0, 0, 0) = missing point). Readers are lazy and never write into a dataset folder;
preprocessing results are cached only in a folder the caller names.
"""

from . import preprocess, synthesis, synthetic
from ._files import DatasetError
from .datasets import SPLITS, Entry, Eyecandies, MVTec3D, categories
from .eyecandies import convert_eyecandies
from .sample import Sample, foreground_mask

__all__ = [
    "SPLITS",
    "DatasetError",
    "Entry",
    "Eyecandies",
    "MVTec3D",
    "Sample",
    "categories",
    "convert_eyecandies",
    "foreground_mask",
    "preprocess",
    "synthesis",
    "synthetic",
]
