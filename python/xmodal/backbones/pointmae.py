"""Point-MAE encoder as the multimodal AD methods use it (CFM, M3DM, G2SF): grouped points in,
one 1152-d feature per group out.

Architecture (Point-MAE, Pang et al. ECCV 2022, as M3DM uses it):

* mini-PointNet per group of S points: Conv1d 3→128 + BN + ReLU + Conv1d 128→256, max over the
  points → global 256-d; concat [global broadcast, local] = 512 per point; Conv1d 512→512 + BN +
  ReLU + Conv1d 512→384, max over the points → one 384-d token per group;
* positional embedding of the group centers: Linear 3→128 + GELU + Linear 128→384, added to the
  tokens before *every* block;
* 12 pre-norm transformer blocks (384-d, 6 heads, MLP ratio 4, no qkv bias, drop-path rates
  linspace(0, 0.1, 12));
* one shared final LayerNorm applied to the outputs of blocks 3, 7 and 11 (0-based), concatenated
  → 3 × 384 = 1152 channels per group. Pruned variants (CFM's layer pruning) keep the first 8
  blocks and read [1, 4, 7] (Ours-M), or the first 4 and read [1, 2, 3] (Ours-S); any other
  depth reads only its last block, 384 channels (Ours-T: 1 block).

Module names follow the official checkpoint (``encoder.first_conv.0``, ``pos_embed.0``,
``blocks.blocks.N.attn.qkv``, ``norm``, …), so Point-MAE's ``pretrain.pth`` loads as it is.

Grouping (FPS centers + k nearest neighbours, centred) is not done here; it is
``xmodal.ops.group_points``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .._arrays import integer
from ._checkpoint import LoadReport, load_into, read_state_dict
from ._layers import Block, DropPath, check_tensor, to_module
from ._weights import find_weights

__all__ = ["DEFAULT_OUT_INDICES", "PointMAE", "convert_pointmae_checkpoint"]

DIM = 384
FULL_DEPTH = 12
HEADS = 6
DROP_PATH_MAX = 0.1

#: blocks whose normalised outputs are concatenated, per number of blocks kept (CFM's choice;
#: other depths: the last block only)
DEFAULT_OUT_INDICES = {12: (3, 7, 11), 8: (1, 4, 7), 4: (1, 2, 3)}


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that can normalise with the batch's own statistics while in eval mode, without
    touching the running statistics (the reference repositories never call ``.eval()``)."""

    use_batch_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_batch_stats and not self.training:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


class PointEncoder(nn.Module):
    """Mini-PointNet: (B, G, S, 3) centred groups → (B, G, out_dim) tokens.

    The 1×1 convolutions run as matrix products on points-major (channels-last) data, and the
    first layer of ``second_conv`` is split: its input is [global feature, local feature], so
    the global half is applied once per group instead of once per point (a quarter of the
    encoder's work, and no 512-channel concatenation). With running statistics the BatchNorms
    are folded into the preceding layers and the groups go in chunks of about ``chunk_points``
    points, bounding memory; with batch statistics (training, reference train mode) the
    BatchNorms run as such over all groups at once, since their statistics span them all.
    """

    def __init__(self, out_dim: int = DIM, chunk_points: int = 32768):
        super().__init__()
        self.out_dim = out_dim
        self.chunk_points = chunk_points
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), _BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), _BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, out_dim, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, s, _ = groups.shape
        pts = groups.reshape(b * g, s, 3)
        fold = not (self.training or self.first_conv[1].use_batch_stats)
        step = max(1, self.chunk_points // s) if fold else b * g
        tokens = [self._tokens(pts[i : i + step], fold) for i in range(0, b * g, step)]
        return torch.cat(tokens).reshape(b, g, self.out_dim)

    @staticmethod
    def _conv_bn(conv: nn.Conv1d, bn: nn.BatchNorm1d, fold: bool):
        """Weight and bias of a 1×1 conv, with an eval-mode BatchNorm after it folded in."""
        w, b = conv.weight[:, :, 0], conv.bias
        if not fold:
            return w, b
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return w * scale[:, None], (b - bn.running_mean) * scale + bn.bias

    def _tokens(self, pts: torch.Tensor, fold: bool) -> torch.Tensor:
        n, s, _ = pts.shape
        conv0, bn0, _, conv1 = self.first_conv
        w0, b0 = self._conv_bn(conv0, bn0, fold)
        h = F.linear(pts.reshape(n * s, 3), w0, b0)
        h = (h if fold else bn0(h)).relu_()
        local = F.linear(h, conv1.weight[:, :, 0], conv1.bias)  # (n·s, 256)
        glob = local.view(n, s, -1).amax(dim=1)  # (n, 256)
        conv2, bn1, _, conv3 = self.second_conv
        w2, b2 = self._conv_bn(conv2, bn1, fold)
        k = glob.shape[1]
        z = F.linear(local, w2[:, k:]).view(n, s, -1).add_(F.linear(glob, w2[:, :k], b2)[:, None]).view(n * s, -1)
        z = (z if fold else bn1(z)).relu_()
        return F.linear(z, conv3.weight[:, :, 0], conv3.bias).view(n, s, -1).amax(dim=1)


class TransformerEncoder(nn.Module):
    """The block stack; a module of its own so the checkpoint's ``blocks.blocks.N`` keys fit."""

    def __init__(self, depth: int):
        super().__init__()
        rates = torch.linspace(0, DROP_PATH_MAX, FULL_DEPTH)[:depth].tolist()
        self.blocks = nn.ModuleList(
            Block(DIM, HEADS, qkv_bias=False, drop_path=rate, eps=1e-5) for rate in rates
        )


class PointMAE(nn.Module):
    """Point-MAE encoder: centred point groups and their centers → per-group features.

    Args:
        depth: transformer blocks kept (the first ``depth`` of 12); 12, 8, 4 and 1 are CFM's
            full, Ours-M, Ours-S and Ours-T models.
        out_indices: 0-based blocks whose LayerNorm'd outputs are concatenated. Default: CFM's
            choice for ``depth`` (12: (3, 7, 11), 8: (1, 4, 7), 4: (1, 2, 3), otherwise the last
            block alone).
        reference_train_mode: reproduce the reference repositories, which never switch the
            extractor to eval mode: the encoder's BatchNorms use each cloud's own statistics
            (over its G × S points) and DropPath drops residual branches at random (torch's
            global generator; seed it for repeatable output). Default False: eval mode,
            deterministic, running statistics.
        weights: None (random init), ``"auto"`` (look up ``pointmae_pretrain.pth`` via
            ``weights_dir`` / ``$XMODAL_WEIGHTS``) or a checkpoint path.
        weights_dir: folder searched for ``"auto"``.
        allow_pickle: allow checkpoints that hold Python objects besides tensors (only for
            files you trust).

    The module is in eval mode after construction. ``load_report`` says what was loaded and
    which checkpoint keys (decoder, mask token, pruned blocks) were ignored.
    """

    def __init__(self, depth: int = FULL_DEPTH, out_indices=None, *, reference_train_mode: bool = False,
                 weights=None, weights_dir=None, allow_pickle: bool = False):
        super().__init__()
        integer(depth, "depth", minimum=1, maximum=FULL_DEPTH, expected=f"an int in [1, {FULL_DEPTH}]")
        if out_indices is None:
            out_indices = DEFAULT_OUT_INDICES.get(depth, (depth - 1,))
        try:
            out_indices = tuple(int(i) for i in out_indices)
        except TypeError as exc:
            msg = f"out_indices must be a sequence of block indices; got {out_indices!r}"
            raise TypeError(msg) from exc
        if not out_indices or any(not 0 <= i < depth for i in out_indices):
            msg = f"out_indices must be a non-empty list of block indices in [0, {depth - 1}]; got {out_indices}"
            raise ValueError(msg)
        self.depth = depth
        self.out_indices = out_indices
        self.encoder = PointEncoder(DIM)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, DIM))
        self.blocks = TransformerEncoder(depth)
        self.norm = nn.LayerNorm(DIM)
        self.load_report: LoadReport | None = None
        self.reference_train_mode = reference_train_mode
        self.eval()
        if weights is not None:
            self.load_checkpoint(find_weights("pointmae", weights, weights_dir), allow_pickle=allow_pickle)

    @property
    def out_channels(self) -> int:
        return DIM * len(self.out_indices)

    @property
    def reference_train_mode(self) -> bool:
        return self._reference_train_mode

    @reference_train_mode.setter
    def reference_train_mode(self, value: bool) -> None:
        self._reference_train_mode = bool(value)
        for m in self.modules():
            if isinstance(m, _BatchNorm1d):
                m.use_batch_stats = self._reference_train_mode
            elif isinstance(m, DropPath):
                m.force_active = self._reference_train_mode

    def forward(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Features of point groups.

        Args:
            neighborhoods: (B, G, S, 3) float tensor, each group's S points minus its center.
            centers: (B, G, 3) float tensor, the group centers.

        Returns:
            (B, out_channels, G) float tensor (out_channels = 1152 for the default blocks),
            in the module's dtype and device.
        """
        neighborhoods, centers = self._check_inputs(neighborhoods, centers)
        if self._reference_train_mode and not self.training and neighborhoods.shape[0] > 1:
            # Batch statistics per cloud, as the batch-1 reference code computes them.
            return torch.cat([self._forward(n[None], c[None]) for n, c in zip(neighborhoods, centers, strict=False)])
        return self._forward(neighborhoods, centers)

    def _forward(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        x = self.encoder(neighborhoods)
        pos = self.pos_embed(centers)
        wanted = set(self.out_indices)
        outputs = {}
        for i, block in enumerate(self.blocks.blocks[: max(self.out_indices) + 1]):
            x = block(x + pos)
            if i in wanted:
                outputs[i] = self.norm(x)
        return torch.cat([outputs[i] for i in self.out_indices], dim=2).transpose(1, 2).contiguous()

    def _check_inputs(self, neighborhoods, centers):
        check_tensor(neighborhoods, "neighborhoods", "(B, G, S, 3)", 4)
        check_tensor(centers, "centers", "(B, G, 3)", 3)
        b, g, s, d = neighborhoods.shape
        if d != 3 or b == 0 or g == 0 or s == 0:
            msg = f"neighborhoods must have shape (B, G, S, 3) with B, G, S >= 1; got {tuple(neighborhoods.shape)}"
            raise ValueError(msg)
        if tuple(centers.shape) != (b, g, 3):
            msg = (f"centers must have shape (B, G, 3) = ({b}, {g}, 3) to match neighborhoods; "
                   f"got {tuple(centers.shape)}")
            raise ValueError(msg)
        neighborhoods = to_module(neighborhoods, self, "neighborhoods")
        centers = to_module(centers, self, "centers")
        for name, t in (("neighborhoods", neighborhoods), ("centers", centers)):
            if not bool(torch.isfinite(t).all()):
                msg = f"{name} contains NaN or infinite values"
                raise ValueError(msg)
        return neighborhoods, centers

    def load_checkpoint(self, checkpoint, *, allow_pickle: bool = False) -> LoadReport:
        """Loads an official Point-MAE checkpoint (or a state dict in this module's names).

        Args:
            checkpoint: path of ``pretrain.pth``-style file, or the dict it holds.
            allow_pickle: see the class docstring.

        Returns:
            the :class:`LoadReport` (also kept as ``self.load_report``).

        Raises:
            ValueError: an encoder weight is missing or has the wrong shape.
        """
        path = None
        if isinstance(checkpoint, (str, os.PathLike)):
            path = os.fspath(checkpoint)
            checkpoint = read_state_dict(path, allow_pickle=allow_pickle)
        state, ignored = convert_pointmae_checkpoint(checkpoint, self.state_dict().keys())
        n = load_into(self, state, source=path or "the given state dict", ignored=ignored)
        self.load_report = LoadReport(path, n, tuple(ignored))
        return self.load_report


def convert_pointmae_checkpoint(checkpoint: dict, model_keys) -> tuple[dict, list[str]]:
    """Maps a Point-MAE checkpoint to encoder keys, as the AD repositories'
    ``load_model_from_ckpt`` does: take ``checkpoint["base_model"]`` (when present), drop a
    ``module.`` prefix (DataParallel), strip ``MAE_encoder.`` or ``base_model.``.

    Returns:
        (state dict restricted to ``model_keys``, sorted list of the checkpoint keys ignored:
        decoder, mask token, reconstruction head, blocks beyond the kept depth).
    """
    source = checkpoint.get("base_model", checkpoint)
    if not isinstance(source, dict):
        msg = f"checkpoint['base_model'] must be a dict of tensors; got {type(source).__name__}"
        raise ValueError(msg)
    model_keys = set(model_keys)
    state, ignored = {}, []
    for key, value in source.items():
        name = key.replace("module.", "")
        for prefix in ("MAE_encoder.", "base_model."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name in model_keys:
            state[name] = value
        else:
            ignored.append(key)
    return state, sorted(ignored)
