"""8-connected component labelling of binary masks."""

from __future__ import annotations

from .. import _arrays
from .. import _map_sets as _maps
from ._dispatch import run_kernel


def connected_components(masks):
    """Labels the 8-connected foreground components of each mask.

    Membership equals ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))`` image by image
    (the connectivity MVTec's evaluation uses for ground-truth regions). Label ids are fixed:
    0 is background, and the components of each image are numbered 1..K in raster order of
    their first pixel (top-most row, then left-most column), on the CPU and on CUDA alike.
    Union-find in C++ (parallel over images) or on the GPU.

    Args:
        masks: (N, H, W) or (H, W) array, numpy or torch (CPU or CUDA); any nonzero value is
            foreground. bool, uint8 and int8 are used as they are; other dtypes are compared
            with 0 (a uint8 copy).

    Returns:
        (labels, num_components): labels int32 of the input's shape, same framework and
        device; num_components an int64 array (N,) of the same kind for (N, H, W) input, or
        a Python int for (H, W) input.

    Raises:
        TypeError: non-numeric input. ValueError: not 2 or 3 dimensions.
    """
    if isinstance(masks, (list, tuple)):
        msg = "masks must be one (N, H, W) or (H, W) array; got a list (stack equal-size masks first)"
        raise TypeError(msg)
    m = _maps.as_mask(_maps.host_or_cuda(masks, "masks"), "masks")
    if m.ndim not in (2, 3):
        msg = f"masks must have 2 or 3 dimensions ((H, W) or (N, H, W)); got shape {tuple(int(s) for s in m.shape)}"
        raise ValueError(msg)
    batch = m[None] if m.ndim == 2 else m
    kind = _arrays.kind_of(batch)
    labels = _arrays.empty(kind, tuple(batch.shape), "int32")
    num = _arrays.empty(kind, (batch.shape[0],), "int64")
    run_kernel("connected_components", kind, batch, labels, num)
    if _arrays.is_torch(masks) and not kind.torch:  # a CPU tensor was viewed as numpy
        import torch

        labels, num = torch.from_numpy(labels), torch.from_numpy(num)
    if m.ndim == 2:
        return labels[0], int(num[0])
    return labels, num
