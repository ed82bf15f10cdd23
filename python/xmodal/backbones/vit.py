"""DINO ViT-B/8 (timm ``vit_base_patch8_224.dino``): patch tokens of the final LayerNorm.

Patch 8, width 768, 12 blocks × 12 heads (MLP ratio 4, qkv bias, LayerNorm eps 1e-6), a class
token and a learned position embedding for 28 × 28 + 1 tokens. The feature map is the output of
the final ``norm`` with the class token dropped: (B, 768, 28, 28) for a 224 × 224 input, as CFM,
M3DM and G2SF read it. Pruning keeps the first 1 / 4 / 8 / 12 blocks (CFM's Ours-T / S / M /
full) and still applies the final norm.

Two implementations with the same weights and output:

* ``"timm"``: ``timm.create_model("vit_base_patch8_224.dino", pretrained=False)`` when timm
  can be imported (the reference repositories' path);
* ``"builtin"``: the same network in plain torch, with timm's parameter names (``cls_token``,
  ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1`` / ``attn.qkv`` / ``attn.proj`` /
  ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``, ``norm``), used when timm is missing or broken.

Checkpoints (local files only): timm's ``model.safetensors`` / ``.pth`` for this model, and the
original DINO ``dino_vitbase8_pretrain.pth`` — DINO's names are timm's, so both load as they are.
DINO's full training checkpoint (``{"teacher": {"backbone.…"}}``) is accepted too: the teacher
backbone is used and its projection head ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._arrays import integer, one_of
from ._checkpoint import LoadReport, load_into, read_state_dict
from ._layers import Block, check_images
from ._weights import find_weights

__all__ = ["DinoViT", "VisionTransformer", "convert_vit_checkpoint", "dino_vitb8", "timm_available"]

PATCH = 8
DIM = 768
FULL_DEPTH = 12
HEADS = 12
GRID = 28  # 224 / 8
TIMM_NAME = "vit_base_patch8_224.dino"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Built-in ViT-B/8 with timm's parameter names (random init; see :func:`dino_vitb8`)."""

    implementation = "builtin"

    def __init__(self, depth: int = FULL_DEPTH):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, DIM) * 0.02)
        self.patch_embed = PatchEmbed()
        self.blocks = nn.Sequential(*(Block(DIM, HEADS, qkv_bias=True, eps=1e-6) for _ in range(depth)))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        if (h, w) == (GRID, GRID):
            return self.pos_embed
        # Other input sizes: bicubic resampling of the 28 × 28 grid, as timm's
        # resample_abs_pos_embed does for dynamic image sizes.
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, DIM).to(cls_pos.dtype)
        return torch.cat([cls_pos, grid], dim=1)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // PATCH, x.shape[3] // PATCH
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self._pos_embed(h, w)
        return self.norm(self.blocks(x))


class DinoViT(nn.Module):
    """DINO ViT-B/8 feature extractor: (B, 3, H, W) ImageNet-normalised images → (B, 768, H/8, W/8).

    Built by :func:`dino_vitb8`. ``implementation`` is ``"timm"`` or ``"builtin"``; ``depth``
    the number of blocks kept; ``load_report`` what was loaded.
    """

    mean = MEAN
    std = STD
    out_channels = DIM
    stride = PATCH

    def __init__(self, vit: nn.Module, implementation: str, depth: int):
        super().__init__()
        self.vit = vit
        self.implementation = implementation
        self.depth = depth
        self.load_report: LoadReport | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args:
            images: (B, 3, H, W) float tensor, ImageNet-normalised; H and W multiples of 8
                (224 for the published models).

        Returns:
            (B, 768, H/8, W/8) float tensor: final-LayerNorm patch tokens, class token dropped.
        """
        x = check_images(images, self, multiple=PATCH, min_size=PATCH)
        h, w = x.shape[2] // PATCH, x.shape[3] // PATCH
        tokens = self.vit.forward_features(x) if self.implementation == "timm" else self.vit.forward_tokens(x)
        return tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], DIM, h, w)


def timm_available() -> bool:
    """True when timm imports and knows ``vit_base_patch8_224.dino``."""
    try:
        import timm

        return bool(timm.is_model(TIMM_NAME))
    except Exception:  # timm missing, or broken by an incompatible torchvision
        return False


def _create_timm(depth: int) -> nn.Module:
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, dynamic_img_size=True)
    model.blocks = model.blocks[:depth]
    return model


def dino_vitb8(depth: int = FULL_DEPTH, *, weights=None, weights_dir=None, implementation: str = "auto",
               allow_pickle: bool = False) -> DinoViT:
    """Builds the DINO ViT-B/8 feature extractor (eval mode).

    Args:
        depth: blocks kept, 1..12 (CFM: 12 full, 8 Ours-M, 4 Ours-S, 1 Ours-T).
        weights: None (random init), ``"auto"`` (look up the registry file names via
            ``weights_dir`` / ``$XMODAL_WEIGHTS``) or a checkpoint path (``.safetensors`` or
            ``.pth``). Nothing is downloaded.
        weights_dir: folder searched for ``"auto"``.
        implementation: ``"auto"`` (timm when importable, else built-in), ``"timm"`` or
            ``"builtin"``.
        allow_pickle: allow ``.pth`` files that hold Python objects besides tensors.

    Returns:
        a :class:`DinoViT`; its ``implementation`` says which one runs.
    """
    integer(depth, "depth", minimum=1, maximum=FULL_DEPTH, expected=f"an int in [1, {FULL_DEPTH}]")
    one_of(implementation, "implementation", ("auto", "timm", "builtin"))
    path = find_weights("dino_vitb8", weights, weights_dir) if weights is not None else None
    vit, impl = None, "builtin"
    if implementation in ("auto", "timm"):
        try:
            vit, impl = _create_timm(FULL_DEPTH), "timm"
        except Exception as exc:
            if implementation == "timm":
                msg = f"implementation='timm' but timm cannot build {TIMM_NAME}: {exc}"
                raise RuntimeError(msg) from exc
    if vit is None:
        vit = VisionTransformer(FULL_DEPTH)
    model = DinoViT(vit, impl, depth)
    if path is not None:
        state, ignored = convert_vit_checkpoint(read_state_dict(path, allow_pickle=allow_pickle))
        n = load_into(vit, state, source=path, ignored=ignored)
        model.load_report = LoadReport(path, n, tuple(ignored), impl)
    else:
        model.load_report = LoadReport(None, 0, (), impl)
    # Loaded with all 12 blocks so a full checkpoint fits strictly; then pruned.
    vit.blocks = vit.blocks[:depth]
    return model.eval()


def convert_vit_checkpoint(checkpoint: dict) -> tuple[dict, list[str]]:
    """timm / DINO checkpoint → timm parameter names.

    Accepts a plain state dict (timm, DINO backbone release), ``{"model": …}`` /
    ``{"state_dict": …}`` wrappers and DINO's full training checkpoint (``{"teacher": …}``,
    keys ``module.backbone.*``). Classification / projection heads (``head.*``) are ignored.

    Returns:
        (state dict, sorted list of ignored keys).
    """
    for wrapper in ("teacher", "model", "state_dict"):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    state, ignored = {}, []
    for key, value in checkpoint.items():
        name = key
        for prefix in ("module.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith("head.") or name.startswith("head_"):
            ignored.append(key)
        else:
            state[name] = value
    return state, sorted(ignored)
