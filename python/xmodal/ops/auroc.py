"""Area under the ROC curve, identical to sklearn.metrics.roc_auc_score."""

from __future__ import annotations

import numpy as np

from .. import _arrays
from .. import _map_sets as _maps
from ._dispatch import run_kernel


def _binary_labels(labels: list, name: str, many: bool) -> list:
    """Checks that labels hold only 0 and 1 (or are boolean) and returns uint8 arrays."""
    out = []
    for i, y in enumerate(labels):
        label_name = f"{name}[{i}]" if many else name
        if _arrays.is_torch(y):
            import torch

            if y.dtype in (torch.bool,):
                out.append(y.contiguous().view(torch.uint8))
                continue
            if y.is_complex():
                msg = f"{label_name} must be boolean or hold 0 and 1; got dtype {y.dtype}"
                raise TypeError(msg)
            valid = bool(((y == 0) | (y == 1)).all()) if y.numel() else True
            converted = (y != 0).contiguous().view(torch.uint8)
        else:
            y = np.asarray(y)
            if y.dtype == np.bool_:
                out.append(np.ascontiguousarray(y).view(np.uint8))
                continue
            if y.dtype.kind not in "fiu":
                msg = f"{label_name} must be boolean or hold 0 and 1; got dtype {y.dtype}"
                raise TypeError(msg)
            if y.dtype == np.uint8:
                valid = y.size == 0 or int(y.max()) <= 1
                converted = np.ascontiguousarray(y)
            else:
                valid = bool(((y == 0) | (y == 1)).all())
                converted = (y != 0).view(np.uint8)
        if not valid:
            msg = f"{label_name} must be boolean or hold only 0 and 1 (1 = positive); got other values"
            raise ValueError(msg)
        out.append(converted)
    return out


def auroc(scores, labels) -> float:
    """Area under the ROC curve, exactly as ``sklearn.metrics.roc_auc_score``.

    Ties between a positive and a negative count 1/2 (the Mann-Whitney statistic). The count
    is exact (128-bit integers), so the result equals sklearn's up to float64 rounding. Made for
    image scores and for all pixels of a test set (tens of millions): two radix sorts, about
    8 bytes per element for float32 scores, no float64 copy.

    Args:
        scores: array of any shape, or a list of arrays (e.g. the maps of a test set at
            different sizes); numpy or torch (CPU or CUDA). float32/float64 are used as they
            are, other dtypes converted (integers to float64). Must be finite.
        labels: the same structure and shapes; boolean or 0/1 values (1 = positive).

    Returns:
        AUROC as a Python float.

    Raises:
        TypeError: non-numeric input, or host and CUDA arrays mixed.
        ValueError: shape mismatch, labels other than 0/1, NaN/inf in scores, only one class.
    """
    many = _maps.is_array_list(labels)
    label_list = _binary_labels([_maps.host_or_cuda(y, "labels") for y in _maps.as_list(labels, "labels")],
                                "labels", many)
    return auroc_nonzero(scores, label_list if many else label_list[0])


def auroc_nonzero(scores, labels) -> float:
    """:func:`auroc` of pixel scores against masks: any nonzero label is positive.

    The pixel-level AUROC of a test set (P-AUROC) takes ground-truth masks as labels; they may
    hold 255 or class ids, so instead of :func:`auroc`'s 0/1 check every nonzero value counts
    as anomalous (bool, uint8 and int8 masks are used without a copy).

    Args:
        scores: as in :func:`auroc`.
        labels: the same structure and shapes; nonzero = positive.

    Returns:
        AUROC as a Python float, identical to ``roc_auc_score(labels != 0, scores)``.
    """
    arrays = _maps.collect(scores, labels, "scores", "labels", None, "")
    scores_flat = [s.reshape(-1) for s in arrays.scores]
    labels_flat = [y.reshape(-1) for y in arrays.masks]
    return float(run_kernel("auroc", arrays.kind, scores_flat, labels_flat))
