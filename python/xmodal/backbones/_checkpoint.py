"""Reading checkpoint files and loading them into a module with a clear account of every key."""

from __future__ import annotations

import dataclasses
import os
import pickle

import torch

from ._weights import find_weights

__all__ = ["LoadReport", "load_into", "load_registered", "read_state_dict"]


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What happened when a checkpoint was loaded into a backbone.

    Attributes:
        path: the file read (None for an in-memory state dict).
        loaded: number of tensors copied into the module.
        ignored: checkpoint keys deliberately not used (e.g. Point-MAE's decoder, a ViT head).
        implementation: for backbones with more than one implementation, which one runs
            ("timm" or "builtin"); otherwise "builtin".
    """

    path: str | None
    loaded: int
    ignored: tuple[str, ...] = ()
    implementation: str = "builtin"


def read_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict:
    """Reads a ``.safetensors`` file or a torch ``.pth``/``.pt`` file onto the CPU.

    ``.pth`` files are read with ``torch.load(weights_only=True)`` unless ``allow_pickle``: a
    checkpoint is data, and unpickling arbitrary objects runs code.

    Returns:
        the file's top-level mapping (a state dict, or a dict that contains one).

    Raises:
        ValueError: the file is not a readable checkpoint (the message names the file).
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            msg = f"weights file {path!r} is not a readable .safetensors file: {exc}"
            raise ValueError(msg) from exc
    if not _looks_like_torch_file(path):
        msg = f"weights file {path!r} is not a readable torch checkpoint (neither a zip archive nor a pickle)"
        raise ValueError(msg)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        msg = (
            f"weights file {path!r} could not be read with torch.load(weights_only=True): it is "
            "damaged, or holds Python objects besides tensors (pass allow_pickle=True only if you "
            f"trust the file). {str(exc).splitlines()[0]}"
        )
        raise ValueError(msg) from exc
    except Exception as exc:
        msg = f"weights file {path!r} is not a readable torch checkpoint: {exc}"
        raise ValueError(msg) from exc
    if not isinstance(obj, dict):
        msg = f"weights file {path!r} must hold a dict of tensors; got {type(obj).__name__}"
        raise ValueError(msg)
    return obj


def _looks_like_torch_file(path: str) -> bool:
    # torch.save writes a zip archive; files from torch < 1.6 are a raw pickle (protocol 2 opcode)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")


def load_into(module: torch.nn.Module, state_dict: dict, *, source: str, ignored=()) -> int:
    """Copies ``state_dict`` into ``module`` strictly: every module key present, no extra key,
    every shape equal. Returns the number of tensors copied.

    Raises:
        ValueError: naming ``source`` and the missing, unexpected or mis-shaped keys.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and (not torch.is_tensor(v) or tuple(v.shape) != tuple(own[k].shape))
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_preview(mismatched)}")
        note = f" (keys deliberately ignored: {_preview(list(ignored))})" if ignored else ""
        msg = f"weights from {source} do not fit {type(module).__name__}: " + "; ".join(parts) + note
        raise ValueError(msg)
    module.load_state_dict(state_dict, strict=True)
    return len(state_dict)


def load_registered(module: torch.nn.Module, name: str, weights, weights_dir, *,
                    allow_pickle: bool = False) -> LoadReport | None:
    """Finds the registry file for ``name`` (see :func:`find_weights`) and loads it strictly
    into ``module``; None when ``weights`` is None (random init)."""
    if weights is None:
        return None
    path = find_weights(name, weights, weights_dir)
    n = load_into(module, read_state_dict(path, allow_pickle=allow_pickle), source=path)
    return LoadReport(path, n)


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"[{shown}{more}]"
