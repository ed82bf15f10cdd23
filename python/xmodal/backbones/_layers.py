"""Transformer pieces shared by the DINO ViT and the Point-MAE encoder, and input checks.

Submodule names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
are the ones timm and Point-MAE use, so their checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "DropPath", "check_images", "check_tensor", "to_module"]


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample with probability ``p``.

    Active in training mode, or in eval mode when ``force_active`` is set (the reference
    repositories' accidental train-mode feature extraction). Survivors are scaled by 1/(1-p),
    as timm does; the random draws come from torch's global generator, one Bernoulli per sample.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)
        self.force_active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not (self.training or self.force_active):
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with softmax scale 1/sqrt(head_dim)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        if dim % heads:
            msg = f"dim must be divisible by heads; got dim={dim}, heads={heads}"
            raise ValueError(msg)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(norm1 x)), then x + DropPath(mlp(norm2 x))."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool,
                 drop_path: float = 0.0, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def to_module(x: torch.Tensor, module: nn.Module, name: str) -> torch.Tensor:
    """``x`` in the module's dtype; ValueError when it is on another device than the weights."""
    param = next(module.parameters())
    if x.device != param.device:
        msg = f"{name} is on {x.device} but the backbone's weights are on {param.device}; move one of them"
        raise ValueError(msg)
    return x.to(param.dtype)


def check_tensor(x, name: str, shape_doc: str, ndim: int) -> None:
    """TypeError unless ``x`` is a floating torch tensor; ValueError unless it has ``ndim`` dims."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert with torch.from_numpy)" if type(x).__module__ == "numpy" else ""
        msg = f"{name} must be a torch tensor {shape_doc}; got {type(x).__name__}{hint}"
        raise TypeError(msg)
    if not x.is_floating_point():
        msg = f"{name} must be a floating-point tensor {shape_doc}; got dtype {x.dtype}"
        raise TypeError(msg)
    if x.ndim != ndim:
        msg = f"{name} must have {ndim} dimensions {shape_doc}; got shape {tuple(x.shape)}"
        raise ValueError(msg)


def check_images(x, module: nn.Module, *, name: str = "images", multiple: int = 1,
                 min_size: int = 1) -> torch.Tensor:
    """Validates a (B, 3, H, W) image batch and returns it in the module's dtype."""
    doc = "(B, 3, H, W)"
    check_tensor(x, name, doc, 4)
    if x.shape[1] != 3:
        msg = f"{name} must have 3 channels {doc} (depth maps: repeat them 3 times); got shape {tuple(x.shape)}"
        raise ValueError(msg)
    if x.shape[0] == 0:
        msg = f"{name} must hold at least one image; got shape {tuple(x.shape)}"
        raise ValueError(msg)
    h, w = int(x.shape[2]), int(x.shape[3])
    if h < min_size or w < min_size or h % multiple or w % multiple:
        rule = f"multiples of {multiple}" if multiple > 1 else "positive"
        msg = f"{name} height and width must be {rule} and at least {min_size}; got {h}x{w}"
        raise ValueError(msg)
    return to_module(x, module, name)
