"""Which EfficientNet-Lite0 stages make the best patch features? A small, reproducible proxy.

PatchCore-style scoring (memory bank of all training patches, distance to the nearest one,
bilinear upsampling to 224²) on three grayscale textures of scikit-image (brick, grass, gravel,
repeated to 3 channels as depth images are): 10 normal 224² crops per texture form the bank;
10 test crops carry one synthetic defect each (a disc of a foreign texture, a dark scratch, a
bright blob) with its mask. Reports pixel AUROC per stage combination, averaged over textures
and seeds. Shipped ImageNet weights; needs scikit-image and scikit-learn.

    python benchmarks/bench_efficientnet_stages.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, markdown_table
from xmodal import backbones

COMBOS = [(3,), (3, 4), (3, 5), (3, 4, 5), (4, 5), (2, 3)]
SEEDS = (0, 1, 2)
N_CROPS = 10
SIZE = 224


def crop(img, rng):
    y, x = rng.integers(0, img.shape[0] - SIZE, 2)
    return img[y:y + SIZE, x:x + SIZE].copy()


def add_defect(img, other, rng):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.integers(40, SIZE - 40, 2)
    kind = rng.integers(3)
    if kind == 1:  # dark scratch, 3 px wide
        mask = np.zeros((SIZE, SIZE), bool)
        angle, length = rng.uniform(0, np.pi), rng.integers(40, 90)
        t = np.linspace(-length / 2, length / 2, 400)
        for dy in (-1, 0, 1):
            py = np.clip((cy + t * np.sin(angle)).astype(int) + dy, 0, SIZE - 1)
            px = np.clip((cx + t * np.cos(angle)).astype(int), 0, SIZE - 1)
            mask[py, px] = True
        img[mask] *= 0.3
        return img, mask
    radius = rng.integers(10, 25) if kind == 0 else rng.integers(8, 20)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    img[mask] = crop(other, rng)[mask] if kind == 0 else np.clip(img[mask] + 0.35, 0, 1)
    return img, mask


def main():
    import skimage.data
    from sklearn.metrics import roc_auc_score

    net = backbones.EfficientNetLite0(stages=(2, 3, 4, 5, 6))
    textures = {n: getattr(skimage.data, n)().astype(np.float32) / 255 for n in ("brick", "grass", "gravel")}
    scores = {c: [] for c in COMBOS}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for name, img in textures.items():
            others = [v for k, v in textures.items() if k != name]
            train = [crop(img, rng) for _ in range(N_CROPS)]
            tests, masks = zip(*[add_defect(crop(img, rng), others[i % 2], rng) for i in range(N_CROPS)], strict=False)
            with torch.no_grad():
                maps = [net(backbones.normalize(torch.from_numpy(np.stack(x))[:, None].repeat(1, 3, 1, 1), net))
                        for x in (train, list(tests))]
            for combo in COMBOS:
                bank, query = (backbones.patch_features([m[f"stage{s}"] for s in combo]) for m in maps)
                c = bank.shape[1]
                dist = torch.cdist(query.permute(0, 2, 3, 1).reshape(-1, c), bank.permute(0, 2, 3, 1).reshape(-1, c))
                dist = dist.min(1).values.reshape(query.shape[0], 1, *query.shape[2:])
                up = F.interpolate(dist, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
                scores[combo].append(roc_auc_score(np.stack(masks).ravel(), up.numpy().ravel()))
    rows = []
    for combo in COMBOS:
        channels = sum(backbones.efficientnet.STAGES[s - 1][5] for s in combo)
        stride = net.strides[combo[0] - 2]
        rows.append([" + ".join(map(str, combo)), channels, f"{SIZE // stride}²", f"{np.mean(scores[combo]):.4f}",
                     f"{np.min(scores[combo]):.4f}"])
    print(machine_line())
    print(markdown_table(["stages", "channels", "grid", "mean P-AUROC", "worst"], rows))


if __name__ == "__main__":
    main()
