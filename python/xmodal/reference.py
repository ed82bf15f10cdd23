"""Plain float64 numpy references of every native op.

They are written for obviousness, not speed: the tests compare the kernels with them, and the
docs point to them as the executable definition of each op's semantics.
"""

from __future__ import annotations

import numpy as np

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


def mlp(x, weights, biases, activation="gelu", negative_slope=0.01, output_activation=None):
    """Sequential(Linear, act, ..., Linear, output_act) in float64 (weights in torch (out, in)
    layout); leaky_relu uses ``negative_slope``."""
    from scipy.special import expit  # the logistic sigmoid, without overflow

    acts = {"gelu": gelu, "relu": lambda v: np.maximum(v, 0.0), "identity": lambda v: v, None: lambda v: v,
            "leaky_relu": lambda v: np.where(v > 0, v, negative_slope * v), "sigmoid": expit}
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ np.asarray(w, dtype=np.float64).T
        if b is not None:
            h = h + np.asarray(b, dtype=np.float64)
        h = acts[activation if i + 1 < len(weights) else output_activation](h)
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
# --- RANSAC plane fit ------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def ransac_sample(seed: int, hypothesis: int, n: int, m: int) -> list[int]:
    """The ``m`` distinct indices of [0, n) that hypothesis ``hypothesis`` draws: splitmix64
    keyed by (seed, hypothesis), multiply-shift to [0, j + 1), Robert Floyd's algorithm."""
    state = _mix64((seed + _GOLDEN * (hypothesis + 1)) & _MASK64)
    chosen: list[int] = []
    for j in range(n - m, n):
        state = (state + _GOLDEN) & _MASK64
        t = (_mix64(state) * (j + 1)) >> 64
        chosen.append(j if t in chosen else t)
    return chosen


def fit_plane(points):
    """Least-squares plane (a, b, c, d) of (M, 3) points: unit normal = eigenvector of the
    smallest eigenvalue of the scatter matrix, d = -n.centroid, signed so that d >= 0. None
    when the points are (nearly) collinear."""
    p = np.asarray(points, dtype=np.float64)
    centroid = p.mean(axis=0)
    q = p - centroid
    values, vectors = np.linalg.eigh(q.T @ q)
    if not values[2] > 0 or values[1] <= 1e-12 * values[2]:
        return None
    normal = vectors[:, 0] / np.linalg.norm(vectors[:, 0])
    d = -float(normal @ centroid)
    if d < 0 or (d == 0 and normal[np.argmax(np.abs(normal))] < 0):
        normal, d = -normal, -d
    return np.array([*normal, d])


def ransac_plane(points, distance_threshold=0.004, num_points=50, iterations=1000, seed=0,
                 probability=0.99999999, block=32):
    """RANSAC with least-squares hypotheses, scored like open3d's segment_plane: most inliers
    (|n.p + d| < threshold), then smallest sum of squared inlier distances per inlier, then the
    lowest hypothesis index; after every ``block`` hypotheses, stop once their number reaches
    log(1 - probability) / log(1 - w ** num_points) (w: best inlier fraction so far). Returns
    (refit plane on the winner's inliers, winner's inliers)."""
    p = np.asarray(points, dtype=np.float64)
    best = None  # (count, error, plane)
    for it in range(iterations):
        if it > 0 and it % block == 0 and best is not None:
            w_m = (best[0] / len(p)) ** num_points
            needed = np.inf if probability >= 1 else (0.0 if w_m >= 1 else np.log1p(-probability) / np.log1p(-w_m))
            if it >= needed:
                break
        plane = fit_plane(p[ransac_sample(seed, it, len(p), num_points)])
        if plane is None:
            continue
        dist = np.abs(p @ plane[:3] + plane[3])
        inside = dist < distance_threshold
        count, error = int(inside.sum()), float((dist[inside] ** 2).sum())
        if count == 0:
            continue
        if best is None or count > best[0] or (count == best[0] and error * best[0] < best[1] * count):
            best = (count, error, plane)
    if best is None:
        raise ValueError("no hypothesis has an inlier")
    inliers = np.abs(p @ best[2][:3] + best[2][3]) < distance_threshold
    refit = fit_plane(p[inliers])
    return (best[2] if refit is None else refit), inliers


# --- DBSCAN ----------------------------------------------------------------------------------


def dbscan(points, eps: float, min_points: int):
    """DBSCAN as sklearn runs it: neighbours are points with squared float64 distance <= eps^2
    (self included), core points have >= min_points neighbours, clusters grow one at a time
    from the lowest-index unlabelled core point, and a border point keeps the first cluster
    that reaches it. O(N^2) memory: for small tests only."""
    p = np.asarray(points, dtype=np.float64)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    neighbours = [np.flatnonzero(row <= eps * eps) for row in d2]
    core = np.array([len(nb) >= min_points for nb in neighbours], dtype=bool)
    labels = np.full(len(p), -1, dtype=np.int64)
    cluster = 0
    for i in range(len(p)):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i] = cluster
        stack = [i]
        while stack:
            j = stack.pop()
            if not core[j]:
                continue
            for k in neighbours[j]:
                if labels[k] == -1:
                    labels[k] = cluster
                    stack.append(k)
        cluster += 1
    return labels
# --- point clouds: distances, farthest point sampling ----------------------------------------


def point_squared_distances(points, center):
    """Squared distances of (N, 3) float32 points to one float32 point, in the arithmetic of the
    point-cloud kernels: float32 differences, float64 squares (exact) and ((x + y) + z) sums."""
    p = np.asarray(points, dtype=np.float32)
    c = np.asarray(center, dtype=np.float32)
    d = (p - c).astype(np.float64)
    return (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]


def farthest_point_sample(points, n: int, start: int = 0):
    """Exact FPS: idx[0] = start, then repeatedly the unselected point with the largest squared
    distance to its nearest selected point, ties to the lowest index."""
    p = np.asarray(points, dtype=np.float32)
    min_distance = np.full(p.shape[0], np.inf)
    selected = np.zeros(p.shape[0], dtype=bool)
    idx = [int(start)]
    selected[start] = True
    for _ in range(1, n):
        min_distance = np.minimum(min_distance, point_squared_distances(p, p[idx[-1]]))
        nxt = int(np.argmax(np.where(selected, -np.inf, min_distance)))  # first maximum
        idx.append(nxt)
        selected[nxt] = True
    return np.asarray(idx, dtype=np.int64)


def pointnet2_farthest_point_sample(points, n: int):
    """Emulates pointnet2_ops' CUDA furthest_point_sample literally, thread by thread: T threads
    (power of two <= 512 from int(log(N) / log(2))), thread t scans k = t, t + T, ..., skips
    points with |p|^2 <= 1e-3, keeps its first strict maximum (best -1, besti 0), then the
    halving tree reduction keeps the lower slot on ties. Running distances start at 1e10 and
    use the distance arithmetic of point_squared_distances; |p|^2 is (x^2 + y^2) + z^2 in
    float64."""
    import math

    p = np.asarray(points, dtype=np.float32)
    num = p.shape[0]
    threads = max(min(1 << int(math.log(num) / math.log(2.0)), 512), 1)
    q = p.astype(np.float64)
    skip = (q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]) + q[:, 2] * q[:, 2] <= 1e-3
    temp = np.full(num, 1e10)
    idx = [0]
    for _ in range(1, n):
        temp = np.where(skip, temp, np.minimum(temp, point_squared_distances(p, p[idx[-1]])))
        dists = np.full(threads, -1.0)
        dists_i = np.zeros(threads, dtype=np.int64)
        for t in range(threads):
            for k in range(t, num, threads):
                if not skip[k] and temp[k] > dists[t]:
                    dists[t], dists_i[t] = temp[k], k
        s = threads // 2
        while s >= 1:
            for t in range(s):
                if dists[t + s] > dists[t]:
                    dists_i[t] = dists_i[t + s]
                dists[t] = max(dists[t], dists[t + s])
            s //= 2
        idx.append(int(dists_i[0]))
    return np.asarray(idx, dtype=np.int64)


# --- point clouds: grouping, 3-NN interpolation, back to the image grid --------------------


def group_points(points, n_groups: int, group_size: int, start: int = 0):
    """Brute-force grouping: FPS centers, then each center's group_size nearest points ordered
    by (float32 Euclidean distance from float64, index) as reference.knn, centred on the center.
    Returns (centers (G, 3) float32, idx (G, S) int64, neighbourhoods (G, S, 3) float32)."""
    p = np.asarray(points, dtype=np.float32)
    centers = p[farthest_point_sample(p, n_groups, start)]
    _, idx = knn(centers, p, group_size)
    return centers, idx, p[idx] - centers[:, None, :]


def three_nn_interpolate(points, centers, center_features):
    """For each point, its k = min(3, G) nearest centers by the point-cloud distance arithmetic
    (ties: lower center index), weights 1 / (d + 1e-8) normalised, the weighted sum of their
    features in float64, rounded to float32."""
    p = np.asarray(points, dtype=np.float32)
    c = np.asarray(centers, dtype=np.float32)
    f = np.asarray(center_features, dtype=np.float64)
    k = min(3, c.shape[0])
    out = np.empty((p.shape[0], f.shape[1]), dtype=np.float32)
    for i in range(p.shape[0]):
        d = point_squared_distances(c, p[i])
        nearest = np.argsort(d, kind="stable")[:k]  # stable: equal distances keep index order
        w = 1.0 / (d[nearest] + 1e-8)
        total = 0.0
        for v in w:
            total += v
        row = np.zeros(f.shape[1])
        for j in range(k):
            row += (w[j] / total) * f[nearest[j]]
        out[i] = row
    return out


def points_to_grid(features, pixel_index, height: int, width: int, out_size):
    """Scatter (N, C) point features to a zero (C, H, W) grid at the flat pixel indices, 3x3
    average pooling with stride 1 and no padding, then adaptive average pooling to out_size,
    all in float64 (torch's AvgPool2d(3, 1) + AdaptiveAvgPool2d). Returns (C, oh, ow) float64."""
    f = np.asarray(features, dtype=np.float64)
    out_h, out_w = (out_size, out_size) if np.isscalar(out_size) else out_size
    grid = np.zeros((f.shape[1], height * width))
    grid[:, np.asarray(pixel_index)] = f.T
    grid = grid.reshape(f.shape[1], height, width)
    ph, pw = height - 2, width - 2
    pooled = sum(grid[:, dy : dy + ph, dx : dx + pw] for dy in range(3) for dx in range(3)) / 9.0
    out = np.empty((f.shape[1], out_h, out_w))
    for i in range(out_h):
        y0, y1 = (i * ph) // out_h, -((-(i + 1) * ph) // out_h)
        for j in range(out_w):
            x0, x1 = (j * pw) // out_w, -((-(j + 1) * pw) // out_w)
            out[:, i, j] = pooled[:, y0:y1, x0:x1].mean(axis=(1, 2))
    return out
# --- evaluation: connected components, PRO curves, AUPRO, AUROC -----------------------------
#
# Two "official" PRO algorithms exist (MVTec AD and MVTec 3D-AD evaluation code). The threshold-sampled
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
    for y0, x0 in zip(*np.nonzero(fg), strict=False):  # raster order
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
    for amap, gt in zip(maps, masks, strict=False):
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
    for amap, gt in zip(maps, masks, strict=False):
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


# --- PatchCore scoring -----------------------------------------------------------------------


def patchcore_score(patches, bank, num_neighbors: int = 9, reweight: str = "paper", eps: float = 0.0,
                    scale: float = 1.0):
    """PatchCore's patch scores and re-weighted image score, in float64.

    Patch score = distance to the nearest bank row (float64, rounded to float32 like
    :func:`knn`; ties to the lower bank index). m_test = first patch with the largest score,
    s* = scale * its score, m* = its nearest bank row, N = the ``num_neighbors`` bank rows
    nearest to m* (by :func:`knn`), d_j = scale * ||m_test - N_j||.

    - "paper" (PatchCore Eq. 7, anomalib): s = (1 - exp(d_0) / sum_j exp(d_j)) * s*, and s*
      when only one neighbour is used.
    - "m3dm": drop N_0 (m* itself), D = sqrt(feature dim):
      s = (1 - exp(s* / D) / (sum_{j >= 1} exp(d_j / D) + eps)) * s*.
    - "none": s*.

    Returns (image score float, patch scores (Q,) float32 unscaled).
    """
    p = np.asarray(patches, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    if p.shape[0] == 0:
        return 0.0, np.zeros(0, dtype=np.float32)
    dist, idx = knn(p, b, 1)
    dist, idx = dist[:, 0], idx[:, 0]
    top = int(np.argmax(dist))
    s_star = float(dist[top]) * scale
    k = min(num_neighbors, b.shape[0])
    if reweight == "none" or (reweight == "paper" and k == 1):
        return s_star, dist
    _, support = knn(b[idx[top]][None], b, k)
    support = support[0]
    d = np.array([np.sqrt(((p[top] - b[j]) ** 2).sum()) for j in support]) * scale
    if reweight == "paper":
        weight = 1.0 - np.exp(d[0] - d.max()) / sum(np.exp(v - d.max()) for v in d)
        return weight * s_star, dist
    if len(support) == 1:
        return s_star, dist
    root = np.sqrt(p.shape[1])
    numerator = np.exp(s_star / root)
    denominator = sum(np.exp(v / root) for v in d[1:]) + eps
    return (1.0 - numerator / denominator) * s_star, dist


# --- point clouds: normals and FPFH (open3d's conventions; csrc/ops/fpfh/fpfh.h) -------------


def fpfh_neighbourhoods(points, max_nn: int, radius: float = np.inf):
    """Each point's min(max_nn, N) nearest points (the point included) in (squared distance of
    :func:`point_squared_distances`, index) order, cut to those with squared distance <
    radius^2. Returns a list of N int64 arrays."""
    p = np.asarray(points, dtype=np.float32)
    order_index = np.arange(p.shape[0])
    rows = []
    for i in range(p.shape[0]):
        d = point_squared_distances(p, p[i])
        nearest = np.lexsort((order_index, d))[: min(max_nn, p.shape[0])]
        rows.append(nearest[d[nearest] < radius * radius])
    return rows


def estimate_normals(points, max_nn: int, radius: float = np.inf, viewpoint=(0.0, 0.0, 0.0)):
    """PCA normals in float64: the eigenvector of the smallest eigenvalue (numpy's eigh) of each
    neighbourhood's covariance about its mean; (0, 0, 1) for fewer than 3 points or a zero
    covariance; flipped when n . (viewpoint - p) < 0 (viewpoint None: not oriented).
    Returns (N, 3) float64."""
    p = np.asarray(points, dtype=np.float32).astype(np.float64)
    normals = np.zeros_like(p)
    for i, rows in enumerate(fpfh_neighbourhoods(points, max_nn, radius)):
        n = np.array([0.0, 0.0, 1.0])
        if len(rows) >= 3:
            centred = p[rows] - p[rows].mean(axis=0)
            cov = centred.T @ centred / len(rows)
            if np.any(cov != 0):
                n = np.linalg.eigh(cov)[1][:, 0]
        if viewpoint is not None and n @ (np.asarray(viewpoint, dtype=np.float64) - p[i]) < 0:
            n = -n
        normals[i] = n
    return normals


def fpfh_pair_features(p1, n1, p2, n2):
    """open3d's ComputePairFeatures for rows of pairs (source candidates p1, n1; targets p2, n2;
    (M, 3) each), float64: returns (theta, alpha, phi), each (M,). The source is the point
    whose normal makes the smaller angle with dp = p2 - p1 (p2, n2 when |n1 . dp| < |n2 . dp|);
    zeros for coincident points and for dp parallel to the source normal."""
    p1, n1, p2, n2 = (np.asarray(a, dtype=np.float32).astype(np.float64) for a in (p1, n1, p2, n2))

    def dot(a, b):
        return (a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]) + a[:, 2] * b[:, 2]

    dp = p2 - p1
    d = np.sqrt(dot(dp, dp))
    with np.errstate(invalid="ignore", divide="ignore"):
        along1, along2 = dot(n1, dp), dot(n2, dp)
        swap = np.abs(along1) < np.abs(along2)
        source = np.where(swap[:, None], n2, n1)
        target = np.where(swap[:, None], n1, n2)
        dp = np.where(swap[:, None], -dp, dp)
        phi = np.where(swap, -along2, along1) / d
        v = np.cross(dp, source)
        v_norm = np.sqrt(dot(v, v))
        v = v / v_norm[:, None]
        w = np.cross(source, v)
        theta = np.arctan2(dot(w, target), dot(source, target))
        alpha = dot(v, target)
    degenerate = (d == 0) | (v_norm == 0)
    return tuple(np.where(degenerate, 0.0, f) for f in (theta, alpha, phi))


def fpfh_bins(theta, alpha, phi):
    """The 33-slot histogram positions of pair features: floor(11 * (f - lo) / (hi - lo)) clamped
    to [0, 10], theta over [-pi, pi] (slots 0..10), alpha (11..21) and phi (22..32) over [-1, 1]."""

    def clamp(scaled):
        return np.clip(np.floor(scaled), 0, 10).astype(np.int64)

    return (clamp(11 * (theta + np.pi) / (2.0 * np.pi)), 11 + clamp(11 * (alpha + 1.0) * 0.5),
            22 + clamp(11 * (phi + 1.0) * 0.5))


def fpfh(points, normals, max_nn: int, radius: float = np.inf):
    """FPFH as open3d's compute_fpfh_feature, in float64 (normals used as given, in float32).

    SPFH(p): each neighbour after the first entry of p's neighbourhood (the point itself) adds
    100 / (count - 1) to one bin per block (:func:`fpfh_pair_features`, :func:`fpfh_bins`).
    FPFH(p) = SPFH(p) + 100 * S / sum(S) per 11-bin block, S = sum of SPFH(q) / d^2(p, q) over
    those neighbours at d^2 > 0 (:func:`point_squared_distances`); zeros without neighbours.
    Returns (N, 33) float64."""
    p = np.asarray(points, dtype=np.float32)
    n = np.asarray(normals, dtype=np.float32)
    neighbourhoods = fpfh_neighbourhoods(p, max_nn, radius)
    spfh = np.zeros((p.shape[0], 33))
    for i, rows in enumerate(neighbourhoods):
        others = rows[1:]
        if len(others) == 0:
            continue
        source = np.repeat(p[i][None], len(others), axis=0)
        source_normal = np.repeat(n[i][None], len(others), axis=0)
        for slots in fpfh_bins(*fpfh_pair_features(source, source_normal, p[others], n[others])):
            np.add.at(spfh[i], slots, 100.0 / len(others))
    out = np.zeros((p.shape[0], 33))
    for i, rows in enumerate(neighbourhoods):
        if len(rows) <= 1:
            continue
        d2 = point_squared_distances(p[rows[1:]], p[i])
        near = rows[1:][d2 > 0]
        weighted = (spfh[near] / d2[d2 > 0][:, None]).sum(axis=0)
        for block in range(3):
            part = weighted[11 * block : 11 * block + 11]
            if part.sum() != 0:
                out[i, 11 * block : 11 * block + 11] = 100.0 * part / part.sum()
        out[i] += spfh[i]
    return out


# --- per-position Gaussians and Mahalanobis distances (PaDiM) -------------------------------


def gaussian_statistics(x, regularization: float = 0.0):
    """Per-position mean and unbiased covariance (ddof = 1, as anomalib's PaDiM) of (N, P, d)
    features, plus ``regularization`` * I. Returns (mean (P, d), covariance (P, d, d)) float64."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    cov = np.stack([np.cov(x[:, p, :], rowvar=False, ddof=1).reshape(x.shape[2], x.shape[2])
                    for p in range(x.shape[1])])
    return mean, cov + regularization * np.eye(x.shape[2])


def mahalanobis(x, mean, covariance):
    """sqrt((x[b,p] - mean[p])^T covariance_p^-1 (x[b,p] - mean[p])) in float64 with a dense
    solve; ``covariance`` is (P, d, d), or (d, d) for one shared by every position. (B, P)."""
    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    out = np.empty(x.shape[:2])
    for b in range(x.shape[0]):
        for p in range(x.shape[1]):
            delta = x[b, p] - mean[p]
            out[b, p] = np.sqrt(delta @ np.linalg.solve(cov if cov.ndim == 2 else cov[p], delta))
    return out


def unpack_lower(packed, dim: int):
    """(F, d*(d+1)/2) row-major packed lower triangles -> (F, d, d) float64 lower matrices."""
    packed = np.asarray(packed, dtype=np.float64)
    rows, cols = np.tril_indices(dim)
    lower = np.zeros((packed.shape[0], dim, dim))
    lower[:, rows, cols] = packed
    return lower


def mahalanobis_from_factors(x, mean, factors):
    """||L_p^-1 (x[b,p] - mean[p])|| in float64 from packed Cholesky factors (F = P or 1), by
    scipy's triangular solve: the distance the kernel computes, without its float32 output."""
    from scipy.linalg import solve_triangular

    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    lower = unpack_lower(factors, x.shape[2])
    out = np.empty(x.shape[:2])
    for b in range(x.shape[0]):
        for p in range(x.shape[1]):
            y = solve_triangular(lower[p if lower.shape[0] > 1 else 0], x[b, p] - mean[p], lower=True)
            out[b, p] = np.sqrt(y @ y)
    return out


# --- BridgeNet's patch embedding (torch: the reference formulation itself) ------------------


def patch_embedding_unfold(maps, pretrain_dim: int = 1536, embed_dim: int = 1536):
    """BridgeNet's / SimpleNet's patch embedding as the reference computes it, step by step:
    unfold 3x3 (padding 1) of every layer, the deeper layers' unfolded maps resized bilinearly
    (align_corners=False) to the first layer's grid, per layer ``adaptive_avg_pool1d`` of the
    (C * 9) vector to ``pretrain_dim``, the layers stacked and pooled to ``embed_dim``.

    Args:
        maps: list of (B, C_l, h_l, w_l) torch tensors (any float dtype; float64 for a reference).

    Returns:
        (B * h_0 * w_0, embed_dim) tensor, rows in raster order per image.
    """
    import torch
    import torch.nn.functional as F

    height, width = maps[0].shape[-2:]
    pooled = []
    for f in maps:
        b, c, h, w = f.shape
        patches = F.unfold(f, kernel_size=3, padding=1).reshape(b, c, 3, 3, h, w)
        if (h, w) != (height, width):
            flat = patches.reshape(-1, 1, h, w)
            flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
            patches = flat.reshape(b, c, 3, 3, height, width)
        rows = patches.permute(0, 4, 5, 1, 2, 3).reshape(b * height * width, 1, c * 9)
        pooled.append(F.adaptive_avg_pool1d(rows, pretrain_dim)[:, 0])
    stacked = torch.stack(pooled, dim=1).reshape(len(pooled[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, embed_dim)[:, 0]


def g2sf_metric(f_img, f_pcd, bank_img, bank_pcd, idx_img, idx_pcd, foreground, layers: dict, sigma, mu,
                joint: bool = False):
    """G2SF's anisotropic metric l_j of every patch and prototype pair, unfused, in float64.

    For patch q and pair j: m = [bank_img[idx_img[q, j]], bank_pcd[idx_pcd[q, j]]], s_m = ||f_m - m_m||,
    d = 5 (f - m) / max(||f - m||, 1e-3) (one norm over both modalities when ``joint``, else per
    modality), w = exp(tanh(head([A(d), B(m)]))) with A, B = Linear -> ReLU -> Linear and head =
    Linear -> ReLU -> Linear (dropout is off at inference), and l_j = sum_m w_m sigma_m s_m / mu_m;
    background patches use w = 1. ``layers`` maps "a1", "a2", "b1", "b2", "h1", "h2" to
    (weight, bias) pairs. Returns (Q, k) float64; the patch score is its row minimum.
    """
    f = np.concatenate([np.asarray(f_img, np.float64), np.asarray(f_pcd, np.float64)], axis=1)
    split = np.asarray(f_img).shape[1]
    bank_img = np.asarray(bank_img, np.float64)
    bank_pcd = np.asarray(bank_pcd, np.float64)
    idx_img, idx_pcd = np.asarray(idx_img), np.asarray(idx_pcd)
    lay = {k: (np.asarray(w, np.float64), np.asarray(b, np.float64)) for k, (w, b) in layers.items()}
    sigma = np.asarray(sigma, np.float64)
    mu = np.asarray(mu, np.float64)

    def linear(name, x):
        w, b = lay[name]
        return x @ w.T + b

    queries, k = idx_img.shape
    out = np.empty((queries, k))
    for q in range(queries):
        for j in range(k):
            fg = bool(foreground[q])
            m_img = bank_img[idx_img[q, j]] if fg or idx_img[q, j] >= 0 else np.zeros(split)
            m_pcd = bank_pcd[idx_pcd[q, j]] if fg or idx_pcd[q, j] >= 0 else np.zeros(f.shape[1] - split)
            m = np.concatenate([m_img, m_pcd])
            diff = f[q] - m
            s = np.array([np.linalg.norm(diff[:split]), np.linalg.norm(diff[split:])])
            w = np.ones(2)
            if fg:
                if joint:
                    d = 5 * diff / max(np.linalg.norm(diff), 1e-3)
                else:
                    d = np.concatenate([5 * diff[:split] / max(s[0], 1e-3), 5 * diff[split:] / max(s[1], 1e-3)])
                a = linear("a2", np.maximum(linear("a1", d), 0))
                b = linear("b2", np.maximum(linear("b1", m), 0))
                z = linear("h2", np.maximum(linear("h1", np.concatenate([a, b])), 0))
                w = np.exp(np.tanh(z))
            out[q, j] = np.sum(w * sigma * s / mu)
    return out
