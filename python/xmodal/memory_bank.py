"""A memory bank of normal patch features with exact nearest-neighbour queries."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import _arrays
from ._ops.coreset import coreset
from ._ops.knn import KnnResult, knn_prevalidated
from .io import atomic_path

FORMAT = "xmodal.MemoryBank/1"


class MemoryBank:
    """Normal features (rows) kept for nearest-neighbour scoring, as in PatchCore and M3DM.

    Args:
        features: (N, D) floating array, numpy or torch (CPU or CUDA); the bank keeps the
            framework and device.
        coreset_ratio: keep only a greedy coreset of this fraction of the rows (None: keep all).
        projection, proj_dim, start, seed: passed to :func:`xmodal.coreset`.
        dtype: "float32" or "float16" storage. float16 halves memory; distances are then exact
            distances to the float16-rounded features.

    Example:
        >>> bank = MemoryBank(train_patches, coreset_ratio=0.1)
        >>> dist, idx = bank.query(test_patches, k=1)
    """

    def __init__(
        self,
        features,
        *,
        coreset_ratio: float | None = None,
        projection: str | None = "sparse",
        proj_dim: int = 128,
        start: Any = "random",
        seed: int = 0,
        dtype: str = "float32",
    ):
        arr, kind = _arrays.as_float32(features, "features", ndim=2, shape_doc="(N, D)")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            msg = f"features must be a non-empty (N, D) matrix; got shape {tuple(arr.shape)}"
            raise ValueError(msg)
        _arrays.check_finite(arr, "features")
        if dtype not in ("float32", "float16"):
            msg = f"dtype must be 'float32' or 'float16'; got {dtype!r}"
            raise ValueError(msg)
        self.indices = None
        if coreset_ratio is not None:
            self.indices = coreset(
                arr, ratio=coreset_ratio, projection=projection, proj_dim=proj_dim, start=start, seed=seed
            )
            arr = arr[self.indices]
        self._kind = kind
        self.features = arr.half() if (dtype == "float16" and kind.torch) else (
            arr.astype(np.float16) if dtype == "float16" else arr
        )
        self.dtype = dtype
        self.config = {
            "coreset_ratio": coreset_ratio,
            "projection": projection,
            "proj_dim": proj_dim,
            "start": start,
            "seed": seed,
        }

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def query(self, x, k: int = 1) -> KnnResult:
        """Exact k nearest bank rows of every row of ``x`` (see :func:`xmodal.knn`).

        ``x`` must be of the bank's framework and device: (Q, D) floating.
        """
        q, kind = _arrays.as_float32(x, "x", ndim=2, shape_doc="(Q, D)")
        _arrays.check_same_kind(kind, self._kind, "x", "the memory bank")
        if q.shape[1] != self.dim:
            msg = f"x must have D={self.dim} columns like the bank; got {q.shape[1]}"
            raise ValueError(msg)
        k = _arrays.positive_int(k, "k", maximum=len(self), what="N=")
        _arrays.check_finite(q, "x")
        return knn_prevalidated(q, self.features, k, kind)

    def to_numpy(self) -> np.ndarray:
        return self.features.cpu().numpy() if self._kind.torch else self.features

    def save(self, path: str | os.PathLike) -> None:
        """Writes the bank as one safetensors file (no pickle), atomically."""
        from safetensors.numpy import save_file

        tensors = {"features": np.ascontiguousarray(self.to_numpy())}
        if self.indices is not None:
            idx = self.indices.cpu().numpy() if self._kind.torch else self.indices
            tensors["indices"] = np.ascontiguousarray(idx)
        metadata = {"format": FORMAT, "dtype": self.dtype, "config": json.dumps(self.config)}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = None) -> MemoryBank:
        """Reads a bank written by :meth:`save`; ``device`` (e.g. "cuda") returns a torch bank."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                msg = f"{os.fspath(path)} is not an xmodal memory bank (format {metadata.get('format')!r})"
                raise ValueError(msg)
            features = f.get_tensor("features")
            indices = f.get_tensor("indices") if "indices" in f.keys() else None
        bank = cls.__new__(cls)
        bank.dtype = metadata["dtype"]
        bank.config = json.loads(metadata["config"])
        if device is not None:
            import torch

            bank.features = torch.from_numpy(features).to(device)
            bank.indices = None if indices is None else torch.from_numpy(indices).to(device)
            bank._kind = _arrays.kind_of(bank.features)
        else:
            bank.features, bank.indices, bank._kind = features, indices, _arrays.ArrayKind(False)
        return bank

    def __repr__(self) -> str:
        return f"MemoryBank(n={len(self)}, dim={self.dim}, dtype={self.dtype}, {self._kind.describe()})"
