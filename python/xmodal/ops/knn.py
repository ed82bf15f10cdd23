"""Exact k nearest neighbours against a memory bank."""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _arrays
from ._dispatch import run_kernel


class KnnResult(NamedTuple):
    """``dist`` (Q, k) float32 Euclidean distances, ascending; ``idx`` (Q, k) int64 bank rows."""

    dist: Any
    idx: Any


def knn(queries, bank, k: int) -> KnnResult:
    """Exact k nearest neighbours of every query row among the rows of ``bank``.

    Distances are Euclidean (not squared): sqrt(sum (q - b)^2) evaluated in float64 and
    rounded to float32. Each row is sorted by (distance, bank index), so equal distances list
    the lower bank index first. The CPU path screens candidates with an sgemm (D > 4) or direct
    differences (D <= 4) in float32 and re-ranks, in float64, every row that a proven float32
    error bound cannot exclude: the result is exact, not approximate. Memory is O(Q * k) plus
    fixed-size tiles; the Q x N distance matrix is never formed. For D <= 3 with a float32 bank
    (point grouping) the CPU path searches a KD-tree instead, with the same result.

    Args:
        queries: (Q, D) floating array, numpy or torch (CPU or CUDA).
        bank: (N, D) floating array of the same kind and device; float16 banks are used as
            they are (no float32 copy), anything else is converted to float32.
        k: number of neighbours, 1 <= k <= N.

    Returns:
        KnnResult(dist (Q, k) float32, idx (Q, k) int64), same framework and device as the
        inputs.

    Raises:
        TypeError: non-floating input, or queries and bank of different kinds/devices.
        ValueError: wrong number of dimensions, different D, k out of range, NaN or inf.

    Note:
        Inputs that are not C-contiguous float32 (or float16 for the bank) are copied once.
    """
    q, q_kind = _arrays.as_float32(queries, "queries", ndim=2, shape_doc="(Q, D)")
    b, b_kind = _arrays.as_float_bank(bank, "bank", ndim=2, shape_doc="(N, D)")
    _arrays.check_same_kind(q_kind, b_kind, "queries", "bank")
    _check_dims(q, b)
    k = _arrays.positive_int(k, "k", maximum=b.shape[0], what="N=")
    _arrays.check_finite(q, "queries")
    _arrays.check_finite(b, "bank")
    return knn_prevalidated(q, b, k, q_kind)


def _check_dims(q, b) -> None:
    if q.shape[1] < 1:
        msg = "queries must have at least one column (D >= 1); got shape (Q, 0)"
        raise ValueError(msg)
    if b.shape[1] != q.shape[1]:
        msg = f"bank must have the same number of columns as queries (D={q.shape[1]}); got {b.shape[1]}"
        raise ValueError(msg)


def knn_prevalidated(q, b, k: int, kind: _arrays.ArrayKind) -> KnnResult:
    """knn() without validation, for callers (MemoryBank) that validated the bank once."""
    dist = _arrays.empty(kind, (q.shape[0], k), "float32")
    idx = _arrays.empty(kind, (q.shape[0], k), "int64")
    # the CUDA kernel reports in ``status`` when its candidate margin cannot prove exactness
    status = _arrays.zeros(kind, (1,), "int32") if kind.cuda else None
    run_kernel("knn", kind, q, b, k, dist, idx, cuda_args=(status,))
    if kind.cuda and int(status.item()) != 0:
        msg = (
            "knn (CUDA): bank rows beyond the GPU's candidate margin (k + 32) may round to a query's "
            "k-th distance (many near-ties, or float32-subnormal or infinite distances), so the "
            "result cannot be guaranteed exact; run this query on the CPU"
        )
        raise RuntimeError(msg)
    return KnnResult(dist, idx)
