"""Protocol "bridgenet" (BridgeNet's P-AUPRO) against a plain transcription of its description:
a loop over 200 thresholds, the predictions binarised and dilated 5 x 5 per image, regions from
skimage's labelling, FPR rows below the limit min-max renormalised, sklearn's auc."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal._dilated_pro import dilated_aupro
from xmodal.metrics import evaluate_maps

ndimage = pytest.importorskip("scipy.ndimage")
measure = pytest.importorskip("skimage.measure")
sk_metrics = pytest.importorskip("sklearn.metrics")


def plain_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3, num_th: int = 200) -> float:
    low, high = maps.min(), maps.max()
    rows = []
    square = np.ones((5, 5), dtype=bool)
    for th in np.arange(low, high, (high - low) / num_th):
        binary = maps > th
        pros = []
        for b, m in zip(binary, masks, strict=True):
            dilated = ndimage.binary_dilation(b, structure=square)  # outside the image adds nothing
            for region in measure.regionprops(measure.label(m)):
                ys, xs = region.coords[:, 0], region.coords[:, 1]
                pros.append(dilated[ys, xs].sum() / region.area)
        normal = ~masks.astype(bool)
        rows.append((np.logical_and(normal, binary).sum() / normal.sum(), np.mean(pros)))
    rows = np.array([r for r in rows if r[0] < limit])
    fpr = (rows[:, 0] - rows[:, 0].min()) / (rows[:, 0].max() - rows[:, 0].min())
    return float(sk_metrics.auc(fpr, rows[:, 1]))


def _case(seed: int, n: int = 3, size: int = 40, dtype=np.float64):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).astype(dtype)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n - 1):  # the last image is normal
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(2, 9, 2)
            masks[i, y:y + h, x:x + w] = 1
            maps[i, y:y + h, x:x + w] += rng.random() * 0.8  # partly detectable
    return maps, masks


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_the_plain_loop(seed, dtype):
    maps, masks = _case(seed, dtype=dtype)
    ours = dilated_aupro(list(maps), list(masks), limits=(0.3, 0.1))
    assert ours[0.3] == pytest.approx(plain_aupro(maps, masks, 0.3), rel=1e-9, abs=1e-12)
    assert ours[0.1] == pytest.approx(plain_aupro(maps, masks, 0.1), rel=1e-9, abs=1e-12)


def test_through_evaluate_maps_and_larger_than_the_mvtec_aupro():
    maps, masks = _case(7, n=4, size=48)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    ours = evaluate_maps(None, labels, maps, masks, protocol="bridgenet")
    exact = evaluate_maps(None, labels, maps, masks, protocol="exact")
    assert ours["AUPRO@30%"] == pytest.approx(plain_aupro(maps, masks, 0.3), rel=1e-9)
    assert ours["I-AUROC"] == exact["I-AUROC"] and ours["P-AUROC"] == exact["P-AUROC"]
    assert ours["AUPRO@30%"] > exact["AUPRO@30%"]  # dilation and renormalisation inflate it
    with pytest.raises(ValueError, match="bootstrap is not available for protocol='bridgenet'"):
        evaluate_maps(None, labels, maps, masks, protocol="bridgenet", bootstrap=5)


def test_torch_maps_and_no_region():
    torch = pytest.importorskip("torch")
    maps, masks = _case(3)
    assert dilated_aupro(list(torch.from_numpy(maps)), list(masks))[0.3] == dilated_aupro(list(maps), list(masks))[0.3]
    with pytest.raises(ValueError, match="at least one ground-truth region"):
        dilated_aupro(list(maps), list(np.zeros_like(masks)))
