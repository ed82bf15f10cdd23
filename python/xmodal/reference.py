"""Plain float64 numpy references of every native op.

They are written for obviousness, not speed: the tests compare the kernels with them, and the
docs point to them as the executable definition of each op's semantics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn", "greedy_coreset", "gelu", "mlp", "normalized_distance", "crossmodal_discrepancy"]


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


# --- MLP and CFM's crossmodal discrepancy --------------------------------------------------


def gelu(x):
    """Exact (erf) GELU in float64."""
    from scipy.special import erf

    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def mlp(x, weights, biases, activation="gelu"):
    """Sequential(Linear, act, ..., Linear) in float64 (weights in torch (out, in) layout)."""
    act = {"gelu": gelu, "relu": lambda v: np.maximum(v, 0.0), "identity": lambda v: v, None: lambda v: v}[activation]
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ np.asarray(w, dtype=np.float64).T
        if b is not None:
            h = h + np.asarray(b, dtype=np.float64)
        if i + 1 < len(weights):
            h = act(h)
    return h


def normalized_distance(p, t):
    """|| p/max(|p|, 1e-12) - t/max(|t|, 1e-12) || per row (torch.nn.functional.normalize)."""
    p = np.asarray(p, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return np.linalg.norm(pn - tn, axis=1)


def crossmodal_discrepancy(f2d, f3d, mlp_2d3d, mlp_3d2d, mask=None, activation="gelu"):
    """(d_2d, d_3d) as CFM computes them; mlp_* are (weights, biases) pairs. Background rows 0."""
    d_3d = normalized_distance(mlp(f2d, *mlp_2d3d, activation), f3d)
    d_2d = normalized_distance(mlp(f3d, *mlp_3d2d, activation), f2d)
    if mask is not None:
        keep = np.asarray(mask).reshape(-1) != 0
        d_2d, d_3d = np.where(keep, d_2d, 0.0), np.where(keep, d_3d, 0.0)
    return d_2d, d_3d
