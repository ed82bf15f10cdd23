"""A memory bank of normal features with exact nearest-neighbour queries, built in one shot or
streamed under a memory budget."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _arrays
from ._bank_build import BankBuilder
from .io import atomic_path
from .ops import KnnResult, coreset, knn

__all__ = ["FORMAT", "MemoryBank", "MemoryBankBuilder"]

FORMAT = "xmodal.MemoryBank/1"
DTYPES = ("float32", "float16")
HALF_MAX = 65504.0  # the largest finite float16


class MemoryBank:
    """Normal features (rows) kept for nearest-neighbour scoring, as in PatchCore, M3DM and G2SF.

    Queries are exact for any k: the result equals :func:`xmodal.knn` against the bank (float64
    distances rounded to float32, ties to the lower bank index). Wide banks (D >= 256, N >=
    2048) are searched through a lower bound in a few principal directions that rules out most
    rows before the exact re-ranking (see ``xmodal._bank_search``); this needs torch loaded in
    the process (always the case for torch banks; numpy banks without torch use the plain
    search, with the same result). Queries never change torch's thread settings and may come
    from several threads at once.

    Build a bank from features in memory with the constructor, or stream the rows in with
    :meth:`builder` / :meth:`build` (one-shot exact coreset with the raw rows in a temporary
    file, or a merge-reduce coreset under ``max_memory``).

    Args:
        features: (N, D) floating array, numpy or torch (CPU or CUDA); the bank keeps the
            framework and device, and the coreset runs there.
        coreset_ratio: keep only a greedy coreset of this fraction of the rows (None: keep all).
        projection, proj_dim, start, seed: passed to :func:`xmodal.coreset`.
        dtype: "float32" or "float16" storage. float16 halves memory; distances are then exact
            distances to the float16-rounded features.
        rank: principal directions of the search's lower bound (None: chosen from D; 0: plain
            exact search).
        candidates: rows screened by the lower bound per query (at least 2k are).

    Attributes:
        features: the (n, D) bank rows.
        indices: positions of the rows among the input rows (None when the constructor kept
            every row).
        statistics: {"rows", "mean", "std"} of every training value (mean and unbiased std, as
            M3DM's scalar normalisation), for banks made by :meth:`builder`; else None.

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
        rank: int | None = None,
        candidates: int = 32,
    ):
        arr, kind = _arrays.as_float32(features, "features", ndim=2, shape_doc="(N, D)")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            msg = f"features must be a non-empty (N, D) matrix; got shape {tuple(arr.shape)}"
            raise ValueError(msg)
        _arrays.check_finite(arr, "features")
        _arrays.one_of(dtype, "dtype", DTYPES)
        indices = None
        if coreset_ratio is not None:
            indices = coreset(
                arr, ratio=coreset_ratio, projection=projection, proj_dim=proj_dim, start=start, seed=seed
            )
            arr = arr[indices]
        config = {"coreset_ratio": coreset_ratio, "projection": projection, "proj_dim": proj_dim, "start": start,
                  "seed": seed}
        self._setup(arr, kind, indices, dtype, config, _search_options(rank, candidates), None)

    def _setup(self, features, kind: _arrays.ArrayKind, indices, dtype: str, config: dict, search: dict,
               statistics: dict | None) -> None:
        self._kind = kind
        if dtype == "float16":
            _check_half_range(features)
            features = features.half() if kind.torch else features.astype(np.float16)
        self.features, self.indices, self.dtype = features, indices, dtype
        self.config = {**config, **search}
        self.statistics = statistics
        self._search = None
        self._search_lock = threading.Lock()

    # --- streaming build ------------------------------------------------------------------
    @classmethod
    def builder(cls, dim: int, max_rows: int, **options) -> MemoryBankBuilder:
        """A :class:`MemoryBankBuilder`: add rows with ``add(rows)``, then ``finish()`` -> bank.

        Args:
            dim: feature dimension D.
            max_rows: upper bound of the rows that will be added (e.g. images x grid cells);
                it sizes the buffers and, for the "sparse" projection, the JL dimension.
            **options: see :class:`MemoryBankBuilder`.
        """
        return MemoryBankBuilder(dim, max_rows, **options)

    @classmethod
    def build(cls, batches: Iterable, max_rows: int, **options) -> MemoryBank:
        """A bank from an iterable of (r, D) row batches (numpy or CPU torch), never stacked.

        Args:
            batches: the rows, a few at a time (e.g. one image's patches per batch).
            max_rows: upper bound of the total number of rows.
            **options: see :class:`MemoryBankBuilder`.
        """
        builder = None
        try:
            for i, rows in enumerate(batches):
                if not (isinstance(rows, np.ndarray) or _arrays.is_torch(rows)):
                    msg = f"batches[{i}] must be an (r, D) numpy array or torch tensor; got {type(rows).__name__}"
                    raise TypeError(msg)
                if _arrays.is_torch(rows):
                    _arrays.check_device(rows, f"batches[{i}]")
                if builder is None:
                    shape = tuple(rows.shape)
                    if len(shape) != 2:
                        msg = f"every batch must be an (r, D) matrix; got shape {shape}"
                        raise ValueError(msg)
                    builder = cls.builder(shape[1], max_rows, **options)
                builder.add(rows)
            if builder is None:
                msg = "batches must hold at least one (r, D) batch of rows; got none"
                raise ValueError(msg)
            return builder.finish()
        finally:
            if builder is not None:
                builder.close()

    # --- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def search_stats(self) -> dict:
        """{"queries": rows queried, "fallback": rows the pruned search sent to the full scan}."""
        return dict(self._search.stats) if self._search is not None else {"queries": 0, "fallback": 0}

    def query(self, x, k: int = 1) -> KnnResult:
        """Exact k nearest bank rows of every row of ``x``: equal to ``xmodal.knn(x, bank, k)``.

        ``x`` must be of the bank's framework and device: (Q, D) floating.
        """
        q, kind = _arrays.as_float32(x, "x", ndim=2, shape_doc="(Q, D)")
        _arrays.check_same_kind(kind, self._kind, "x", "the memory bank")
        if q.shape[1] != self.dim:
            msg = f"x must have D={self.dim} columns like the bank; got {q.shape[1]}"
            raise ValueError(msg)
        k = _arrays.positive_int(k, "k", maximum=len(self), what="N=")
        _arrays.check_finite(q, "x")
        search = self._searcher()
        if search is None:
            return knn(q, self.features, k)
        if kind.torch:
            return KnnResult(*search(q, k))
        torch = _arrays._torch()
        dist, idx = search(torch.from_numpy(q), k)
        return KnnResult(dist.numpy(), idx.numpy())

    def _searcher(self):
        """The pruned search, built on first use (None without torch: plain exact kNN)."""
        if self._search is None and "torch" in sys.modules:
            with self._search_lock:
                if self._search is None:
                    from ._bank_search import PrunedSearch

                    torch = _arrays._torch()
                    bank = self.features if self._kind.torch else torch.from_numpy(self.features)
                    self._search = PrunedSearch(bank, rank=self.config.get("rank"),
                                                candidates=self.config.get("candidates", 32))
        return self._search

    # --- persistence ----------------------------------------------------------------------
    def to_numpy(self) -> np.ndarray:
        return self.features.cpu().numpy() if self._kind.torch else self.features

    def save(self, path: str | os.PathLike) -> None:
        """Writes the bank as one safetensors file (no pickle), atomically."""
        from safetensors.numpy import save_file

        tensors = {"features": np.ascontiguousarray(self.to_numpy())}
        if self.indices is not None:
            idx = self.indices.cpu().numpy() if _arrays.is_torch(self.indices) else self.indices
            tensors["indices"] = np.ascontiguousarray(idx)
        metadata = {"format": FORMAT, "dtype": self.dtype, "config": json.dumps(self.config)}
        if self.statistics is not None:
            metadata["statistics"] = json.dumps(self.statistics)
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = None) -> MemoryBank:
        """Reads a bank written by :meth:`save`; ``device`` (e.g. "cuda") returns a torch bank.

        Raises:
            FileNotFoundError: no such file.
            ValueError: (one line naming the file) not an xmodal memory bank, or a truncated or
                tampered one: unreadable, arrays of the wrong shape/dtype, NaN/inf, bad metadata.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"memory bank not found: {path}")
        features, indices, metadata, config, statistics = _read_bank(path)
        kind = _arrays.ArrayKind(False)
        if device is not None:
            import torch

            features = torch.from_numpy(features).to(device)
            indices = None if indices is None else torch.from_numpy(indices).to(device)
            kind = _arrays.kind_of(features)
        bank = cls.__new__(cls)
        search = {"rank": config.pop("rank", None), "candidates": config.pop("candidates", 32)}
        bank._setup(features, kind, indices, metadata["dtype"], config, search, statistics)
        return bank

    def __repr__(self) -> str:
        return f"MemoryBank(n={len(self)}, dim={self.dim}, dtype={self.dtype}, {self._kind.describe()})"


def _read_bank(path: str):
    """(features, indices or None, metadata, config, statistics) of a bank file, each checked:
    a damaged file gives one ValueError that names it instead of a crash or a wrong bank later."""
    from safetensors import safe_open

    def corrupt(what: str) -> ValueError:
        return ValueError(f"corrupt memory bank {path}: {what}")

    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                msg = f"{path} is not an xmodal memory bank (format {metadata.get('format')!r})"
                raise ValueError(msg)
            if "features" not in f.keys():
                raise corrupt("the array 'features' is missing")
            features = f.get_tensor("features")
            indices = f.get_tensor("indices") if "indices" in f.keys() else None
        config = json.loads(metadata.get("config", "null"))
        statistics = json.loads(metadata["statistics"]) if "statistics" in metadata else None
    except json.JSONDecodeError as exc:
        raise corrupt(f"metadata is not valid JSON ({exc})") from exc
    except ValueError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated/garbage files
        text = str(exc).strip().splitlines()
        raise corrupt(f"{type(exc).__name__}: {text[0] if text else ''}") from exc
    dtype = metadata.get("dtype")
    if dtype not in DTYPES or str(features.dtype) != dtype:
        raise corrupt(f"dtype {dtype!r} with features of dtype {features.dtype}; expected one of {DTYPES}")
    if features.ndim != 2 or 0 in features.shape:
        raise corrupt(f"features must be a non-empty (N, D) matrix; got shape {features.shape}")
    if not np.isfinite(features).all():
        raise corrupt("features hold NaN or infinity")
    if indices is not None and (indices.dtype.kind not in "iu" or indices.shape != (features.shape[0],)):
        raise corrupt(f"indices must be ({features.shape[0]},) integers; got {indices.dtype} {indices.shape}")
    if not isinstance(config, dict) or not (statistics is None or isinstance(statistics, dict)):
        raise corrupt("the config/statistics metadata must be JSON objects")
    return features, indices, metadata, config, statistics


def _check_half_range(features) -> None:
    """A float16 bank rounds values beyond 65504 to infinity: refuse instead of failing later
    (or, worse, searching a bank of infinities)."""
    top = float(features.abs().max()) if _arrays.is_torch(features) else float(np.abs(features).max())
    if top > HALF_MAX:
        msg = (f"features hold values up to {top:.3g}, beyond float16's range (+-{HALF_MAX:g}): "
               "use dtype='float32' (or scale the features)")
        raise ValueError(msg)


def _search_options(rank, candidates) -> dict:
    return {"rank": _arrays.integer(rank, "rank", minimum=0, allow_none=True),
            "candidates": _arrays.positive_int(candidates, "candidates")}


class MemoryBankBuilder(BankBuilder):
    """Streams rows into a :class:`MemoryBank` (made by :meth:`MemoryBank.builder`).

    Feed rows with :meth:`add` (numpy or CPU torch, (r, D)), read :meth:`statistics` at any time,
    and call :meth:`finish` once. Use as a context manager (or call :meth:`close`) so that the
    temporary file of the one-shot mode is removed on errors.

    Args:
        dim, max_rows: see :meth:`MemoryBank.builder`.
        coreset_ratio: fraction of the rows kept, in (0, 1]: n = max(1, int(rows * ratio)) as
            anomalib and M3DM count; None keeps every row.
        projection, proj_dim, seed: as in :func:`xmodal.coreset` (start "random").
        max_memory: bytes for the kept rows plus one streaming chunk (raw and projected rows,
            and the coreset kernel's state); selects the streaming merge-reduce coreset with the
            largest chunk that fits. None (and no ``chunk_rows``): the exact one-shot coreset,
            with only the projected rows in RAM and the raw rows in a temporary file.
        chunk_rows: the streaming chunk size in rows, instead of ``max_memory``.
        spill_dir: folder of the one-shot temporary file (default: the system's).
        device: None: the bank is a numpy array; "cpu" / "cuda[:N]" / a torch.device: a torch
            tensor there. With a CUDA device the greedy selections run on the device.
        dtype, rank, candidates: as in :class:`MemoryBank`.

    Raises:
        ValueError: ``max_memory`` too small for the kept rows and one row of a chunk, or both
            ``max_memory`` and ``chunk_rows`` given.
    """

    def __init__(self, dim: int, max_rows: int, *, coreset_ratio: float | None = None, projection="sparse",
                 proj_dim: int = 128, seed: int = 0, max_memory: int | None = None, chunk_rows: int | None = None,
                 spill_dir=None, device=None, dtype: str = "float32", rank: int | None = None,
                 candidates: int = 32):
        _arrays.one_of(dtype, "dtype", DTYPES)
        search = _search_options(rank, candidates)
        dim, max_rows = _arrays.positive_int(dim, "dim"), _arrays.positive_int(max_rows, "max_rows")
        max_memory = _arrays.integer(max_memory, "max_memory", minimum=1, allow_none=True)
        if max_memory is not None:
            if chunk_rows is not None:
                msg = "give at most one of max_memory and chunk_rows"
                raise ValueError(msg)
            chunk_rows = self.chunk_size(max_memory, [(dim, 1)], max_rows, coreset_ratio, projection, proj_dim)
        super().__init__(dim, max_rows, coreset_ratio, projection, proj_dim, seed, chunk_rows=chunk_rows,
                         spill_dir=spill_dir, device=device)
        self._device, self._dtype, self._search_options = device, dtype, search
        self._config = {"coreset_ratio": coreset_ratio, "projection": projection, "proj_dim": proj_dim,
                        "start": "random", "seed": seed, "chunk_rows": self.chunk_rows}

    @classmethod
    def chunk_size(cls, max_memory: int, shapes, units: int, coreset_ratio, projection="sparse",
                   proj_dim: int = 128, unit: str = "row") -> int:
        """Units per streaming chunk when banks share ``max_memory`` bytes (at most ``units``).

        Args:
            shapes: (dim, rows per unit) of every bank, e.g. [(1536, 784)] for one RGB bank fed
                an image (unit) of 28 x 28 patches at a time; [(dim, 1)] for rows as units.
            units: units that will be added (the bank of each shape holds units x rows per unit).
        """
        kept = per_unit = 0
        for dim, rows in shapes:
            bank, per_row = cls.memory_model(dim, units * rows, coreset_ratio, projection, proj_dim)
            kept += bank
            per_unit += rows * per_row
        fits = (max_memory - kept) // per_unit
        if fits < 1:
            msg = (f"max_memory={max_memory} bytes is too small: the memory bank{'s' * (len(shapes) > 1)} of "
                   f"{units} {unit}s need{'s' * (len(shapes) == 1)} {kept} bytes and one {unit} of a streaming "
                   f"chunk {per_unit} more")
            raise ValueError(msg)
        return int(min(fits, units))

    def finish(self) -> MemoryBank:
        """The bank; frees the builder's buffers (call once)."""
        mean, std = self.statistics()
        statistics = {"rows": self.rows_seen, "mean": mean, "std": std}
        rows, positions = self.select()
        kind, indices = _arrays.ArrayKind(False), positions
        if self._device is not None:
            import torch

            rows = torch.from_numpy(rows).to(self._device)
            indices = torch.from_numpy(positions).to(self._device)
            kind = _arrays.kind_of(rows)
        bank = MemoryBank.__new__(MemoryBank)
        bank._setup(rows, kind, indices, self._dtype, self._config, self._search_options, statistics)
        return bank

    def __enter__(self) -> MemoryBankBuilder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
