"""BridgeNet's P-AUPRO (protocol ``"bridgenet"`` of :func:`xmodal.metrics.evaluate_maps`).

The BridgeNet reference code reports a PRO integral of its own (inherited from SimpleNet-era
code), which is not the MVTec AUPRO, so its headline P-AUPRO numbers are only comparable with
themselves. What it computes, and what this module reproduces:

1. 200 thresholds ``np.arange(min, max, (max - min) / 200)`` over every map of the set (in the
   maps' dtype, as numpy evaluates that expression);
2. at each threshold t, a pixel is predicted anomalous when its score is > t; the overlap of each
   ground-truth region (8-connected) is measured on the prediction dilated by a 5 x 5 square
   (cv2.dilate: the image border adds nothing), the false-positive rate on the undilated
   prediction over all normal pixels; PRO(t) = mean overlap over every region of every image;
3. only the rows with FPR strictly below the limit (0.3) are kept, their FPRs min-max
   renormalised to [0, 1], and the area under PRO(FPR) taken by the trapezoidal rule
   (sklearn.metrics.auc).

Because of the dilation and the renormalisation the value is larger than the MVTec AUPRO of the
same maps. Instead of 200 dilated images per threshold, the 5 x 5 maximum filter is applied to
the scores once (the dilated prediction at t is "max of the window > t"), and each threshold's
counts come from sorted scores.
"""

from __future__ import annotations

import numpy as np

NUM_THRESHOLDS = 200
DILATION = 5


def _max_filter(image: np.ndarray, size: int) -> np.ndarray:
    """Maximum over a size x size window centred on each pixel, ignoring what lies outside."""
    r = size // 2
    padded = np.pad(image, r, mode="constant", constant_values=-np.inf)
    out = np.full(image.shape, -np.inf, dtype=image.dtype)
    h, w = image.shape
    for dy in range(size):
        for dx in range(size):
            np.maximum(out, padded[dy:dy + h, dx:dx + w], out=out)
    return out


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def dilated_aupro(maps, masks, limits=(0.3,), num_thresholds: int = NUM_THRESHOLDS,
                  dilation: int = DILATION) -> dict:
    """BridgeNet's P-AUPRO of a set of maps (module docstring), one value per FPR limit.

    Args:
        maps: list of (H, W) float score maps (numpy or torch), already validated.
        masks: list of (H, W) ground-truth masks of the same shapes; nonzero = anomalous.
        limits: FPR limits; BridgeNet reports 0.3.
        num_thresholds: number of linearly spaced thresholds (200).
        dilation: side of the square dilating the predictions (5).

    Returns:
        {limit: value}; NaN for a limit that keeps fewer than two rows.
    """
    from .ops import connected_components

    maps = [_to_numpy(m) for m in maps]
    masks = [_to_numpy(m) != 0 for m in masks]
    dtype = np.result_type(*[m.dtype for m in maps])
    low = min(m.min() for m in maps).astype(dtype)
    high = max(m.max() for m in maps).astype(dtype)
    thresholds = np.arange(low, high, (high - low) / num_thresholds)

    region_scores, region_ids, areas = [], [], []
    background = []
    for amap, mask in zip(maps, masks, strict=True):
        background.append(amap[~mask].ravel())
        if not mask.any():
            continue
        labels = np.asarray(connected_components(mask.astype(np.uint8))[0])
        dilated = _max_filter(amap.astype(dtype, copy=False), dilation)
        inside = labels > 0
        region_scores.append(dilated[inside])
        region_ids.append(labels[inside].astype(np.int64) + sum(len(a) for a in areas))
        areas.append(np.bincount(labels[inside])[1:])
    if not areas:
        msg = "masks have no anomalous pixel: the PRO curve needs at least one ground-truth region"
        raise ValueError(msg)
    region_scores = np.concatenate(region_scores)
    region_ids = np.concatenate(region_ids) - 1
    area = np.concatenate(areas).astype(np.float64)
    background = np.sort(np.concatenate(background))
    if background.size == 0:
        msg = "masks have no normal pixel: the false-positive rate is undefined"
        raise ValueError(msg)

    pro = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        hits = np.bincount(region_ids, weights=region_scores > t, minlength=len(area))
        pro[i] = np.mean(hits / area)
    fpr = (background.size - np.searchsorted(background, thresholds, side="right")) / background.size

    out = {}
    for limit in limits:
        keep = fpr < limit
        x, y = fpr[keep], pro[keep]
        if x.size < 2 or x.max() == x.min():
            out[limit] = float("nan")
            continue
        x = (x - x.min()) / (x.max() - x.min())
        # The trapezoidal rule; thresholds ascend, so x descends: sklearn's auc takes the sign away.
        out[limit] = float(abs(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)))
    return out
