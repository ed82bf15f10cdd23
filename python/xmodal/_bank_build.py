"""Training rows -> a memory bank (greedy coreset), without stacking every raw row.

The machinery behind :meth:`xmodal.MemoryBank.builder`. Two modes, both fed a few rows at a time
(:meth:`BankBuilder.add`, e.g. one image's patches):

- **one-shot** (``chunk_rows=None``): the exact selection of ``xmodal.coreset(all_rows, ...)``.
  Only the *projected* rows (the JL dimension, ~300, instead of D = 1536) stay in RAM; the raw
  rows go to a temporary file and only the selected ones are read back. anomalib keeps every
  raw row (and, while stacking, a second copy) in memory.
- **streaming** (``chunk_rows=c``): merge-reduce. Rows fill a chunk of ``c`` rows; a full chunk
  is reduced to its own greedy coreset, whose rows are kept (raw and projected) and the chunk
  is reused. The kept rows of all chunks form the bank; when their number exceeds the target
  (``oversample > 1``, or rounding), a final greedy coreset of their union trims it. Memory is
  the kept rows plus one chunk, whatever the number of rows. The selection differs from the
  one-shot greedy: each chunk is covered on its own, so patterns common to several chunks are
  represented once per chunk (a larger covering radius for the same bank size). With one
  chunk holding every row the result equals the one-shot selection.

The projection matrix and the first start index are drawn exactly as :func:`xmodal.coreset`
draws them (``default_rng(seed)``: start, then the matrix), for ``max_rows`` rows: when
``max_rows`` rows are added, the one-shot bank is ``rows[xmodal.coreset(rows, ratio,
projection=..., seed=...)]`` of the stacked rows. The "sparse" projection is applied as
``xmodal.coreset`` applies it, by the sparse product of ``ops.coreset.project_sparse`` (its
bits do not depend on how the rows are batched, and it does ~40x less work than a dense GEMM
at D = 1536); the dense "linear" one by a GEMM (torch's for torch rows, as ``xmodal.coreset``
does for torch input). With a CUDA ``device`` the
greedy selections run on the device (the projected rows are copied there, one chunk at a time).
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from . import _arrays
from ._backend import C
from .ops import greedy_coreset, jl_dimension, projection_matrix
from .ops.coreset import SparseRows, project_sparse

_GREEDY_BYTES_PER_ROW = 32  # the coreset kernel: running minimum, owner (16 B) + per-cluster state


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
            for start, end in zip(starts, ends, strict=False):
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
    """Collects a bank's training rows and selects its memory bank (see the module docstring).

    Args:
        dim: feature dimension D.
        max_rows: upper bound of the rows that will be added.
        ratio: coreset fraction in (0, 1], or None to keep every row.
        projection, proj_dim, seed: as in :func:`xmodal.coreset`.
        chunk_rows: None (one-shot) or the streaming chunk size in rows.
        oversample: streaming only: each chunk keeps ``oversample * ratio`` of its rows.
        spill_dir: folder of the one-shot mode's temporary file (default: the system's).
        device: where the greedy selections run: None or a CPU device (the CPU kernel), or a
            CUDA device (the CUDA kernel).
    """

    def __init__(self, dim: int, max_rows: int, ratio, projection="sparse", proj_dim: int = 128, seed: int = 0,
                 chunk_rows: int | None = None, oversample: float = 1.0, spill_dir=None, device=None):
        dim = _arrays.positive_int(dim, "dim")
        max_rows = _arrays.positive_int(max_rows, "max_rows")
        ratio = _arrays.number(ratio, "coreset_ratio", minimum=0, maximum=1, low_open=True, allow_none=True)
        _arrays.one_of(projection, "projection", ("sparse", "linear", None))
        proj_dim = _arrays.positive_int(proj_dim, "proj_dim")
        seed = _arrays.integer(seed, "seed", minimum=0)
        chunk_rows = _arrays.integer(chunk_rows, "chunk_rows", minimum=1, allow_none=True)
        self.oversample = _arrays.number(oversample, "oversample", minimum=1)
        self.dim, self.ratio = dim, ratio
        self._max_rows = max_rows
        self._cuda = _cuda_device(device)
        self.rows_seen = 0
        self.sum = 0.0
        self.sum_squares = 0.0
        rng = np.random.default_rng(seed)
        self._rng = rng
        self._first_start = int(rng.integers(max_rows))
        self.matrix = projection_matrix(max_rows, dim, projection, proj_dim, rng) if ratio is not None else None
        self.proj_dim = dim if self.matrix is None else self.matrix.shape[0]
        self._matrix_t = None
        self._sparse = SparseRows(self.matrix) if self.matrix is not None and projection == "sparse" else None
        self.chunk_rows = chunk_rows
        self.chunks = 0
        # Without a projection (ratio None, or features narrower than the JL dimension) the
        # selection runs on the raw rows themselves: no second copy, no file.
        self.projected = self.matrix is not None
        if self.chunk_rows is None:
            self._file = _RowFile(dim, spill_dir) if self.projected or ratio is None else None
            self._proj = np.empty((max_rows, self.proj_dim), dtype=np.float32) if ratio is not None else None
        else:
            self._raw = np.empty((self.chunk_rows, dim), dtype=np.float32)
            self._chunk_proj = (
                np.empty((self.chunk_rows, self.proj_dim), dtype=np.float32) if self.projected else self._raw
            )
            self._fill = 0
            # Kept rows are written in place: a bound on their number is reserved (untouched
            # pages cost nothing), so finishing never concatenates a second copy.
            if ratio is None:
                capacity = max_rows
            else:
                chunks = -(-max_rows // self.chunk_rows)
                capacity = max(1, int(self.oversample * ratio * max_rows)) + chunks
            self._kept_raw = np.empty((capacity, dim), dtype=np.float32)
            self._kept_proj = (
                np.empty((capacity, self.proj_dim), dtype=np.float32) if self.projected else self._kept_raw
            )
            self._kept_rows = np.empty(capacity, dtype=np.int64)  # positions among the added rows
            self._kept = 0

    @staticmethod
    def memory_model(dim: int, max_rows: int, ratio, projection="sparse", proj_dim: int = 128) -> tuple[int, int]:
        """Bytes of a streaming build: (kept rows at the end, each row of a chunk).

        A build under a budget of B bytes fits ``(B - kept) // per_row`` rows per chunk."""
        out = jl_dimension(max(max_rows, 2)) if projection == "sparse" else proj_dim
        projected = out if ratio is not None and projection is not None and out < dim else 0
        kept_rows = max_rows if ratio is None else math.ceil(ratio * max_rows)
        row_bytes = (dim + projected) * 4
        return kept_rows * row_bytes, row_bytes + _GREEDY_BYTES_PER_ROW

    def _project(self, rows: np.ndarray, torch_rows=None) -> np.ndarray:
        if self.matrix is None:
            return rows
        if self._sparse is not None:
            return project_sparse(rows, self._sparse)
        if torch_rows is not None:
            # torch's own GEMM: numpy's BLAS would start a second thread pool that spins
            # against the backbone's threads (and torch's result equals xmodal.coreset's on
            # torch input: same GEMM, row blocks do not change it)
            if self._matrix_t is None:
                import torch

                self._matrix_t = torch.from_numpy(self.matrix)
            return (torch_rows @ self._matrix_t.T).numpy()
        return rows @ self.matrix.T

    def _select(self, rows: np.ndarray, count: int, start: int) -> np.ndarray:
        """Greedy coreset of ``rows`` (numpy), on the builder's device."""
        if self._cuda is None:
            return np.asarray(greedy_coreset(rows, count, start))
        import torch

        return greedy_coreset(torch.from_numpy(rows).to(self._cuda), count, start).cpu().numpy()

    def add(self, rows) -> None:
        """Adds (r, D) floating rows (e.g. one image's patches): numpy array or CPU torch tensor."""
        torch_rows = None
        if _arrays.is_torch(rows):
            torch_rows = rows.detach().contiguous().float()
            rows = torch_rows.numpy()
        rows, _ = _arrays.as_float32(rows, "rows", ndim=2, shape_doc="(r, D)")
        if rows.shape[1] != self.dim:
            msg = f"rows must have D={self.dim} columns; got shape {tuple(rows.shape)}"
            raise ValueError(msg)
        if rows.shape[0] == 0:
            return
        if self.rows_seen + rows.shape[0] > self._max_rows:
            msg = f"more rows than announced: {self.rows_seen + rows.shape[0]} > max_rows={self._max_rows}"
            raise ValueError(msg)
        total, squares = C.sum_squares_cpu(rows)
        if not np.isfinite(squares):  # float32 squares cannot overflow float64: a NaN or inf
            _arrays.check_finite(rows, "rows")
        self.sum += total
        self.sum_squares += squares
        if self.chunk_rows is None:
            if self._proj is not None:
                end = self.rows_seen + rows.shape[0]
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
            chosen = self._select(self._chunk_proj[:rows], count, self._start(rows))
        end = self._kept + len(chosen)
        self._kept_raw[self._kept : end] = self._raw[chosen]
        if self.projected:
            self._kept_proj[self._kept : end] = self._chunk_proj[chosen]
        self._kept_rows[self._kept : end] = self.rows_seen - rows + chosen
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

    def select(self) -> tuple[np.ndarray, np.ndarray]:
        """(bank (n, D) float32, positions (n,) int64 of its rows among the added rows); frees the
        builder's buffers. One-shot banks list rows in selection order, streaming banks in the
        order they were added."""
        if self.rows_seen == 0:
            self.close()
            msg = "no rows were added to the memory bank"
            raise ValueError(msg)
        try:
            if self.chunk_rows is None:
                return self._finish_one_shot()
            return self._finish_streaming()
        finally:
            self.close()

    def _finish_one_shot(self) -> tuple[np.ndarray, np.ndarray]:
        total = self.rows_seen
        if self.ratio is None:
            idx = np.arange(total)
            return self._file.read(idx), idx
        count = max(1, int(total * self.ratio))
        idx = self._select(self._proj[:total], count, self._first_start % total)
        if self._file is None:
            bank = self._proj[idx]
            self._proj = None
            return bank, idx
        self._proj = None
        return self._file.read(idx), idx

    def _finish_streaming(self) -> tuple[np.ndarray, np.ndarray]:
        self._reduce_chunk()
        self._raw = self._chunk_proj = None
        raw, proj, positions, kept = self._kept_raw, self._kept_proj, self._kept_rows, self._kept
        self._kept_raw = self._kept_proj = self._kept_rows = None
        count = kept if self.ratio is None else max(1, int(self.rows_seen * self.ratio))
        if kept > count:
            # final reduce: greedy coreset of the union, compacted in place (ascending indices
            # only ever move rows down), so the bank is a view of the kept rows, not a copy
            chosen = np.sort(self._select(proj[:kept], count, 0))
            for first in range(0, count, 4096):  # block j reads rows >= j only: safe in place
                block = chosen[first : first + 4096]
                raw[first : first + len(block)] = raw[block]  # the last block is usually short
            positions[:count] = positions[chosen]
        return raw[:count], positions[:count]

    def close(self) -> None:
        if self.chunk_rows is None:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._proj = None


def _cuda_device(device):
    """The torch CUDA device the selections run on, or None for the CPU kernel."""
    if device is None:
        return None
    import torch

    device = torch.device(device)
    return device if device.type == "cuda" else None
