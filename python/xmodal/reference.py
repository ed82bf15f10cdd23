"""Plain float64 numpy references of every native op.

They are written for obviousness, not speed: the tests compare the kernels with them, and the
docs point to them as the executable definition of each op's semantics.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "knn",
    "greedy_coreset",
    "connected_components",
    "trapezoid",
    "pro_curve_sampled",
    "pro_curve_exact",
    "aupro",
    "auroc",
]


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


# --- evaluation: connected components, PRO curves, AUPRO, AUROC -----------------------------
#
# Two "official" PRO algorithms exist (shared/reference/kernels.md §1). The threshold-sampled
# one of the MVTec 3D-AD code (copied by BTF, M3DM with 100 thresholds and CFM with 99) and the
# exact curve of the MVTec AD code. Both are written out below in the structure of the
# originals, so they double as the "numpy official algorithms" peer of the benchmark.

_NEIGHBOURS_8 = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def connected_components(mask):
    """8-connected components of a (H, W) mask (nonzero = foreground) by flood fill.

    Returns (labels (H, W) int32, count): 0 = background, components numbered 1..count in
    raster order of their first pixel (the order xmodal.ops.connected_components uses).
    """
    fg = np.asarray(mask) != 0
    height, width = fg.shape
    labels = np.zeros((height, width), dtype=np.int32)
    count = 0
    for y0, x0 in zip(*np.nonzero(fg)):  # raster order
        if labels[y0, x0]:
            continue
        count += 1
        labels[y0, x0] = count
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for dy, dx in _NEIGHBOURS_8:
                v, u = y + dy, x + dx
                if 0 <= v < height and 0 <= u < width and fg[v, u] and not labels[v, u]:
                    labels[v, u] = count
                    stack.append((v, u))
    return labels, count


def _label_8(mask):
    # The official code labels with scipy.ndimage.label and a 3x3 ones structure; use it when
    # available (much faster than the flood fill), the result's membership is the same.
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - scipy is a test dependency
        return connected_components(mask)
    labels, count = ndimage.label(np.asarray(mask) != 0, structure=np.ones((3, 3), dtype=int))
    return labels, int(count)


def trapezoid(x, y, x_max=None):
    """Area under the piecewise linear curve (x, y) up to ``x_max``, MVTec's rule.

    x must be non-decreasing (duplicates allowed; their y order matters). Non-finite points are
    dropped. When x_max is not one of the x values, y is interpolated linearly at x_max
    between the last point at or below it and the first point above it (bisect_right), and
    that partial trapezoid is added.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = int(np.searchsorted(x, x_max, side="right"))
            if not 0 < ins < len(x):
                msg = f"x_max={x_max} lies outside the curve's x range [{x[0]}, {x[-1]}]"
                raise ValueError(msg)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


class _Region:
    """The sorted scores of one ground-truth region and a threshold pointer that only moves
    forward (thresholds are visited in ascending order)."""

    def __init__(self, scores):
        self.scores = np.sort(scores)
        self.index = 0

    def overlap(self, threshold):
        # Fraction of the region's pixels whose score is strictly above the threshold.
        n = len(self.scores)
        while self.index < n and self.scores[self.index] <= threshold:
            self.index += 1
        return 1.0 - self.index / n


def _as_map_list(maps, masks):
    maps = [np.asarray(m) for m in maps]
    masks = [np.asarray(g) for g in masks]
    if len(maps) != len(masks):
        msg = f"maps and masks must hold the same number of images; got {len(maps)} and {len(masks)}"
        raise ValueError(msg)
    return maps, masks


def _collect_regions(maps, masks):
    """OK-pixel scores of all images (float64, sorted ascending) and every region's scores."""
    total = sum(m.size for m in maps)
    ok_scores = np.zeros(total, dtype=np.float64)
    filled = 0
    regions = []
    for amap, gt in zip(maps, masks):
        labels, count = _label_8(gt)
        ok = amap[labels == 0]
        ok_scores[filled : filled + ok.size] = ok
        filled += ok.size
        for k in range(1, count + 1):
            regions.append(_Region(amap[labels == k]))
    ok_scores = ok_scores[:filled]
    ok_scores.sort()
    return ok_scores, regions


def pro_curve_sampled(maps, masks, num_thresholds):
    """PRO curve at ``num_thresholds`` OK-pixel order statistics (MVTec 3D-AD code).

    Thresholds are the sorted OK scores at ranks linspace(0, n_ok - 1, T).astype(int); at rank
    pos the FPR is 1 - (pos + 1) / n_ok (from the rank, even when scores tie), and a region
    pixel counts as detected when its score is strictly greater than the threshold. PRO is the
    mean overlap over all regions of all images. The synthetic point (1, 1) closes the curve.

    Args:
        maps, masks: sequences of (H, W) arrays (masks: nonzero = anomalous).
        num_thresholds: T > 1.

    Returns:
        (fpr, pro) float64 arrays of T + 1 points, FPR ascending.
    """
    maps, masks = _as_map_list(maps, masks)
    ok_scores, regions = _collect_regions(maps, masks)
    n_ok = len(ok_scores)
    positions = np.linspace(0, n_ok - 1, num=num_thresholds, dtype=int)
    fprs, pros = [1.0], [1.0]
    for pos in positions:
        threshold = ok_scores[pos]
        pro = 0.0
        for region in regions:
            pro += region.overlap(threshold)
        fprs.append(1.0 - (pos + 1) / n_ok)
        pros.append(pro / len(regions))
    return np.asarray(fprs[::-1], dtype=np.float64), np.asarray(pros[::-1], dtype=np.float64)


def pro_curve_exact(maps, masks):
    """The full PRO curve (MVTec AD code): one point per distinct score.

    Every OK pixel adds 1 to the false-positive count, every pixel of region r adds 1/|r| to
    the summed overlap. Pixels are sorted by descending score and accumulated; ties keep the
    last point of their group (a threshold t selects score >= t). FPR is the count rounded to
    float32 divided by n_ok and stored as float32 (as the original computes it); PRO is
    float64 divided by the number of regions. Both are clipped to 1 and the curve runs from
    (0, 0) to (1, 1).

    Returns:
        (fpr, pro) float64 arrays, FPR non-decreasing.
    """
    maps, masks = _as_map_list(maps, masks)
    scores, fp_changes, pro_changes = [], [], []
    num_ok, num_regions = 0, 0
    for amap, gt in zip(maps, masks):
        labels, count = _label_8(gt)
        num_regions += count
        ok = labels == 0
        num_ok += int(ok.sum())
        sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
        change = np.where(ok, 0.0, 1.0 / np.maximum(sizes[labels], 1.0))
        scores.append(amap.ravel())
        fp_changes.append(ok.ravel().astype(np.int64))
        pro_changes.append(change.ravel())
    scores = np.concatenate(scores)
    order = np.argsort(scores)[::-1]
    scores_sorted = scores[order]
    fp_cum = np.cumsum(np.concatenate(fp_changes)[order])
    pro_cum = np.cumsum(np.concatenate(pro_changes)[order])
    fprs = (fp_cum.astype(np.float32).astype(np.float64) / num_ok).astype(np.float32)
    pros = pro_cum / num_regions
    keep = np.append(np.diff(scores_sorted) != 0, True)
    fprs = np.minimum(fprs[keep].astype(np.float64), 1.0)
    pros = np.minimum(pros[keep], 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def aupro(maps, masks, limits=(0.3, 0.1, 0.05, 0.01), num_thresholds=None):
    """Normalised area under the PRO curve up to each FPR limit: trapezoid(fpr, pro, limit) /
    limit; the exact curve when num_thresholds is None, else the sampled one. Returns
    {limit: value}."""
    if num_thresholds is None:
        fpr, pro = pro_curve_exact(maps, masks)
    else:
        fpr, pro = pro_curve_sampled(maps, masks, num_thresholds)
    return {limit: trapezoid(fpr, pro, x_max=limit) / limit for limit in limits}


def auroc(scores, labels):
    """Area under the ROC curve as the Mann-Whitney statistic with average ranks (ties count
    1/2), in float64: (sum of positive ranks - P (P + 1) / 2) / (P N)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() != 0
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    start = 0
    while start < len(s):
        stop = start + 1
        while stop < len(s) and sorted_scores[stop] == sorted_scores[start]:
            stop += 1
        ranks[order[start:stop]] = 0.5 * (start + 1 + stop)  # mean of ranks start+1..stop
        start = stop
    positives = int(y.sum())
    negatives = len(s) - positives
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))
