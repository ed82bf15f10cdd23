"""Evaluation protocol of multimodal industrial anomaly detection, and paper-style reports.

:func:`evaluate_maps` computes what the papers report for one class of a test set: image-level
AUROC, pixel-level AUROC and the normalised AUPRO at 30 / 10 / 5 / 1 % FPR, with the
conventions of the code that produced the published numbers:

* ``"exact"`` (default): MVTec's current official evaluation, the exact PRO curve;
* ``"m3dm"``: the threshold-sampled MVTec 3D-AD code as BTF / M3DM / G2SF run it (100 thresholds);
* ``"cfm"``: CFM's evaluation (99 thresholds) with its three per-image normalisations of the
  anomaly map psi (CFM's evaluation code): AUPRO on psi / mean(psi[psi != 0]),
  P-AUROC on psi / sqrt(mean(psi)), and the image score max(psi / sqrt(mean(psi[psi != 0]))),
  derived from the map (so ``image_scores`` is not used).

Optional bootstrap confidence intervals over test images (stratified by image label) for
I-AUROC and the AUPROs. :class:`ResultsTable` collects the per-class results into the papers'
layout (rows = metrics, columns = classes + mean) and writes Markdown and JSON.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from . import _arrays
from . import _map_sets as _maps
from .io import atomic_path
from .ops import aupro, aupro_bootstrap, auroc, auroc_nonzero

__all__ = ["METRICS", "PROTOCOLS", "ResultsTable", "evaluate_maps"]

LIMITS = (0.3, 0.1, 0.05, 0.01)
AUPRO_NAMES = tuple(f"AUPRO@{round(limit * 100)}%" for limit in LIMITS)
METRICS = ("I-AUROC", "P-AUROC", *AUPRO_NAMES)
PROTOCOLS = {"exact": None, "m3dm": 100, "cfm": 99}  # protocol -> num_thresholds of the PRO curve


def evaluate_maps(image_scores, image_labels, maps, masks, protocol: str = "exact", *, bootstrap: int = 0,
                  seed: int = 0, ci: float = 0.95) -> dict:
    """I-AUROC, P-AUROC and AUPRO@30/10/5/1 % of one class of a test set.

    Args:
        image_scores: (N,) image anomaly scores, numpy or torch, or None to use the maximum of
            each map (MVTec's official convention). Not used by ``"cfm"``, which derives the
            score from the map as CFM does (a warning says so when scores are given).
        image_labels: (N,) 0/1 or boolean (1 = defective image), or None to derive them from
            the masks (an image is defective when its mask has a nonzero pixel).
        maps: (N, H, W) anomaly maps, or a list of N (H, W) maps of possibly different sizes;
            numpy or torch (CPU or CUDA).
        masks: ground truth of the same structure and shapes; nonzero = anomalous.
        protocol: ``"exact"``, ``"m3dm"`` (100 thresholds) or ``"cfm"`` (99 thresholds and CFM's
            map normalisations); see the module docstring.
        bootstrap: number of bootstrap resamples of the test images (0: none). Resampling is
            stratified by image label, so every resample has both classes.
        seed: seeds the resampling.
        ci: confidence level of the percentile intervals.

    Returns:
        dict with the floats ``"I-AUROC"``, ``"P-AUROC"``, ``"AUPRO@30%"``, ``"AUPRO@10%"``,
        ``"AUPRO@5%"``, ``"AUPRO@1%"``; with bootstrap also ``"ci"``: {metric: [low, high]} for
        I-AUROC and the AUPROs, and ``"bootstrap"``: the number of resamples used (those with
        an anomalous region).

    Raises:
        ValueError / TypeError: unknown protocol, inconsistent counts or shapes, labels other
            than 0/1, NaN in scores or maps, a class without defective or without normal
            images, an all-zero map under ``"cfm"``.

    Note:
        The bootstrap sorts every pixel once with its image index (16 bytes per pixel, CPU; CUDA
        maps are copied to the host), then integrates one curve per resample.
    """
    _arrays.one_of(protocol, "protocol", sorted(PROTOCOLS))
    bootstrap = _arrays.positive_int(bootstrap, "bootstrap", minimum=0)
    ci = _arrays.number(ci, "ci", minimum=0, maximum=1, low_open=True, high_open=True)
    images, image_masks = _per_image(maps, masks)
    labels = _image_labels(image_labels, image_masks)
    num_thresholds = PROTOCOLS[protocol]
    if protocol == "cfm":
        if image_scores is not None:
            warnings.warn("evaluate_maps(protocol='cfm') derives image scores from the maps as CFM does; "
                          "the given image_scores are not used", stacklevel=2)
        pro_maps, pixel_maps, scores = _cfm_normalisations(images)
    else:
        pro_maps = pixel_maps = images
        scores = _image_scores(image_scores, images)
    results = {
        "I-AUROC": auroc(scores, labels),
        "P-AUROC": auroc_nonzero(pixel_maps, image_masks),
    }
    values = aupro(pro_maps, image_masks, limits=LIMITS, num_thresholds=num_thresholds)
    results.update({name: values[limit] for name, limit in zip(AUPRO_NAMES, LIMITS, strict=False)})
    if bootstrap:
        results.update(_bootstrap(scores, labels, pro_maps, image_masks, num_thresholds, bootstrap, seed, ci))
    return results


def _per_image(maps, masks):
    """Lists of (H, W) maps and masks (views, no copies)."""
    map_list = _maps.as_list(maps, "maps")
    mask_list = _maps.as_list(masks, "masks")

    def split(arrays, name):
        out = []
        for a in arrays:
            if _arrays.is_torch(a):
                _arrays.check_device(a, name)
            ndim = len(a.shape) if hasattr(a, "shape") else np.ndim(a)
            if ndim == 3:
                out.extend(a[i] for i in range(a.shape[0]))
            elif ndim == 2:
                out.append(a)
            else:
                msg = f"{name} must be (N, H, W) or a list of (H, W) arrays; got an array with {ndim} dimensions"
                raise ValueError(msg)
        return out

    images, image_masks = split(map_list, "maps"), split(mask_list, "masks")
    if len(images) != len(image_masks):
        msg = f"maps and masks must hold the same number of images; got {len(images)} and {len(image_masks)}"
        raise ValueError(msg)
    return images, image_masks


def _as_host_vector(x, name: str, n: int) -> np.ndarray:
    if _arrays.is_torch(x):
        _arrays.check_device(x, name)
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        msg = f"{name} must have shape ({n},), one value per image; got shape {arr.shape}"
        raise ValueError(msg)
    return arr


def _image_labels(image_labels, image_masks) -> np.ndarray:
    n = len(image_masks)
    if image_labels is None:
        return np.array([bool((_maps.as_mask(_maps.host_or_cuda(m, "masks"), "masks") != 0).any())
                         for m in image_masks])
    labels = _as_host_vector(image_labels, "image_labels", n)
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        msg = "image_labels must be boolean or hold only 0 and 1 (1 = defective image)"
        raise ValueError(msg)
    return labels.astype(bool)


def _image_scores(image_scores, images) -> np.ndarray:
    if image_scores is None:
        return np.array([float(m.max()) for m in images])
    scores = _as_host_vector(image_scores, "image_scores", len(images))
    if scores.dtype.kind not in "biuf":
        msg = f"image_scores must be numeric; got dtype {scores.dtype}"
        raise TypeError(msg)
    return scores


def _mean(x):
    """The mean in the map's dtype, as CFM computes it; when that sum overflows (values near the
    dtype's maximum) the mean of the map scaled by its largest magnitude, scaled back, instead of
    infinity (which made every normalised map 0: found by the fuzz)."""
    torch_input = _arrays.is_torch(x)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean()
    if np.isfinite(float(mean)):
        return mean
    top = x.abs().max() if torch_input else np.abs(x).max()
    return (x / top).mean() * top


def _cfm_normalisations(images):
    """CFM's per-image rescalings of psi, computed in the map's dtype (numpy or torch)."""
    pro_maps, pixel_maps, scores = [], [], []
    for i, psi in enumerate(images):
        if not (_arrays.is_torch(psi) or isinstance(psi, np.ndarray)):
            psi = np.asarray(psi)
        if str(psi.dtype) in ("float16", "torch.float16", "bfloat16", "torch.bfloat16"):
            # half-precision quotients would round distinct scores together: work in float32
            psi = psi.float() if _arrays.is_torch(psi) else psi.astype(np.float32)
        nonzero = psi[psi != 0]
        if nonzero.numel() == 0 if _arrays.is_torch(psi) else nonzero.size == 0:
            msg = f"maps[{i}] is all zeros: the cfm protocol divides by the mean of its nonzero values"
            raise ValueError(msg)
        mean_nonzero, mean_all = _mean(nonzero), _mean(psi)
        if not (float(mean_nonzero) > 0 and float(mean_all) > 0):
            msg = (
                f"maps[{i}] must have a positive mean for the cfm protocol (it takes square roots); "
                f"got {float(mean_all)}"
            )
            raise ValueError(msg)
        sqrt = (lambda v: v.sqrt()) if _arrays.is_torch(psi) else np.sqrt
        pro_maps.append(psi / mean_nonzero)
        pixel_maps.append(psi / sqrt(mean_all))
        scores.append(float((psi / sqrt(mean_nonzero)).max()))
    return pro_maps, pixel_maps, np.asarray(scores)


def _bootstrap(scores, labels, pro_maps, masks, num_thresholds, resamples, seed, ci) -> dict:
    rng = np.random.default_rng(seed)
    n = len(labels)
    groups = [np.flatnonzero(labels), np.flatnonzero(~labels)]
    if any(len(g) == 0 for g in groups):
        msg = "bootstrap needs defective and normal images (image_labels of both classes)"
        raise ValueError(msg)
    picks = np.concatenate([rng.choice(g, size=(resamples, len(g)), replace=True) for g in groups], axis=1)
    multiplicity = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.int32)
    i_auroc = np.array([auroc(scores[row], labels[row]) for row in picks])
    pro = aupro_bootstrap(pro_maps, masks, multiplicity, limits=LIMITS, num_thresholds=num_thresholds)
    valid = ~np.isnan(pro).any(axis=1)
    low, high = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    intervals = {"I-AUROC": [float(np.percentile(i_auroc, low)), float(np.percentile(i_auroc, high))]}
    for k, name in enumerate(AUPRO_NAMES):
        column = pro[valid, k]
        intervals[name] = ([float(np.percentile(column, low)), float(np.percentile(column, high))]
                           if column.size else [math.nan, math.nan])
    return {"ci": intervals, "bootstrap": int(valid.sum())}


class ResultsTable:
    """Per-class results in the papers' layout: rows = metrics, columns = classes + mean.

    Example:
        >>> table = ResultsTable(protocol="cfm")
        >>> table.add("bagel", evaluate_maps(None, labels, maps, masks, protocol="cfm"))
        >>> print(table.to_markdown())
        >>> table.save("runs/cfm")   # runs/cfm/report.md and runs/cfm/report.json
    """

    def __init__(self, metrics=METRICS, *, protocol: str | None = None, title: str | None = None, digits: int = 3):
        self.metrics = tuple(metrics)
        self.protocol = protocol
        self.title = title
        self.digits = digits
        self._rows: dict[str, dict] = {}

    @property
    def categories(self) -> list[str]:
        return list(self._rows)

    def add(self, category: str, results: dict) -> None:
        """Adds (or replaces) a class: ``results`` as returned by :func:`evaluate_maps`."""
        if not isinstance(category, str) or not category:
            msg = f"category must be a non-empty string; got {category!r}"
            raise TypeError(msg)
        missing = [m for m in self.metrics if m not in results]
        if missing:
            msg = f"results for {category!r} lack the metrics {missing}"
            raise ValueError(msg)
        row = {m: float(results[m]) for m in self.metrics}
        if "ci" in results:
            row["ci"] = {m: [float(v) for v in results["ci"][m]] for m in self.metrics if m in results["ci"]}
        self._rows[category] = row

    def mean(self) -> dict:
        """The mean over classes of every metric (what the papers' last column shows)."""
        return {m: float(np.mean([row[m] for row in self._rows.values()])) if self._rows else math.nan
                for m in self.metrics}

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "title": self.title, "metrics": list(self.metrics),
                "classes": self._rows, "mean": self.mean()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ResultsTable:
        data = json.loads(text)
        table = cls(data["metrics"], protocol=data.get("protocol"), title=data.get("title"))
        for category, row in data["classes"].items():
            table.add(category, row)
        return table

    def to_markdown(self, ci: bool = True) -> str:
        """Markdown table; with ``ci``, bootstrap intervals follow the values as [low, high]."""
        d = self.digits

        def cell(row: dict, metric: str) -> str:
            text = f"{row[metric]:.{d}f}"
            interval = row.get("ci", {}).get(metric) if ci else None
            if interval is not None:
                text += f" [{interval[0]:.{d}f}, {interval[1]:.{d}f}]"
            return text

        mean = self.mean()
        header = ["Metric", *self.categories, "Mean"]
        lines = []
        if self.title or self.protocol:
            lines += [f"**{self.title or 'Results'}**" + (f" (protocol: {self.protocol})" if self.protocol else ""), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * (len(header) - 1)) + "|"]
        for metric in self.metrics:
            cells = [cell(self._rows[c], metric) for c in self.categories] + [f"{mean[metric]:.{d}f}"]
            lines.append("| " + " | ".join([metric, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def save(self, directory) -> tuple[str, str]:
        """Writes ``report.md`` and ``report.json`` into ``directory`` (created if needed).

        Returns:
            The two paths.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths = (os.path.join(directory, "report.md"), os.path.join(directory, "report.json"))
        for path, text in zip(paths, (self.to_markdown(), self.to_json() + "\n"), strict=False):
            with atomic_path(path) as tmp, open(tmp, "w") as f:
                f.write(text)
        return paths
