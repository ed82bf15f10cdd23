"""G2SF's Local Scale Prediction Network (LSPN) and its anisotropic metric.

For a test patch f = [f_img, f_pcd] and a prototype m = [m_img, m_pcd] (a bank row of each
modality), the LSPN predicts per-modality scales w in (e^-1, e) from the direction d of f - m
and from m; with the global scales sigma (softmax-like of 1 + tanh g) and the mean normal
distances mu, the metric is

    l = sum_m w_m * sigma_m * ||f_m - m_m|| / mu_m.

Shapes (the reference's, G2SF ICCV 2025 and its code): each branch Linear(D -> 512) + ReLU +
Dropout(0.5) -> Linear(512 -> 128); the head Linear(256 -> 256) + ReLU + Dropout(0.5) ->
Linear(256 -> 2) -> exp(tanh(.)); default PyTorch initialisation; g = 0 at initialisation, so
sigma = (0.5, 0.5) and w = exp(tanh(small)) ~ 1.
"""

from __future__ import annotations

import torch
from torch import nn

DIRECTIONS = ("per_modality", "joint")
DIRECTION_SCALE = 5.0  # d = 5 (f - m) / max(||f - m||, 1e-3) in the reference code
DIRECTION_EPS = 1e-3


def _branch(d_in: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


def directions(f: torch.Tensor, m: torch.Tensor, split: int, mode: str) -> torch.Tensor:
    """d = 5 (f - m) / max(||f - m||, 1e-3): one unit vector over the whole concatenation
    ("joint", the reference code) or one per modality ("per_modality", the paper's Eq. 5)."""
    diff = f - m
    if mode == "joint":
        return DIRECTION_SCALE * diff / diff.norm(dim=-1, keepdim=True).clamp_min(DIRECTION_EPS)
    parts = (diff[..., :split], diff[..., split:])
    return torch.cat([DIRECTION_SCALE * p / p.norm(dim=-1, keepdim=True).clamp_min(DIRECTION_EPS) for p in parts],
                     dim=-1)


class LSPN(nn.Module):
    """The two-branch scale network plus the global scales.

    Args:
        dim_img, dim_pcd: feature widths of the two modalities (768 and 1152 with DINO ViT-B/8
            and Point-MAE); inputs are [img, pcd] concatenations.
        direction: "per_modality" (paper) or "joint" (reference code).
        hidden, out, head: branch and head widths (512, 128, 256 in the reference).
        dropout: dropout after the hidden ReLUs (0.5).
    """

    def __init__(self, dim_img: int, dim_pcd: int, direction: str = "per_modality", hidden: int = 512,
                 out: int = 128, head: int = 256, dropout: float = 0.5):
        super().__init__()
        if direction not in DIRECTIONS:
            msg = f"direction must be one of {DIRECTIONS}; got {direction!r}"
            raise ValueError(msg)
        self.dim_img, self.dim_pcd, self.direction = int(dim_img), int(dim_pcd), direction
        width = self.dim_img + self.dim_pcd
        self.branch_direction = _branch(width, hidden, out, dropout)
        self.branch_prototype = _branch(width, hidden, out, dropout)
        self.head = nn.Sequential(nn.Linear(2 * out, head), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head, 2))
        self.g = nn.Parameter(torch.zeros(2))

    def sigma(self) -> torch.Tensor:
        """Global scales (2,): (1 + tanh g) / sum(1 + tanh g); (0.5, 0.5) at initialisation."""
        s = 1 + torch.tanh(self.g)
        return s / s.sum()

    def scales(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Local scales w (..., 2) in (e^-1, e) of features f and prototypes m (..., D)."""
        d = directions(f, m, self.dim_img, self.direction)
        z = torch.cat([self.branch_direction(d), self.branch_prototype(m)], dim=-1)
        return torch.exp(torch.tanh(self.head(z)))

    def metric(self, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """l = sum_m w_m sigma_m s_m for normalised distances s (..., 2)."""
        return (w * self.sigma() * s).sum(dim=-1)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.modules() if isinstance(m, nn.Linear)]


def normalised_distances(f: torch.Tensor, m: torch.Tensor, split: int, mu: torch.Tensor) -> torch.Tensor:
    """(..., 2): ||f_img - m_img|| / mu_img and ||f_pcd - m_pcd|| / mu_pcd."""
    diff = f - m
    return torch.stack([diff[..., :split].norm(dim=-1), diff[..., split:].norm(dim=-1)], dim=-1) / mu
