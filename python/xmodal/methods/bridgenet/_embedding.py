"""BridgeNet's patch embedding (SimpleNet's, from PatchCore) computed without the unfold.

The reference formulation, per backbone layer l with C_l channels on an h_l x w_l grid:

1. unfold 3x3 (zero padding 1): every position gets the C_l * 9 vector ``e = c * 9 + k``
   (k = 3 ky + kx, the row-major kernel offset);
2. the deeper layers' unfolded maps are resized bilinearly (``align_corners=False``) to the
   first layer's grid;
3. each layer's vector goes through ``adaptive_avg_pool1d`` to ``pretrain_dim``; the layers are
   stacked and the (L * pretrain_dim) vector goes through ``adaptive_avg_pool1d`` to
   ``embed_dim``.

Steps 1 and 3 are one fixed linear map A_l (embed_dim x C_l * 9) per layer, and step 2 is a
linear map over positions applied to every channel alike, so they commute: the embedding is
``sum_l resize(conv3x3(f_l, A_l))``. A_l is very sparse (each output averages a run of
consecutive entries of e; for WideResNet-50-2's layer2 and layer3 into 1536 / 1536, 768 outputs
average 6 entries of layer2's vector and 768 average 12 of layer3's), so for each kernel offset
k an output row needs at most a few input channels: the convolution is a handful of gathers
and scaled adds of shifted feature maps. Layer3's outputs are computed on its own 36 x 36 grid
and only they are resized, so neither the unfolded maps (~95 MB for layer2 and, resized, ~190 MB
for layer3 per 576^2 image) nor a dense convolution (about 18 GFLOP per image) is ever needed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PatchEmbedding", "adaptive_pool_matrix"]

PATCH = 3


def adaptive_pool_matrix(length: int, out: int) -> np.ndarray:
    """(out, length) float64 matrix of ``torch.nn.functional.adaptive_avg_pool1d``: output i
    averages inputs ``floor(i L / out) .. ceil((i + 1) L / out) - 1`` (also when out > L)."""
    matrix = np.zeros((out, length))
    for i in range(out):
        start = (i * length) // out
        end = -((-(i + 1) * length) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class _LayerTaps:
    """For one layer: the output rows it feeds and, per kernel offset, (T, R) channel indices
    and weights (zero-weight padding where a row needs fewer than T channels)."""

    def __init__(self, matrix: np.ndarray):
        rows = np.flatnonzero(np.any(matrix != 0, axis=1))
        self.rows = torch.from_numpy(rows)
        self.taps = []
        for k in range(PATCH * PATCH):
            block = matrix[rows][:, k :: PATCH * PATCH]  # (R, C): weight of channel c at offset k
            count = int((block != 0).sum(axis=1).max()) if block.size else 0
            index = np.zeros((count, len(rows)), dtype=np.int64)
            weight = np.zeros((count, len(rows)))
            for r in range(len(rows)):
                channels = np.flatnonzero(block[r])
                index[: len(channels), r] = channels
                weight[: len(channels), r] = block[r, channels]
            if count:
                self.taps.append((k, torch.from_numpy(index), torch.from_numpy(weight)))


class PatchEmbedding:
    """Maps multi-layer feature maps to ``embed_dim`` patch features per position of the first
    layer's grid, equal to the unfold + adaptive-pool formulation (see the module docstring).

    Args:
        channels: channels of each layer, in order (WideResNet-50-2 layer2 + layer3: (512, 1024)).
        pretrain_dim: per-layer pooled size (BridgeNet 1536).
        embed_dim: output size (BridgeNet 1536 per modality).
    """

    def __init__(self, channels, pretrain_dim: int = 1536, embed_dim: int = 1536):
        self.channels = tuple(int(c) for c in channels)
        self.pretrain_dim = int(pretrain_dim)
        self.embed_dim = int(embed_dim)
        final = adaptive_pool_matrix(len(self.channels) * self.pretrain_dim, self.embed_dim)
        self.matrices = []  # A_l, float64, (embed_dim, C_l * 9)
        for i, c in enumerate(self.channels):
            block = final[:, i * self.pretrain_dim : (i + 1) * self.pretrain_dim]
            self.matrices.append(block @ adaptive_pool_matrix(c * PATCH * PATCH, self.pretrain_dim))
        self._layers = [_LayerTaps(m) for m in self.matrices]

    def __call__(self, maps) -> torch.Tensor:
        """(B, embed_dim, H, W) embedding of ``maps`` (list or dict of (B, C_l, h_l, w_l)
        tensors, the first one on the output grid), in the maps' dtype and device."""
        maps = list(maps.values()) if isinstance(maps, dict) else list(maps)
        if len(maps) != len(self.channels) or any(m.shape[1] != c for m, c in zip(maps, self.channels, strict=True)):
            got = [tuple(m.shape) for m in maps]
            msg = f"maps must be {len(self.channels)} feature maps with {self.channels} channels; got shapes {got}"
            raise ValueError(msg)
        first = maps[0]
        batch, (height, width) = first.shape[0], first.shape[-2:]
        out = first.new_zeros((batch, self.embed_dim, height, width))
        for f, layer in zip(maps, self._layers, strict=True):
            h, w = f.shape[-2:]
            padded = F.pad(f, (1, 1, 1, 1))
            y = f.new_zeros((batch, len(layer.rows), h, w))
            for k, index, weight in layer.taps:
                ky, kx = divmod(k, PATCH)
                window = padded[:, :, ky : ky + h, kx : kx + w]
                index, weight = index.to(f.device), weight.to(device=f.device, dtype=f.dtype)
                for t in range(index.shape[0]):
                    y.addcmul_(window.index_select(1, index[t]), weight[t].view(1, -1, 1, 1))
            if (h, w) != (height, width):
                y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
            out.index_add_(1, layer.rows.to(f.device), y)
        return out

    def flops(self, grids) -> int:
        """Multiply-adds per image for layer grids ``[(h_l, w_l), ...]`` (for the benchmark)."""
        total = 0
        for layer, (h, w) in zip(self._layers, grids, strict=True):
            total += sum(index.shape[0] for _, index, _ in layer.taps) * len(layer.rows) * h * w
        return int(total)

