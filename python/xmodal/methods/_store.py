"""Training-feature store: foreground rows of every training image, extracted once.

Rows live in memory until ``max_bytes`` would be exceeded, then every further image goes to
float32 ``.npy`` memory maps in a private temporary folder (removed by ``close``), so a
training set larger than RAM still trains without re-running the backbones every epoch. The
files are unlinked as soon as they are mapped: even a killed process leaves at most an empty
folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np


class FeatureStore:
    def __init__(self, max_bytes: int = 4 << 30, directory: str | os.PathLike | None = None):
        self.max_bytes = int(max_bytes)
        self._parent = directory
        self._dir: str | None = None
        self._items: list[tuple[np.ndarray, ...]] = []
        self.memory_bytes = 0
        self.disk_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, *arrays: np.ndarray) -> None:
        size = sum(a.nbytes for a in arrays)
        if self.memory_bytes + size <= self.max_bytes:
            self._items.append(tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays))
            self.memory_bytes += size
            return
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="xmodal-features-", dir=self._parent)
        stored = []
        for j, a in enumerate(arrays):
            path = os.path.join(self._dir, f"{len(self._items):06d}-{j}.npy")
            np.save(path, np.ascontiguousarray(a, dtype=np.float32))
            stored.append(np.load(path, mmap_mode="r"))
            # The mapping keeps the data; without a name, nothing outlives a killed process
            # (where unlinking a mapped file is refused, close() removes it instead).
            with contextlib.suppress(OSError):
                os.remove(path)
        self._items.append(tuple(stored))
        self.disk_bytes += size

    def rows(self, indices) -> tuple[np.ndarray, ...]:
        """The stored arrays of the given images, concatenated row-wise (one array per slot)."""
        parts = [self._items[i] for i in indices]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))

    def sample_rows(self, indices, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Like :meth:`rows`, but each image contributes a uniform random ``fraction`` of its
        rows (at least one, without replacement, in stored order); rows not drawn are never
        copied, which matters when the rest sits in memory maps."""
        parts = []
        for i in indices:
            item = self._items[i]
            n = int(item[0].shape[0])
            take = min(n, max(1, round(n * fraction)))
            pick = np.sort(rng.choice(n, size=take, replace=False)) if take < n else slice(None)
            parts.append(tuple(np.asarray(a[pick]) for a in item))
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))

    def image_rows(self, i: int) -> int:
        """Rows stored for image ``i``."""
        return int(self._items[i][0].shape[0])

    def row_count(self) -> int:
        return sum(int(item[0].shape[0]) for item in self._items)

    def gather(self, rows, slot: int = 0) -> np.ndarray:
        """Rows of slot ``slot`` by global row number (images concatenated in append order), in
        the order given: random batches across images, each image read once per call."""
        rows = np.asarray(rows, dtype=np.int64)
        ends = np.cumsum([item[slot].shape[0] for item in self._items])
        if rows.size and (rows.min() < 0 or rows.max() >= (ends[-1] if ends.size else 0)):
            msg = f"rows must lie in [0, {int(ends[-1]) if ends.size else 0}); got {rows.min()}..{rows.max()}"
            raise IndexError(msg)
        first = self._items[0][slot] if self._items else np.zeros((0, 0), np.float32)
        out = np.empty((rows.size, *first.shape[1:]), dtype=first.dtype)
        owner = np.searchsorted(ends, rows, side="right")
        for image in np.unique(owner):
            where = np.flatnonzero(owner == image)
            start = 0 if image == 0 else int(ends[image - 1])
            out[where] = self._items[image][slot][rows[where] - start]
        return out

    def close(self) -> None:
        self._items = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self):  # best effort: the folder is temporary
        try:
            self.close()
        except Exception:
            pass
