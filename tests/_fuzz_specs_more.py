"""Fuzz specs above the kernels: Gaussian statistics and MLP folding ("gaussian"), the memory bank
and the metrics ("bank_metrics"), and Detector.predict ("predict")."""

from __future__ import annotations

import numpy as np

from xmodal import reference as ref
from xmodal.ops import GaussianStats, cholesky_factors, fold_linear_batchnorm, fold_linears, mahalanobis

from ._fuzz import Gen, Spec
from ._fuzz_specs import BAD_COUNTS, close, equal

# --- gaussian -------------------------------------------------------------------------------------


def _gaussian_x(g: Gen, batch: int | None = None):
    b = g.int(2, 40, 12) if batch is None else batch
    return g.normal(b, g.int(1, 5, 3), g.int(1, 12, 4))


def _stats(x):
    stats = GaussianStats().update(x)
    return stats.mean, stats.covariance()


def _stats_compare(got, expected, kw):
    close(got[0], expected[0], 1e-5, "mean")
    close(got[1], expected[1], 1e-5, "covariance")


def _spd(g: Gen, p: int, d: int) -> np.ndarray:
    a = g.rng.normal(size=(p, d, d + 2))
    return (a @ a.transpose(0, 2, 1) / (d + 2)).astype(np.float32)


def _cholesky_reference(covariance, regularization):
    cov = covariance if covariance.ndim == 3 else covariance[None]
    d = cov.shape[-1]
    lower = np.linalg.cholesky(cov + regularization * np.eye(d))
    rows, cols = np.tril_indices(d)
    return lower[:, rows, cols]


def _mahalanobis_valid(g: Gen):
    p, d = g.int(1, 6, 3), g.int(1, 16, 4)
    factors = _cholesky_reference(_spd(g, p, d).astype(np.float64), 0.01).astype(np.float32)
    return {"x": g.normal(g.int(0, 8, 3), p, d), "mean": g.normal(p, d), "factors": factors}


def _linear(g: Gen, out: int, inp: int):
    return (g.normal(out, inp, scale=0.5), g.normal(out))


def _fold_bn_valid(g: Gen):
    out, inp = g.int(1, 16, 4), g.int(1, 16, 5)
    bn = {"running_mean": g.normal(out), "running_var": np.abs(g.normal(out)) + 0.1,
          "weight": g.normal(out), "bias": g.normal(out)}
    return {"linear": _linear(g, out, inp), "batchnorm": bn}


def _fold_bn_reference(linear, batchnorm):
    w, b = linear
    bn = batchnorm
    scale = bn["weight"] / np.sqrt(bn["running_var"] + 1e-5)
    return scale[:, None] * w, scale * ((0.0 if b is None else b) - bn["running_mean"]) + bn["bias"]


def _fold_compare(got, expected, kw):
    # folded parameters come back in the weight's dtype: float16 weights round to float16
    rtol = 1e-3 if np.asarray(got[0]).dtype == np.float16 else 1e-5
    close(got[0], expected[0], rtol, "weight")
    if expected[1] is None:
        assert got[1] is None, "a bias appeared"
    else:
        close(got[1], expected[1], rtol, "bias")


def _fold_bn_extra(kw):
    bn = kw["batchnorm"]
    negative = {**bn, "running_var": -bn["running_var"]}
    return [("batchnorm.running_var", "negative variance", {**kw, "batchnorm": negative}),
            ("linear.1", "int64 bias", {**kw, "linear": (kw["linear"][0], np.arange(len(bn["running_var"])))})]


def _fold_linears_valid(g: Gen):
    a, b, c = g.int(1, 16, 3), g.int(1, 16, 4), g.int(1, 16, 5)
    return {"first": _linear(g, b, a), "second": _linear(g, c, b)}


def _fold_linears_reference(first, second):
    (w1, b1), (w2, b2) = first, second
    bias = None if b1 is None else w2 @ b1
    if b2 is not None:
        bias = b2 if bias is None else bias + b2
    return w2 @ w1, bias


def _gaussian_specs() -> list[Spec]:
    return [
        Spec("GaussianStats.update", _stats, lambda g: {"x": _gaussian_x(g)},
             lambda x: ref.gaussian_statistics(x), _stats_compare, {"x": "x"}, names=("GaussianStats",),
             torch_out=False),
        Spec("cholesky_factors", cholesky_factors,
             lambda g: {"covariance": _spd(g, g.int(1, 5, 3), g.int(1, 12, 4)), "regularization": 0.01},
             _cholesky_reference, lambda got, exp, kw: close(got, exp, 1e-5), {"covariance": "covariance"},
             {"regularization": [-1.0, float("nan"), "0.01", None]}),
        Spec("mahalanobis", mahalanobis, _mahalanobis_valid, ref.mahalanobis_from_factors,
             lambda got, exp, kw: close(got, exp, 1e-5), {"x": "x", "mean": "mean", "factors": "factors"}),
        Spec("fold_linear_batchnorm", fold_linear_batchnorm, _fold_bn_valid, _fold_bn_reference,
             _fold_compare,
             {"linear.0": "linear weight", "linear.1": "linear bias", "batchnorm.running_mean": "running_mean",
              "batchnorm.running_var": "running_var"},
             extra=_fold_bn_extra,
             all_torch=False, names=("batchnorm",)),
        Spec("fold_linears", fold_linears, _fold_linears_valid, _fold_linears_reference,
             _fold_compare,
             {"first.0": "first weight", "first.1": "first bias", "second.0": "second weight"},
             all_torch=False, names=("first", "second")),
    ]


# --- memory bank and metrics -------------------------------------------------------------------


def _bank_query(features, x, k, dtype="float32"):
    from xmodal import MemoryBank

    return MemoryBank(features, dtype=dtype).query(x, k)


def _bank_valid(g: Gen):
    n, d = g.int(1, 80, 20), g.choice((1, 3, 5, 64, 300), 8)
    return {"features": g.normal(n, d), "x": g.normal(g.int(0, 10, 4), d), "k": g.int(1, n, min(3, n))}


def _bank_reference(features, x, k, dtype="float32"):
    bank = features.astype(np.float16).astype(np.float64) if dtype == "float16" else features
    return ref.knn(x, bank, k)


def _bank_compare(got, expected, kw):
    close(got[0], expected[0], 1e-6, "dist")


def _bank_extra(kw):
    big = np.full((4, kw["features"].shape[1]), 1e5, np.float32)
    return [("features", "float16 bank of values beyond float16 (1e5)", {**kw, "features": big, "dtype": "float16",
                                                                         "k": 1})]


def _build(batches, max_rows, coreset_ratio, chunk_rows=None):
    from xmodal import MemoryBank

    return MemoryBank.build(batches, max_rows, coreset_ratio=coreset_ratio, chunk_rows=chunk_rows).to_numpy()


def _build_valid(g: Gen):
    rows = g.int(1, 5000, 300)
    d = g.choice((3, 8, 64), 8)
    features = g.normal(rows, d)
    cut = rows // 2
    return {"batches": [features[:cut] if cut else features, features[cut:]] if cut else [features],
            "max_rows": rows, "coreset_ratio": 0.25, "chunk_rows": g.choice((None, 64, 4096), 64)}


def _build_extra(kw):
    # found by this fuzz: a streamed build whose final reduce keeps fewer than 4096 rows failed
    # ("could not broadcast input array from shape (409,16) into shape (411,16)")
    rows = np.random.default_rng(1).normal(size=(4097, 16)).astype(np.float32)
    return [("batches", "streamed, 4097 rows, ratio 0.1, chunks of 4096",
             {"batches": [rows[:2000], rows[2000:]], "max_rows": 4097, "coreset_ratio": 0.1, "chunk_rows": 4096})]


def _build_reference(batches, max_rows, coreset_ratio, chunk_rows=None):
    rows = np.concatenate(batches)
    return rows, max(1, int(len(rows) * coreset_ratio))


def _build_compare(got, expected, kw):
    rows, n = expected
    assert got.shape == (n, rows.shape[1]), f"bank shape {got.shape}, expected ({n}, {rows.shape[1]})"
    known = {r.tobytes() for r in rows.astype(np.float32)}
    assert all(r.tobytes() in known for r in got.astype(np.float32)), "bank rows that are not input rows"


def _metrics_valid(g: Gen):
    from ._fuzz_specs import _masks

    n, h, w = g.int(3, 6, 4), g.int(4, 16, 8), g.int(4, 16, 8)
    masks = _masks(g, n, h, w)
    masks[0] = 0
    return {"image_scores": g.normal(n), "image_labels": (masks.reshape(n, -1).max(1) > 0).astype(np.uint8),
            "maps": g.normal(n, h, w), "masks": masks}


def _evaluate(image_scores, image_labels, maps, masks):
    from xmodal.metrics import evaluate_maps

    return evaluate_maps(image_scores, image_labels, maps, masks)


def _evaluate_reference(image_scores, image_labels, maps, masks):
    if image_scores is None:  # MVTec's convention: the maximum of each map
        image_scores = maps.reshape(len(maps), -1).max(1)
    if image_labels is None:  # defective when the mask has a defect pixel
        image_labels = masks.reshape(len(masks), -1).max(1) > 0
    values = ref.aupro(maps, masks)
    return {"I-AUROC": ref.auroc(image_scores, image_labels), "P-AUROC": ref.auroc(maps, masks),
            "AUPRO@30%": values[0.3], "AUPRO@10%": values[0.1], "AUPRO@5%": values[0.05], "AUPRO@1%": values[0.01]}


def _evaluate_cfm(maps, masks):
    from xmodal.metrics import evaluate_maps

    return evaluate_maps(None, None, maps, masks, protocol="cfm")


def _evaluate_cfm_valid(g: Gen):
    kw = _metrics_valid(g)
    return {"maps": np.abs(kw["maps"]) + np.float32(0.01) * np.abs(kw["maps"]).max(), "masks": kw["masks"]}


def _evaluate_cfm_reference(maps, masks):
    """CFM's normalisations in float64: AUPRO (99 thresholds) on psi / mean(psi[psi != 0]),
    P-AUROC on psi / sqrt(mean(psi)), image score max(psi) / sqrt(mean(psi[psi != 0]))."""
    means = np.array([m[m != 0].mean() for m in maps])
    pro = maps / means[:, None, None]
    pixel = maps / np.sqrt(maps.mean(axis=(1, 2)))[:, None, None]
    scores = maps.reshape(len(maps), -1).max(1) / np.sqrt(means)
    labels = masks.reshape(len(masks), -1).max(1) > 0
    values = ref.aupro(pro, masks, num_thresholds=99)
    return {"I-AUROC": ref.auroc(scores, labels), "P-AUROC": ref.auroc(pixel, masks),
            "AUPRO@30%": values[0.3], "AUPRO@10%": values[0.1], "AUPRO@5%": values[0.05], "AUPRO@1%": values[0.01]}


def _evaluate_compare(got, expected, kw):
    for key, value in expected.items():
        close(got[key], value, 1e-9, key)


def _bank_metrics_specs() -> list[Spec]:
    return [
        Spec("MemoryBank.query", _bank_query, _bank_valid, _bank_reference, _bank_compare,
             {"features": "features", "x": "x"}, {"k": BAD_COUNTS, "dtype": ["float64", "half", None]},
             names=("memory bank", "N="), exact_any_finite=True, extra=_bank_extra),
        Spec("MemoryBank.build", _build, _build_valid, _build_reference, _build_compare,
             {"batches.0": "batch", "batches.1": "batch"},
             {"max_rows": [0, -1, 1.5, None, 2], "coreset_ratio": [0, -0.5, 1.5, float("nan"), "0.1"],
              "chunk_rows": [0, -1, 2.5]},
             names=("rows", "max_rows", "every batch", "dim"), all_torch=False, torch_out=False, extra=_build_extra),
        Spec("evaluate_maps", _evaluate, _metrics_valid, _evaluate_reference, _evaluate_compare,
             {"image_scores": "image_scores", "image_labels": "image_labels", "maps": "maps", "masks": "masks"},
             names=("scores", "labels"), torch_out=False, exact_any_finite=True),
        # found by the fuzz: the cfm means overflowed for maps near float32's maximum
        Spec("evaluate_maps (cfm)", _evaluate_cfm, _evaluate_cfm_valid, _evaluate_cfm_reference, _evaluate_compare,
             {"maps": "maps", "masks": "masks"}, names=("scores", "labels"), torch_out=False, exact_any_finite=True),
    ]


# --- Detector.predict ---------------------------------------------------------------------------

_DETECTOR = None


def _detector():
    global _DETECTOR
    if _DETECTOR is None:
        from tests import _toy

        _DETECTOR = _toy.Toy(calibration=0.25).fit([_toy.sample(i) for i in range(8)])
    return _DETECTOR


def _predict(rgb, xyz):
    return _detector().predict(rgb=rgb, xyz=xyz)


def _predict_valid(g: Gen):
    from tests import _toy

    s = _toy.sample(g.int(0, 1000, 3), anomalous=bool(g.int(0, 1, 1)), size=g.choice((16, 32, 48), 32))
    return {"rgb": s.rgb, "xyz": s.xyz}


def _predict_reference(rgb, xyz):
    from tests import _toy

    det = _detector()
    gray = rgb.astype(np.float64).mean(-1)
    h, w = gray.shape[:2]
    side = _toy.SIDE
    grid = gray[: h - h % side, : w - w % side].reshape(side, h // side, side, w // side).mean(axis=(1, 3))
    return np.abs(grid - det.mean)


def _predict_compare(got, expected, kw):
    close(got.map, expected, 1e-4, "map")
    close(got.score, expected.max(), 1e-4, "score")
    assert got.is_anomalous == (got.score > got.threshold), "verdict disagrees with the threshold"


def _predict_extra(kw):
    xyz = kw["xyz"]
    zero = np.zeros_like(xyz)
    return [("xyz", "all points missing (all zero)", {**kw, "xyz": zero}),
            ("rgb", "rgb and xyz of different sizes", {**kw, "rgb": kw["rgb"][:-2]}),
            ("rgb", "gray (H, W) image", {**kw, "rgb": kw["rgb"][..., 0]}),
            ("rgb", "RGBA (H, W, 4) image", {**kw, "rgb": np.concatenate([kw["rgb"], kw["rgb"][..., :1]], -1)})]


def _predict_specs() -> list[Spec]:
    return [
        Spec("Detector.predict", _predict, _predict_valid, _predict_reference, _predict_compare,
             {"rgb": "rgb", "xyz": "xyz"}, names=("Sample", "sample"), torch_out=False, extra=_predict_extra),
    ]


GROUPS = {"gaussian": _gaussian_specs, "bank_metrics": _bank_metrics_specs, "predict": _predict_specs}
__all__ = ["GROUPS", "equal"]
