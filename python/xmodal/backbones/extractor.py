"""Sample -> aligned 2D and 3D feature maps on the grid a method works on.

This is the feature pipeline CFM, M3DM and G2SF share (M3DM, Wang et al. CVPR 2023,
and its code), with the reference code's per-sample Python/CUDA pieces replaced by xmodal's
kernels:

- RGB: PIL bicubic resize to 224 (optionally CFM's edge-replicating square pad first), the
  backbone's normalisation, then DINO ViT-B/8 (28x28x768 from the final LayerNorm), or a CNN
  (EfficientNet-Lite0 stages 3+4, WideResNet-50-2 layer2+layer3) turned into PatchCore patch
  features (3x3 average, upsample, concatenate); bilinear resize to the grid.
- 3D, ``"pointmae"``: the organized cloud nearest-resized to 224, its valid points in raster
  order, FPS + kNN grouping (:func:`xmodal.ops.group_points`), the Point-MAE encoder (blocks
  3/7/11 -> 1152), 3-NN inverse-distance interpolation back to every point
  (:func:`xmodal.ops.three_nn_interpolate`), scatter to the 224 grid + 3x3 average pool +
  adaptive pool to the grid (:func:`xmodal.ops.points_to_grid`). Foreground = grid cells whose
  pooled 3D feature is not all zero, as in the reference code.
- 3D, ``"depth"``: BridgeNet's observation that one 2D backbone reads depth as well as RGB:
  the depth image of the resized cloud (:func:`xmodal.data.preprocess.depth_image`,
  background = the corner plane when the corners hold points, else the already removed
  background), as a 3-channel image through the same kind of 2D backbone. Foreground = cells
  holding a point of the object (off the background plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._arrays import integer, one_of
from ._features import create, normalize, patch_features

RGB_BACKBONES = ("dino_vitb8", "efficientnet_lite0", "wide_resnet50_2")
XYZ_BACKBONES = ("pointmae", "depth")
INPUT_SIZE = 224


@dataclass
class Features:
    """Aligned features of a batch of samples.

    Attributes:
        rgb: (B, C_rgb, G, G) float32 (None when "rgb" was not asked for).
        xyz: (B, C_xyz, G3, G3) float32 (G3 = ``xyz_grid``; None when "xyz" was not asked for).
        foreground: (B, G3, G3) bool: cells with 3D data (background cells of the reference
            code have an all-zero 3D feature); None with ``xyz``.
    """

    rgb: torch.Tensor | None
    xyz: torch.Tensor | None
    foreground: torch.Tensor | None


class FeatureExtractor:
    """Extracts aligned RGB and 3D feature maps from :class:`xmodal.data.Sample` objects.

    Args:
        rgb: "dino_vitb8", "efficientnet_lite0" or "wide_resnet50_2".
        xyz: "pointmae" or "depth" (the depth image through a second copy of the RGB backbone
            family; EfficientNet-Lite0 for the offline default).
        grid: side of the RGB feature grid (224 for CFM, 28 for a PatchCore RGB bank).
        xyz_grid: side of the 3D grid (default ``grid``; 56 for M3DM / PatchCore point banks).
        device: torch device for the backbones and the point kernels.
        weights_dir: folder with backbone weight files (else ``$XMODAL_WEIGHTS``); weights are
            looked up by :func:`xmodal.backbones.find_weights`. ``random_weights=True`` skips
            them (benchmarks, tests).
        square_pad: CFM's edge-replicating square pad before the RGB resize.
        rgb_depth: ViT blocks kept (CFM's pruning: 12 full, 8 M, 4 S, 1 T).
        pointmae_depth: Point-MAE blocks kept (same pruning).
        num_group, group_size: Point-MAE grouping (1024 x 128 in CFM / M3DM).
        reference_fps: pointnet2_ops' FPS rules (start 0, near-origin points skipped).
        reference_train_mode: Point-MAE with the reference repositories' train-mode BatchNorm
            and DropPath (they never call ``.eval()``).
    """

    def __init__(self, rgb: str = "efficientnet_lite0", xyz: str = "depth", grid: int = 224, *, xyz_grid=None,
                 device="cpu", weights_dir=None, random_weights: bool = False, square_pad: bool = False,
                 rgb_depth: int = 12, pointmae_depth: int = 12, num_group: int = 1024, group_size: int = 128,
                 reference_fps: bool = False, reference_train_mode: bool = False):
        one_of(rgb, "rgb", RGB_BACKBONES)
        one_of(xyz, "xyz", XYZ_BACKBONES)
        for name, value in (("grid", grid), ("xyz_grid", grid if xyz_grid is None else xyz_grid)):
            integer(value, name, minimum=1, maximum=INPUT_SIZE, expected=f"an int in [1, {INPUT_SIZE}]")
        self.rgb_name, self.xyz_name = rgb, xyz
        self.grid = grid
        self.xyz_grid = grid if xyz_grid is None else xyz_grid
        self.device = torch.device(device)
        self.square_pad = square_pad
        self.num_group, self.group_size = num_group, group_size
        self.reference_fps = reference_fps
        weights = None if random_weights else "auto"
        kwargs = {"depth": rgb_depth} if rgb == "dino_vitb8" else {}
        self.rgb_backbone = create(rgb, weights=weights, weights_dir=weights_dir, **kwargs).to(self.device).eval()
        if xyz == "pointmae":
            self.xyz_backbone = create("pointmae", weights=weights, weights_dir=weights_dir, depth=pointmae_depth,
                                       reference_train_mode=reference_train_mode).to(self.device).eval()
        else:
            # Same architecture and weights as the RGB backbone: BridgeNet reads depth with it too.
            self.xyz_backbone = self.rgb_backbone

    @property
    def rgb_channels(self) -> int:
        if self.rgb_name == "dino_vitb8":
            return 768
        return int(sum(self.rgb_backbone.out_channels))

    @property
    def xyz_channels(self) -> int:
        if self.xyz_name == "pointmae":
            return int(self.xyz_backbone.out_channels)
        return self.rgb_channels

    def describe(self) -> dict:
        """What runs, for model configs and reports."""
        info = {"rgb": self.rgb_name, "xyz": self.xyz_name, "grid": self.grid, "xyz_grid": self.xyz_grid,
                "rgb_channels": self.rgb_channels, "xyz_channels": self.xyz_channels}
        for key, module in (("rgb_weights", self.rgb_backbone), ("xyz_weights", self.xyz_backbone)):
            report = getattr(module, "load_report", None)
            info[key] = report.path if report is not None else "random"
        if hasattr(self.rgb_backbone, "implementation"):
            info["vit_implementation"] = self.rgb_backbone.implementation
        return info

    # --- extraction ------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, samples, modalities=("rgb", "xyz")) -> Features:
        """Features of one Sample or a list of Samples (processed as one batch).

        ``modalities`` names the feature maps to compute, "rgb" and/or "xyz"; the others are
        None in the result (single-modality methods skip the other backbone's cost).
        """
        from ..data import Sample

        modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if not modalities:
            msg = "modalities must name at least one of ('rgb', 'xyz'); got none"
            raise ValueError(msg)
        for m in modalities:
            one_of(m, "modalities", ("rgb", "xyz"))

        batch = [samples] if isinstance(samples, Sample) else list(samples)
        if not batch:
            msg = "samples must hold at least one Sample"
            raise ValueError(msg)
        for i, s in enumerate(batch):
            if not isinstance(s, Sample):
                msg = f"samples[{i}] must be an xmodal.data.Sample; got {type(s).__name__}"
                raise TypeError(msg)
        from ..data.preprocess import resize_organized

        rgb = self._rgb_features(batch) if "rgb" in modalities else None
        if "xyz" not in modalities:
            return Features(rgb=rgb, xyz=None, foreground=None)
        clouds = [resize_organized(s.xyz, INPUT_SIZE) for s in batch]
        if self.xyz_name == "pointmae":
            xyz = _stack_channels_last([self._pointmae_grid(c) for c in clouds])
            foreground = (xyz != 0).any(dim=1)  # the reference's "pooled feature sums to 0" test
        else:
            xyz, valid = self._depth_features(clouds)
            foreground = _downsample_any(valid, self.xyz_grid)
        return Features(rgb=rgb, xyz=xyz, foreground=foreground)

    def _images(self, arrays01: list[np.ndarray], backbone) -> torch.Tensor:
        x = torch.from_numpy(np.stack(arrays01)).permute(0, 3, 1, 2).to(self.device, torch.float32)
        return normalize(x, backbone)

    def _cnn_or_vit(self, images: torch.Tensor, backbone) -> torch.Tensor:
        if hasattr(backbone, "implementation") or type(backbone).__name__ == "DinoViT":
            return backbone(images)  # (B, 768, 28, 28)
        return patch_features(backbone(images), pool=3)

    def _rgb_features(self, batch) -> torch.Tensor:
        from ..data.preprocess import resize_rgb

        arrays = [resize_rgb(s.rgb, INPUT_SIZE, square=self.square_pad).astype(np.float32) / 255.0 for s in batch]
        feats = self._cnn_or_vit(self._images(arrays, self.rgb_backbone), self.rgb_backbone)
        return _resize(feats, self.grid)

    def _depth_features(self, clouds) -> tuple[torch.Tensor, torch.Tensor]:
        from ..data.preprocess import depth_image

        images, valid = [], []
        for cloud in clouds:
            depth, foreground = depth_image(cloud, background="auto")
            images.append(np.repeat(depth[..., None], 3, axis=2))
            valid.append(foreground)
        feats = self._cnn_or_vit(self._images(images, self.xyz_backbone), self.xyz_backbone)
        valid_t = torch.from_numpy(np.stack(valid)).to(self.device)
        return _resize(feats, self.xyz_grid), valid_t

    def _pointmae_grid(self, cloud: np.ndarray) -> torch.Tensor:
        from .. import ops

        valid = np.all(cloud != 0, axis=-1)
        pixels = np.flatnonzero(valid)
        if pixels.size < max(self.num_group, self.group_size):
            msg = (f"the point cloud has {pixels.size} valid points at {INPUT_SIZE}x{INPUT_SIZE}; Point-MAE "
                   f"grouping needs at least num_group={self.num_group} and group_size={self.group_size}")
            raise ValueError(msg)
        points = torch.from_numpy(np.ascontiguousarray(cloud.reshape(-1, 3)[pixels])).to(self.device)
        groups = ops.group_points(points, self.num_group, self.group_size, reference=self.reference_fps)
        feats = self.xyz_backbone(groups.neighbourhoods[None], groups.centers[None])[0]  # (1152, G)
        per_point = ops.three_nn_interpolate(points, groups.centers, feats.T.contiguous())
        pix = torch.from_numpy(pixels).to(self.device)
        grid = ops.points_to_grid(per_point, pix, INPUT_SIZE, INPUT_SIZE, out_size=self.xyz_grid, channels_last=True)
        if grid.shape[-1] != self.xyz_channels:  # the banks and mapping networks are sized by xyz_channels
            msg = (f"the Point-MAE backbone returned {grid.shape[-1]} channels per point; its out_channels says "
                   f"{self.xyz_channels}")
            raise RuntimeError(msg)
        return grid.permute(2, 0, 1)


# Feature maps leave the extractor as (B, C, G, G) views of channels-last memory: the methods
# read one pixel's feature vector as a contiguous row (``reshape(C, -1).T`` is then a view), so
# the 1152 x 224 x 224 grid is never transposed into a second copy.


def _stack_channels_last(maps: list[torch.Tensor]) -> torch.Tensor:
    """(C, H, W) views of channels-last memory -> (B, C, H, W), channels-last; no copy for B = 1."""
    if len(maps) == 1:
        return maps[0][None]
    return torch.stack([m.permute(1, 2, 0) for m in maps]).permute(0, 3, 1, 2)


def _linear_weights(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """(size_out, size_in): torch's 1D linear-interpolation weights (align_corners=False),
    read off by interpolating the identity, so they are exactly the ones F.interpolate uses."""
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.contiguous()


def _resize(feats: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, H, W) to (B, C, size, size), channels-last.

    Separable, as two small matrix products on the channels-last layout: F.interpolate would be
    several times slower on the ViT's token-major output and return channels-first memory.
    """
    if feats.shape[-1] == size and feats.shape[-2] == size:
        return feats
    b, c, h, w = feats.shape
    rows = torch.matmul(_linear_weights(w, size, feats), feats.permute(0, 2, 3, 1))  # (B, H, size, C)
    out = torch.matmul(_linear_weights(h, size, feats), rows.reshape(b, h, size * c))  # (B, size, size * C)
    return out.reshape(b, size, size, c).permute(0, 3, 1, 2)


def _downsample_any(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) bool -> (B, size, size): a cell is set when any pixel it covers is."""
    if mask.shape[-1] == size and mask.shape[-2] == size:
        return mask
    pooled = F.adaptive_avg_pool2d(mask[:, None].float(), (size, size))[:, 0]
    return pooled > 0
