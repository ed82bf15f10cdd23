"""The entry points the fuzz harness (``tests/_fuzz.py``) exercises, with their float64 references.

Groups: "ops" (xmodal.ops / knn / greedy_coreset), "gaussian" (GaussianStats, mahalanobis,
cholesky_factors, MLP folding), "bank_metrics" (MemoryBank, metrics), "predict" (Detector.predict).
"""

from __future__ import annotations

import numpy as np

import xmodal
from xmodal import reference as ref
from xmodal.ops import (
    aupro,
    auroc,
    auroc_nonzero,
    connected_components,
    coreset,
    crossmodal_discrepancy,
    dbscan,
    estimate_normals,
    farthest_point_sample,
    greedy_coreset,
    group_points,
    knn,
    mlp,
    points_to_grid,
    pro_curve,
    ransac_plane,
    three_nn_interpolate,
)

from ._fuzz import Gen, Spec

BAD_COUNTS = [0, -1, 1.5, True, "3", None, 10**12]


def close(got, expected, rtol: float = 2e-4, what: str = "values") -> None:
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    err = float(np.abs(got - expected).max()) if got.size else 0.0
    assert err <= rtol * max(scale, 1e-30) + 1e-30 or np.array_equal(got, expected), \
        f"{what}: max error {err:.3g} at scale {scale:.3g}"


def equal(got, expected, what: str = "indices") -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert np.array_equal(got, expected), f"{what}: {got.ravel()[:8]} != {expected.ravel()[:8]}"


# --- ops ----------------------------------------------------------------------------------------


def _knn_compare(got, expected, kw):
    dist, idx = got
    close(dist, expected[0], 1e-6, "dist")
    # tie-aware: every returned row must sit at the reference's distance of its rank
    q, b = kw["queries"], kw["bank"]
    d = np.sqrt(((b[np.asarray(idx)] - q[:, None, :]) ** 2).sum(-1)).astype(np.float32)
    close(d, expected[0], 1e-6, "distance of the returned rows")
    assert all(len(set(r)) == len(r) for r in np.asarray(idx).tolist()), "repeated index"


def _knn_valid(g: Gen):
    n, d = g.int(1, 64, 12), g.choice((1, 2, 3, 4, 5, 7, 64, 768, 2048), 5)
    return {"queries": g.normal(g.int(0, 16, 4), d), "bank": g.normal(n, d), "k": g.int(1, n, min(3, n))}


def _coreset_valid(g: Gen):
    n = g.int(1, 64, 20)
    return {"x": g.normal(n, g.choice((1, 3, 5, 64, 2048), 5)), "n": g.int(1, n, min(5, n)), "start": 0}


def _coreset_compare(got, expected, kw):
    # equal up to ties: the distance of each pick to the earlier picks must equal the reference's
    x = kw.get("x", kw.get("features"))
    got = np.asarray(got)
    assert len(set(got.tolist())) == len(got), "repeated index"

    def gaps(idx):
        return [((x[idx[:i]] - x[idx[i]]) ** 2).sum(-1).min() for i in range(1, len(idx))]

    close(gaps(got), gaps(expected), 1e-9, "selection distances")


def _fps_valid(g: Gen):
    n = g.int(1, 200, 30)
    return {"points": g.normal(n, 3), "n": g.int(1, n, min(8, n)), "start": g.int(0, n - 1, 0)}


def _interp_valid(g: Gen):
    groups = g.int(1, 40, 8)
    return {"points": g.normal(g.int(0, 100, 30), 3), "centers": g.normal(groups, 3),
            "center_features": g.normal(groups, g.int(1, 64, 4))}


def _group_compare(got, expected, kw):
    centers, idx, hoods = got[0], got[1], got[2]
    close(centers, expected[0], 0, "centers")
    equal(idx, expected[1], "group indices")
    close(hoods, expected[2], 1e-6, "neighbourhoods")


def _auroc_valid(g: Gen):
    n = g.int(2, 300, 40)
    labels = np.arange(n) % 2 == 0
    return {"scores": g.normal(n), "labels": labels.astype(np.uint8)}


def _masks(g: Gen, n: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        y, x = g.rng.integers(0, h - 2), g.rng.integers(0, w - 2)
        masks[i, y : y + 3, x : x + 3] = 1
    masks[-1] = 0  # one image without defect: normal pixels exist
    return masks


def _pro_valid(g: Gen):
    n, h, w = g.int(2, 4, 2), g.int(4, 24, 8), g.int(4, 24, 9)
    return {"maps": g.normal(n, h, w), "masks": _masks(g, n, h, w)}


def _pro_compare(got, expected, kw):
    close(got[0], expected[0], 1e-6, "fpr")
    close(got[1], expected[1], 1e-9, "pro")


def _aupro_compare(got, expected, kw):
    close(list(got.values()), list(expected.values()), 1e-9, "aupro")


def _ccl_compare(got, expected, kw):
    labels, num = got
    equal(labels, expected[0], "labels")
    equal(num, expected[1], "count")


def _ccl_reference(masks):
    if len(masks) == 0:
        return np.zeros(masks.shape, np.int32), np.zeros(0, np.int64)
    out = [ref.connected_components(m) for m in masks]
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out])


def _ransac_valid(g: Gen):
    n = g.int(7, 300, 120)
    xy = g.rng.uniform(-1, 1, (n, 2))
    z = 0.3 * xy[:, 0] - 0.2 * xy[:, 1] + 1 + g.rng.normal(0, 0.001, n)
    z[: n // 5] += g.rng.uniform(0.05, 0.3, n // 5)  # outliers above the plane
    pts = np.column_stack([xy, z]).astype(np.float32)
    return {"points": pts, "distance_threshold": 0.004, "num_points": g.int(3, min(n, 50), min(n, 20)),
            "iterations": g.int(1, 200, 100)}


def _ransac_compare(got, expected, kw):
    plane, inliers = np.asarray(got[0]), np.asarray(got[1])
    if not np.array_equal(inliers, expected[1]):
        _ransac_tie(inliers, kw)
        expected = (ref.fit_plane(kw["points"][inliers]), inliers)
    if abs(expected[0][3]) < 1e-6 and plane @ expected[0] < 0:
        plane = -plane  # a plane through the origin: "d >= 0" leaves the normal's sign open
    close(plane, expected[0], 1e-5, "plane")


def _ransac_tie(inliers, kw) -> None:
    """Other inliers than the reference's pass only as a tie: they must be those of a hypothesis
    with the winning inlier count and an inlier error equal to the best within float32 rounding.
    (Found by this fuzz: samples that fit their points exactly -- 3 points, or integer
    coordinates -- all have an error of rounding noise, and float32 and float64 order that noise
    differently.)"""
    p, thr, m = kw["points"], kw["distance_threshold"], kw["num_points"]
    hypotheses = []
    for it in range(kw["iterations"]):
        plane = ref.fit_plane(p[ref.ransac_sample(kw.get("seed", 0), it, len(p), m)])
        if plane is not None:
            dist = np.abs(p @ plane[:3] + plane[3])
            inside = dist < thr
            hypotheses.append((int(inside.sum()), float((dist[inside] ** 2).sum()), inside))
    count = max(h[0] for h in hypotheses)
    assert int(inliers.sum()) == count, f"{int(inliers.sum())} inliers, the best hypothesis has {count}"
    best = min(h[1] for h in hypotheses if h[0] == count)
    noise = count * (4e-7 * float(np.abs(p).max())) ** 2
    assert any(h[0] == count and h[1] <= best + noise + 1e-6 * best and np.array_equal(h[2], inliers)
               for h in hypotheses), "inliers of no hypothesis tied with the best"


def _dbscan_valid(g: Gen):
    n = g.int(0, 200, 60)
    centers = g.rng.normal(0, 1, (3, 3))
    pts = centers[g.rng.integers(0, 3, n)] + g.rng.normal(0, 0.05, (n, 3))
    return {"points": pts.astype(np.float32), "eps": 0.1, "min_points": g.int(1, 10, 4)}


def _grid_valid(g: Gen):
    h, w = g.int(3, 20, 8), g.int(3, 20, 9)
    n = g.int(0, h * w, 20)
    return {"features": g.normal(n, g.int(1, 16, 3)), "pixel_index": g.rng.permutation(h * w)[:n].astype(np.int64),
            "height": h, "width": w, "out_size": g.int(1, 6, 4)}


def _mlp_valid(g: Gen):
    d_in, hidden, d_out = g.int(1, 64, 6), g.int(1, 64, 5), g.int(1, 64, 4)
    return {"x": g.normal(g.int(0, 50, 10), d_in),
            "weights": [g.normal(hidden, d_in, scale=0.3), g.normal(d_out, hidden, scale=0.3)],
            "biases": [g.normal(hidden), g.normal(d_out)]}


def _crossmodal_valid(g: Gen):
    n, d2, d3 = g.int(0, 50, 12), g.int(1, 32, 6), g.int(1, 32, 5)
    return {"f2d": g.normal(n, d2), "f3d": g.normal(n, d3),
            "mlp_2d3d": ([g.normal(d3, d2, scale=0.3)], [g.normal(d3)]),
            "mlp_3d2d": ([g.normal(d2, d3, scale=0.3)], [g.normal(d2)]),
            "mask": np.arange(n) % 3 != 0}


def _crossmodal_reference(f2d, f3d, mlp_2d3d, mlp_3d2d, mask):
    return ref.crossmodal_discrepancy(f2d, f3d, mlp_2d3d, mlp_3d2d, mask=None if mask is None else mask != 0)


def _pair_close(got, expected, kw):
    close(got[0], expected[0], 1e-4, "first output")
    close(got[1], expected[1], 1e-4, "second output")


def _ops_specs() -> list[Spec]:
    return [
        Spec("knn", knn, _knn_valid, ref.knn, _knn_compare, {"queries": "queries", "bank": "bank"},
             {"k": BAD_COUNTS}, names=("N=",), exact_any_finite=True),
        Spec("greedy_coreset", greedy_coreset, _coreset_valid, ref.greedy_coreset, _coreset_compare, {"x": "x"},
             {"n": BAD_COUNTS, "start": [-1, 10**6, 0.5, "0"]}, exact_any_finite=True),
        Spec("coreset", lambda x, n, start: coreset(x, n=n, projection=None, start=start), _coreset_valid,
             ref.greedy_coreset, _coreset_compare, {"x": "features"}, {"n": BAD_COUNTS, "start": ["first", -1]},
             names=("ratio",), exact_any_finite=True),
        Spec("farthest_point_sample", farthest_point_sample, _fps_valid, ref.farthest_point_sample,
             lambda got, exp, kw: equal(got, exp), {"points": "points"}, {"n": BAD_COUNTS, "start": [-1, 10**6]},
             exact_any_finite=True),
        Spec("three_nn_interpolate", three_nn_interpolate, _interp_valid, ref.three_nn_interpolate,
             lambda got, exp, kw: close(got, exp, 1e-5),
             {"points": "points", "centers": "centers", "center_features": "center_features"}),
        Spec("group_points", group_points,
             lambda g: {"points": g.normal(g.int(5, 100, 30), 3), "n_groups": g.int(1, 5, 4),
                        "group_size": g.int(1, 5, 5)},
             ref.group_points, _group_compare, {"points": "points"},
             {"n_groups": BAD_COUNTS, "group_size": BAD_COUNTS}),
        Spec("auroc", auroc, _auroc_valid, ref.auroc, lambda got, exp, kw: close(got, exp, 1e-12),
             {"scores": "scores", "labels": "labels"}, exact_any_finite=True),
        Spec("auroc_nonzero", auroc_nonzero, _auroc_valid, ref.auroc, lambda got, exp, kw: close(got, exp, 1e-12),
             {"scores": "scores", "labels": "labels"}, exact_any_finite=True),
        Spec("pro_curve", pro_curve, _pro_valid, ref.pro_curve_exact, _pro_compare, {"maps": "maps", "masks": "masks"},
             {"num_thresholds": [1, 0, -3, 2.5, "99"]}, torch_out=False, exact_any_finite=True),
        Spec("aupro", aupro, _pro_valid, ref.aupro, _aupro_compare, {"maps": "maps", "masks": "masks"},
             {"limits": [0, -0.1, 1.5, float("nan"), "0.3", []], "num_thresholds": [1, 2.5]}, torch_out=False,
             exact_any_finite=True),
        Spec("connected_components", connected_components, lambda g: {"masks": _pro_valid(g)["masks"]},
             _ccl_reference, _ccl_compare, {"masks": "masks"}),
        Spec("ransac_plane", ransac_plane, _ransac_valid, ref.ransac_plane, _ransac_compare, {"points": "points"},
             {"distance_threshold": [0, -1.0, float("nan"), float("inf"), "0.1"], "num_points": [2, 10**6, 3.5],
              "iterations": [0, -5, 2.0], "seed": [1.5, "0"], "probability": [0, 1.5, float("nan")]}),
        Spec("dbscan", dbscan, _dbscan_valid, ref.dbscan, lambda got, exp, kw: equal(got, exp, "labels"),
             {"points": "points"}, {"eps": [0, -0.1, float("nan"), float("inf"), "0.1", 1e-30],
                                    "min_points": [0, -1, 2.5, True]}),
        Spec("estimate_normals", lambda points, k: estimate_normals(points, k=k),
             lambda g: {"points": g.normal(g.int(0, 80, 30), 3), "k": g.int(1, 40, 10)},
             lambda points, k: ref.estimate_normals(points, max_nn=k),
             lambda got, exp, kw: close(np.abs((np.asarray(got, np.float64) * exp).sum(-1)),
                                        np.ones(len(exp)), 1e-3, "|cos| to the reference normal"),
             {"points": "points"}, {"k": BAD_COUNTS[:-1]}),
        Spec("points_to_grid", points_to_grid, _grid_valid, ref.points_to_grid,
             lambda got, exp, kw: close(got, exp, 1e-5), {"features": "features", "pixel_index": "pixel_index"},
             {"height": [2, 0, -1, 3.5], "width": [2, 0, 3.5], "out_size": [0, -1, (1, 2, 3), "4"]}),
        Spec("mlp", mlp, _mlp_valid, lambda x, weights, biases: ref.mlp(x, weights, biases),
             lambda got, exp, kw: close(got, exp, 1e-4),
             {"x": "x", "weights.0": "weight 0", "weights.1": "weight 1", "biases.0": "bias 0"},
             {"weights": [[], None, "w"]}, names=("mlp",)),
        Spec("crossmodal_discrepancy", crossmodal_discrepancy, _crossmodal_valid, _crossmodal_reference,
             _pair_close,
             {"f2d": "f2d", "f3d": "f3d", "mlp_2d3d.0.0": "mlp_2d3d weight 0", "mlp_3d2d.1.0": "mlp_3d2d bias 0",
              "mask": "mask"},
             {"mlp_2d3d": [None, ([], []), "mlp"]}),
    ]


def specs(group: str) -> list[Spec]:
    from . import _fuzz_specs_more

    table = {"ops": _ops_specs, **_fuzz_specs_more.GROUPS}
    out = table[group]()
    for s in out:
        s.group = group
    return out


__all__ = ["close", "equal", "specs", "xmodal"]
