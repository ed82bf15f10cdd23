"""Patch features on G2SF's 56 x 56 grid and their neighbours in the IMG and PCD banks.

The RGB grid (28 x 28 with DINO) is nearest-upsampled to the 3D grid (56 x 56): every RGB row
appears four times, so its neighbours are searched once per unique row and replicated. The IMG
rows are standardised by the bank's scalar mean and std. Without background rows in the PCD
bank (``pcd_background=False``) a background cell gets PCD distance 0, which is what the
reference's all-zero background rows give an all-zero background feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PatchNeighbours:
    """One image's patches and their k nearest rows in each bank (G3 = 3D grid side).

    Attributes:
        img: (G3*G3, D_img) standardised RGB features on the 3D grid (replicated rows).
        pcd: (G3*G3, D_pcd) 3D features.
        foreground: (G3*G3,) bool cells with 3D data.
        dist_img, idx_img: (G3*G3, k) distances / bank rows in the IMG bank.
        dist_pcd, idx_pcd: (G3*G3, k) in the PCD bank (background cells: 0 / -1 without
            background rows in the bank).
    """

    img: torch.Tensor
    pcd: torch.Tensor
    foreground: torch.Tensor
    dist_img: torch.Tensor
    idx_img: torch.Tensor
    dist_pcd: torch.Tensor
    idx_pcd: torch.Tensor

    @property
    def features(self) -> torch.Tensor:
        return torch.cat([self.img, self.pcd], dim=1)


def upsample_index(grid: int, grid3: int, device=None) -> torch.Tensor:
    """(grid3*grid3,) row of the grid x grid map each grid3 cell takes (nearest)."""
    src = (torch.arange(grid3, device=device) * grid) // grid3
    return (src[:, None] * grid + src[None, :]).reshape(-1)


def image_rows(feats, i: int, img_mean: float, img_std: float):
    """(standardised RGB rows (G*G, C), 3D rows (G3*G3, C3), foreground (G3*G3,), G, G3)."""
    rgb, xyz = feats.rgb[i], feats.xyz[i]
    grid, grid3 = rgb.shape[-1], xyz.shape[-1]
    img = (rgb.reshape(rgb.shape[0], -1).T - img_mean) / img_std
    pcd = xyz.reshape(xyz.shape[0], -1).T
    return img.contiguous(), pcd.contiguous(), feats.foreground[i].reshape(-1), grid, grid3


def neighbours(feats, i: int, banks: dict, img_mean: float, img_std: float, k: int,
               pcd_background: bool) -> PatchNeighbours:
    """Patches of image ``i`` and their ``k`` nearest rows in ``banks`` ("img", "pcd")."""
    img, pcd, fg, grid, grid3 = image_rows(feats, i, img_mean, img_std)
    up = upsample_index(grid, grid3, img.device)
    d_img, i_img = banks["img"].query(img, k)
    cells = pcd.shape[0]
    d_pcd = torch.zeros((cells, k), dtype=torch.float32, device=pcd.device)
    i_pcd = torch.full((cells, k), -1, dtype=torch.int64, device=pcd.device)
    rows = torch.arange(cells, device=pcd.device) if pcd_background else torch.nonzero(fg).reshape(-1)
    if rows.numel():
        d, j = banks["pcd"].query(pcd[rows].contiguous(), k)
        d_pcd[rows], i_pcd[rows] = d, j
    return PatchNeighbours(img=img[up], pcd=pcd, foreground=fg, dist_img=d_img[up], idx_img=i_img[up],
                           dist_pcd=d_pcd, idx_pcd=i_pcd)


def patch_labels(mask: np.ndarray, grid3: int, size: int = 224) -> np.ndarray:
    """(grid3*grid3,) bool patch labels: the mask nearest-resized to ``size``, dilated 3 x 3,
    then nearest to the grid (the reference's fusion-dataset labels)."""
    from PIL import Image

    from ...data.preprocess import resize_gt

    gt = resize_gt(mask, size)
    padded = np.pad(gt, 1)
    dilated = np.zeros_like(gt)
    for dy in range(3):
        for dx in range(3):
            dilated |= padded[dy : dy + size, dx : dx + size]
    small = Image.fromarray(dilated.astype(np.uint8) * 255).resize((grid3, grid3), Image.NEAREST)
    return (np.asarray(small) >= 128).reshape(-1)
