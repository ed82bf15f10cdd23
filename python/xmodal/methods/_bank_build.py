"""Training patch features -> a memory bank (greedy coreset), without stacking every raw patch.

Two modes, both fed one image at a time (:meth:`BankBuilder.add`):

- **one-shot** (``chunk_rows=None``): the exact selection of ``xmodal.coreset(all_rows, ...)``.
  Only the *projected* rows (the JL dimension, ~300, instead of D = 1536) stay in RAM; the raw
  rows go to a temporary file and only the selected ones are read back. anomalib keeps every
  raw row (and, while stacking, a second copy) in memory.
- **streaming** (``chunk_rows=c``): merge-reduce. Rows fill a chunk of ``c`` rows; a full chunk
  is reduced to its own greedy coreset, whose rows are kept (raw and projected) and the chunk
  is reused. The kept rows of all chunks form the bank; when their number exceeds the target
  (``oversample > 1``, or rounding), a final greedy coreset of their union trims it. Memory is
  the kept rows plus one chunk, whatever the number of training images. The selection differs
  from the one-shot greedy: each chunk is covered on its own, so patterns common to several
  chunks are represented once per chunk (a larger covering radius for the same bank size).
  With one chunk holding every row the result equals the one-shot selection.

The projection matrix and the first start index are drawn exactly as :func:`xmodal.coreset`
draws them (``default_rng(seed)``: start, then the matrix), for ``max_rows`` rows: when every
image contributes its full grid (RGB banks), the one-shot bank is ``rows[xmodal.coreset(rows,
ratio, projection=..., seed=...)]`` of the stacked rows (rows given as torch tensors are
projected with torch's GEMM, as ``xmodal.coreset`` does for torch input).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .._ops.coreset import greedy_coreset, projection_matrix


class _RowFile:
    """Append-only float32 rows in a temporary file; rows are read back by index."""

    def __init__(self, dim: int, directory=None):
        fd, self.path = tempfile.mkstemp(prefix="xmodal-patchcore-", suffix=".f32", dir=directory)
        self.file = os.fdopen(fd, "wb")
        self.dim = dim
        self.rows = 0

    def write(self, rows: np.ndarray) -> None:
        np.ascontiguousarray(rows, dtype=np.float32).tofile(self.file)
        self.rows += rows.shape[0]

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices``, in that order. Plain reads (no memory map, whose touched pages
        would count as resident memory), one per run of consecutive rows."""
        self.file.flush()
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.shape[0], self.dim), dtype=np.float32)
        if indices.shape[0] == 0:
            return out
        order = np.argsort(indices, kind="stable")
        ordered = indices[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [ordered.shape[0]]]).tolist()
        row_bytes = self.dim * 4
        with open(self.path, "rb") as f:
            for start, end in zip(starts, ends):
                for first in range(start, end, 4096):
                    last = min(first + 4096, end)
                    block = np.empty((last - first, self.dim), dtype=np.float32)
                    f.seek(int(ordered[first]) * row_bytes)
                    if f.readinto(memoryview(block).cast("B")) != block.nbytes:
                        msg = f"temporary feature file {self.path} is shorter than expected"
                        raise OSError(msg)
                    out[order[first:last]] = block
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            try:
                os.remove(self.path)
            except OSError:
                pass

    def __del__(self):
        self.close()


class BankBuilder:
    """Collects one modality's training rows and selects its memory bank.

    Args:
        dim: feature dimension D.
        max_rows: upper bound of the rows that will be added (images x grid cells).
        ratio: coreset fraction in (0, 1], or None to keep every row.
        projection, proj_dim, seed: as in :func:`xmodal.coreset`.
        chunk_rows: None (one-shot) or the streaming chunk size in rows.
        oversample: streaming only: each chunk keeps ``oversample * ratio`` of its rows.
        spill_dir: folder of the one-shot mode's temporary file (default: the system's).
    """

    def __init__(self, dim: int, max_rows: int, ratio, projection="sparse", proj_dim: int = 128, seed: int = 0,
                 chunk_rows: int | None = None, oversample: float = 1.0, spill_dir=None):
        self.dim, self.ratio, self.oversample = int(dim), ratio, float(oversample)
        self._max_rows = max_rows
        self.rows_seen = 0
        self.sum = 0.0
        self.sum_squares = 0.0
        rng = np.random.default_rng(seed)
        self._rng = rng
        self._first_start = int(rng.integers(max(max_rows, 1)))
        self.matrix = projection_matrix(max(max_rows, 1), dim, projection, proj_dim, rng) if ratio is not None else None
        self.proj_dim = dim if self.matrix is None else self.matrix.shape[0]
        self._matrix_t = None
        self.chunk_rows = None if chunk_rows is None else max(1, int(chunk_rows))
        # Without a projection (ratio None, or features narrower than the JL dimension) the
        # selection runs on the raw rows themselves: no second copy, no file.
        self.projected = self.matrix is not None
        if self.chunk_rows is None:
            self._file = _RowFile(dim, spill_dir) if self.projected or ratio is None else None
            self._proj = np.empty((max(max_rows, 1), self.proj_dim), dtype=np.float32) if ratio is not None else None
        else:
            self._raw = np.empty((self.chunk_rows, dim), dtype=np.float32)
            self._chunk_proj = np.empty((self.chunk_rows, self.proj_dim), dtype=np.float32) if self.projected else self._raw
            self._fill = 0
            # Kept rows are written in place: a bound on their number is reserved (untouched
            # pages cost nothing), so finishing never concatenates a second copy.
            if ratio is None:
                capacity = max(max_rows, 1)
            else:
                chunks = -(-max(max_rows, 1) // self.chunk_rows)
                capacity = max(1, int(self.oversample * ratio * max(max_rows, 1))) + chunks
            self._kept_raw = np.empty((capacity, dim), dtype=np.float32)
            self._kept_proj = np.empty((capacity, self.proj_dim), dtype=np.float32) if self.projected else self._kept_raw
            self._kept = 0
            self.chunks = 0

    def _project(self, rows: np.ndarray, torch_rows=None) -> np.ndarray:
        if self.matrix is None:
            return rows
        if torch_rows is not None:
            # torch's own GEMM: numpy's BLAS would start a second thread pool that spins
            # against the backbone's threads (and torch's result equals xmodal.coreset's on
            # torch input: same GEMM, row blocks do not change it)
            if self._matrix_t is None:
                import torch

                self._matrix_t = torch.from_numpy(self.matrix)
            return (torch_rows @ self._matrix_t.T).numpy()
        return rows @ self.matrix.T

    def add(self, rows) -> None:
        """Adds (r, D) float32 rows (one image's patches): numpy array or CPU torch tensor."""
        torch_rows = None
        if hasattr(rows, "numpy") and not isinstance(rows, np.ndarray):
            torch_rows = rows.contiguous().float()
            rows = torch_rows.numpy()
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.shape[0] == 0:
            return
        wide = rows.astype(np.float64)
        self.sum += float(wide.sum())
        self.sum_squares += float(np.square(wide).sum())
        del wide
        if self.chunk_rows is None:
            if self._proj is not None:
                end = self.rows_seen + rows.shape[0]
                if end > self._proj.shape[0]:
                    msg = f"more rows than announced: {end} > max_rows={self._proj.shape[0]}"
                    raise ValueError(msg)
                self._proj[self.rows_seen : end] = self._project(rows, torch_rows)
            if self._file is not None:
                self._file.write(rows)
            self.rows_seen += rows.shape[0]
            return
        done = 0
        while done < rows.shape[0]:
            take = min(rows.shape[0] - done, self.chunk_rows - self._fill)
            part = rows[done : done + take]
            self._raw[self._fill : self._fill + take] = part
            if self.projected:
                torch_part = None if torch_rows is None else torch_rows[done : done + take]
                self._chunk_proj[self._fill : self._fill + take] = self._project(part, torch_part)
            self._fill += take
            done += take
            self.rows_seen += take
            if self._fill == self.chunk_rows:
                self._reduce_chunk()

    def _start(self, rows: int) -> int:
        if self.chunks == 0:
            return self._first_start % rows
        return int(self._rng.integers(rows))

    def _reduce_chunk(self) -> None:
        rows = self._fill
        if rows == 0:
            return
        if self.ratio is None:
            chosen = np.arange(rows)
        else:
            # cumulative rounding: after every chunk, int(oversample * ratio * rows seen) are kept
            target = max(1, int(self.oversample * self.ratio * self.rows_seen))
            count = int(min(max(target - self._kept, 1), rows))
            chosen = greedy_coreset(self._chunk_proj[:rows], count, self._start(rows))
        end = self._kept + len(chosen)
        if end > self._kept_raw.shape[0]:
            msg = f"more rows than announced: max_rows={self._max_rows}"
            raise ValueError(msg)
        self._kept_raw[self._kept : end] = self._raw[chosen]
        if self.projected:
            self._kept_proj[self._kept : end] = self._chunk_proj[chosen]
        self._kept = end
        self.chunks += 1
        self._fill = 0

    def statistics(self) -> tuple[float, float]:
        """(mean, unbiased std) of every training feature value, as M3DM's scalar normalisation."""
        count = self.rows_seen * self.dim
        if count < 2:
            return 0.0, 1.0
        mean = self.sum / count
        var = max(self.sum_squares - count * mean * mean, 0.0) / (count - 1)
        return mean, float(np.sqrt(var)) if var > 0 else 1.0

    def finish(self) -> np.ndarray:
        """The (n, D) float32 bank, rows in selection order; frees the builder's buffers."""
        if self.rows_seen == 0:
            self.close()
            msg = "no training rows were added"
            raise ValueError(msg)
        try:
            if self.chunk_rows is None:
                return self._finish_one_shot()
            return self._finish_streaming()
        finally:
            self.close()

    def _finish_one_shot(self) -> np.ndarray:
        total = self.rows_seen
        if self.ratio is None:
            return self._file.read(np.arange(total))
        count = max(1, int(total * self.ratio))
        idx = np.asarray(greedy_coreset(self._proj[:total], count, self._first_start % total))
        if self._file is None:
            bank = self._proj[idx]
            self._proj = None
            return bank
        self._proj = None
        return self._file.read(idx)

    def _finish_streaming(self) -> np.ndarray:
        self._reduce_chunk()
        self._raw = self._chunk_proj = None
        raw, proj, kept = self._kept_raw, self._kept_proj, self._kept
        self._kept_raw = self._kept_proj = None
        count = kept if self.ratio is None else max(1, int(self.rows_seen * self.ratio))
        if kept > count:
            # final reduce: greedy coreset of the union, compacted in place (ascending indices
            # only ever move rows down), so the bank is a view of the kept rows, not a copy
            chosen = np.sort(np.asarray(greedy_coreset(proj[:kept], count, 0)))
            for first in range(0, count, 4096):  # block j reads rows >= j only: safe in place
                raw[first : first + 4096] = raw[chosen[first : first + 4096]]
        return raw[:count]

    def close(self) -> None:
        if self.chunk_rows is None:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._proj = None
