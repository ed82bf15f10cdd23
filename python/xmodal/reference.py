"""Plain float64 numpy references of every native op.

They are written for obviousness, not speed: the tests compare the kernels with them, and the
docs point to them as the executable definition of each op's semantics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn", "greedy_coreset"]


# --- k nearest neighbours -------------------------------------------------------------------


def knn(queries, bank, k: int):
    """Exact kNN: distances sqrt(sum (q - b)^2) in float64, rounded to float32; each row sorted
    by (float32 distance, bank index). Returns (dist (Q, k) float32, idx (Q, k) int64)."""
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    num_queries, num_bank = q.shape[0], b.shape[0]
    dist = np.empty((num_queries, k), dtype=np.float32)
    idx = np.empty((num_queries, k), dtype=np.int64)
    order_index = np.arange(num_bank)
    for i in range(num_queries):
        d = np.sqrt(((b - q[i]) ** 2).sum(axis=1)).astype(np.float32)
        order = np.lexsort((order_index, d))[:k]
        dist[i], idx[i] = d[order], order
    return dist, idx


# --- greedy k-center coreset ---------------------------------------------------------------


def greedy_coreset(x, n: int, start: int = 0):
    """Farthest-first selection: idx[0] = start, then repeatedly the unselected row with the
    largest squared distance (float64) to its nearest selected row, ties to the lowest index."""
    x = np.asarray(x, dtype=np.float64)
    min_distance = np.full(x.shape[0], np.inf)
    selected = np.zeros(x.shape[0], dtype=bool)
    idx = [int(start)]
    selected[start] = True
    for _ in range(1, n):
        d = ((x - x[idx[-1]]) ** 2).sum(axis=1)
        min_distance = np.minimum(min_distance, d)
        candidates = np.where(selected, -np.inf, min_distance)
        nxt = int(np.argmax(candidates))  # first maximum = lowest index
        idx.append(nxt)
        selected[nxt] = True
    return np.asarray(idx, dtype=np.int64)
