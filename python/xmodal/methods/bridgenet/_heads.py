"""BridgeNet's trainable heads, its Gaussian anomaly generator (MGAG) and its losses.

- Adaptor: one Linear(D, D), D = 2 x embed_dim (RGB then depth), Xavier-normal weights; with
  a bias (reference code) or bias-free (paper, Sec. 4.1).
- Discriminator: ``blocks`` x [Linear + BatchNorm1d + LeakyReLU(0.3)] -> Linear(hidden, 1,
  no bias) -> Sigmoid. Linear weights Xavier-normal, biases torch's default; BatchNorm1d keeps
  torch's default weight 1 and bias 0: the reference's init function draws N(1, 0.02) for
  BatchNorm2d only, so its BatchNorm1d layers keep the default too.
- For inference the adaptor is folded into the first Linear and every BatchNorm into its
  Linear (float64, :func:`xmodal.ops.fold_linears` / :func:`xmodal.ops.fold_linear_batchnorm`),
  and the heads run through :func:`xmodal.ops.mlp` (LeakyReLU slope 0.3, sigmoid tail).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Heads", "focal_loss", "fold_heads", "gaussian_noise"]

SLOPE = 0.3
MODALITY_CHOICES = ("both", "rgb", "depth")


def _xavier(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)


class Heads(nn.Module):
    """The adaptor and the discriminator.

    Args:
        dim: joint feature size (2 x embed_dim).
        hidden: discriminator width (paper 1536, reference 3072 = 2 x 1536).
        blocks: Linear + BatchNorm + LeakyReLU blocks (reference 2; paper Eq. 10 shows one).
        adaptor_bias: the reference's adaptor bias (the paper's adaptor is bias-free).
    """

    def __init__(self, dim: int, hidden: int, blocks: int = 2, adaptor_bias: bool = False):
        super().__init__()
        self.adaptor = nn.Linear(dim, dim, bias=adaptor_bias)
        layers = []
        for i in range(blocks):
            layers += [nn.Linear(dim if i == 0 else hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(SLOPE)]
        layers += [nn.Linear(hidden if blocks else dim, 1, bias=False), nn.Sigmoid()]
        self.discriminator = nn.Sequential(*layers)
        self.apply(_xavier)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        """(N, dim) joint features -> (N,) scores in (0, 1)."""
        return self.discriminator(self.adaptor(joint))[:, 0]


def fold_heads(heads: Heads) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """(weights, biases) float32 tensors (the heads' device) of the folded heads for :func:`xmodal.ops.mlp`: the adaptor
    folded into the first Linear, each BatchNorm (eval statistics) into its Linear."""
    from ...ops import fold_linear_batchnorm, fold_linears

    linears = [m for m in heads.discriminator if isinstance(m, nn.Linear)]
    norms = [m for m in heads.discriminator if isinstance(m, nn.BatchNorm1d)]
    weights, biases = [], []
    for i, linear in enumerate(linears):
        bias = None if linear.bias is None else linear.bias.detach()
        params = fold_linears(heads.adaptor, linear) if i == 0 else (linear.weight.detach(), bias)
        if i < len(norms):
            params = fold_linear_batchnorm(params, norms[i])
        w, b = params
        weights.append(w.detach().float().contiguous())
        biases.append(None if b is None else b.detach().float().contiguous())
    return weights, biases


def gaussian_noise(like_rgb: torch.Tensor, like_depth: torch.Tensor, sigma: float, modality: str,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb + noise, depth + noise) with N(0, sigma) noise on both, the RGB or the depth input
    (``modality`` "both", "rgb" or "depth")."""
    rgb, depth = like_rgb, like_depth
    if modality in ("both", "rgb"):
        rgb = rgb + sigma * torch.randn(rgb.shape, generator=generator, dtype=rgb.dtype).to(rgb.device)
    if modality in ("both", "depth"):
        depth = depth + sigma * torch.randn(depth.shape, generator=generator, dtype=depth.dtype).to(depth.device)
    return rgb, depth


def focal_loss(scores: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0,
               smooth: float = 1e-5) -> torch.Tensor:
    """The focal loss of GLASS / BridgeNet on the two-class probabilities [1 - s, s]:
    mean of ``-alpha (1 - p_t)^gamma log p_t`` with ``p_t = sum(one_hot_smoothed * probs) + smooth``
    and the one-hot target clamped to [smooth, 1 - smooth]."""
    probs = torch.stack([1 - scores, scores], dim=1)
    one_hot = torch.stack([1 - target, target], dim=1).clamp(smooth, 1.0 - smooth)
    pt = (one_hot * probs).sum(dim=1) + smooth
    return (-alpha * (1 - pt) ** gamma * pt.log()).mean()
