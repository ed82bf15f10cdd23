"""Per-position Gaussians (PaDiM): streaming statistics, Cholesky factors, Mahalanobis distances.

The fit accumulates per-position means and scatter matrices in float64 batch by batch
(:class:`GaussianStats`), so memory does not grow with the number of images; the factors of the
regularised covariances are computed once (:func:`cholesky_factors`, float64, packed to float32);
inference is the native triangular-solve kernel (:func:`mahalanobis`).
"""

from __future__ import annotations

import numpy as np

from .. import _arrays
from .._backend import C
from ._dispatch import run_kernel

# Positions per float64 working chunk: its (chunk, d, d) temporaries stay near this size.
_CHUNK_BYTES = 32 << 20


def _float64_copy(part, torch_input: bool) -> np.ndarray:
    """A float64 host copy of a slice (always a copy: the callers modify it in place)."""
    if torch_input:
        import torch

        return part.to("cpu", dtype=torch.float64, copy=True).numpy()
    return np.array(part, dtype=np.float64)


def _positions_per_chunk(dim: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * dim * dim))


def _packed_size(dim: int) -> int:
    return dim * (dim + 1) // 2


def _factors_buffer(positions: int, dim: int) -> np.ndarray:
    # On huge pages where the OS allows it: inference streams through all of it per image.
    return _arrays.empty(_arrays.ArrayKind(False), (positions, _packed_size(dim)), np.float32)


def _lower_flat_indices(dim: int) -> np.ndarray:
    """Indices of the lower triangle (row by row) in a flattened d x d matrix: the packed order."""
    rows, cols = np.tril_indices(dim)
    return rows * dim + cols


def mahalanobis(x, mean, factors):
    """Mahalanobis distance of every feature vector to its position's Gaussian (PaDiM's map).

    ``dist[b, p] = sqrt((x[b, p] - mean[p])^T Sigma_p^-1 (x[b, p] - mean[p]))`` with
    ``Sigma_p = L_p L_p^T``, computed by forward substitution with the Cholesky factor L_p (never
    an explicit inverse). Per-position factors: every dot product is accumulated in float64, so
    the result is the float64 solve with the float32 factor, rounded once. A shared factor (one
    covariance for all positions): one blocked triangular solve over all B*P rows whose
    off-diagonal blocks are float32 sgemm updates.

    Args:
        x: (B, P, d) floating features, numpy or torch (CPU or CUDA): image-major, channels last
            (a (B, d, H, W) backbone map becomes ``x.permute(0, 2, 3, 1).reshape(B, H * W, d)``).
        mean: (P, d) per-position means, same kind as ``x``.
        factors: (P, d*(d+1)/2) per-position Cholesky factors, or (1, d*(d+1)/2) for one shared
            covariance: lower triangles packed row by row (``L[np.tril_indices(d)]``), as
            :func:`cholesky_factors` and :meth:`GaussianStats.cholesky_factors` return them.

    Returns:
        (B, P) float32 distances, same framework and device as ``x``.

    Non-float32 or non-contiguous inputs are copied to float32 (the factors are the big array:
    pass them as float32). NaN/inf in ``x`` or ``mean`` raise ValueError; a factor with a
    non-positive or non-finite diagonal entry, or a non-finite distance (NaN/inf inside a
    factor), raises ValueError naming the position.
    """
    xs, kind = _arrays.as_float32(x, "x", ndim=3, shape_doc="(B, P, d)")
    mu, mean_kind = _arrays.as_float32(mean, "mean", ndim=2, shape_doc="(P, d)")
    _arrays.check_same_kind(kind, mean_kind, "x", "mean")
    fac, factor_kind = _arrays.as_float32(factors, "factors", ndim=2, shape_doc="(P or 1, d*(d+1)/2)")
    _arrays.check_same_kind(kind, factor_kind, "x", "factors")
    batch, positions, dim = (int(s) for s in xs.shape)
    if dim < 1:
        msg = "x must have at least one feature (d >= 1); got d=0"
        raise ValueError(msg)
    if tuple(mu.shape) != (positions, dim):
        msg = f"mean must have shape (P, d) = ({positions}, {dim}) to match x; got {tuple(mu.shape)}"
        raise ValueError(msg)
    packed = _packed_size(dim)
    if fac.shape[1] != packed or fac.shape[0] not in (positions, 1):
        msg = (
            f"factors must have shape ({positions}, {packed}) (one packed d={dim} factor per position) or "
            f"(1, {packed}) (shared); got {tuple(fac.shape)}"
        )
        raise ValueError(msg)
    _arrays.check_finite(xs, "x")
    _arrays.check_finite(mu, "mean")
    dist = _arrays.empty(kind, (batch, positions), "float32")
    status = _arrays.zeros(kind, (1,), "int32") if kind.cuda else None  # the kernel's report of a bad factor
    run_kernel("mahalanobis", kind, xs, mu, fac, dist, cuda_args=(status,))
    if status is not None and int(status.item()) != 0:
        msg = (
            f"factors: the Cholesky factor of position {int(status.item()) - 1} has a diagonal entry that is not "
            "a positive finite number, or holds NaN/inf values"
        )
        raise ValueError(msg)
    return dist


# --- Cholesky factors -------------------------------------------------------------------------


def _factor_packed(packed: np.ndarray, dim: int, scale: float, regularization: float, first_position: int,
                   out: np.ndarray) -> None:
    """``out`` = packed float32 Cholesky factors of ``scale * S + regularization * I`` for (c, T)
    packed float64 lower triangles S (native: float64 LAPACK, one matrix per thread)."""
    failed = C.gaussian_factors_cpu(packed, scale, regularization, out)
    if failed >= 0:
        lower = np.zeros(dim * dim)
        lower[_lower_flat_indices(dim)] = scale * packed[failed]
        matrix = lower.reshape(dim, dim) + regularization * np.eye(dim)
        smallest = float(np.linalg.eigvalsh(matrix)[0])  # reads the lower triangle
        msg = (
            f"covariance of position {first_position + failed} is not positive definite after adding "
            f"{regularization:g}*I (smallest eigenvalue {smallest:.6g}); increase regularization or check the features"
        )
        raise ValueError(msg)


def _check_symmetric(cov: np.ndarray, first_position: int) -> None:
    asymmetry = np.abs(cov - cov.transpose(0, 2, 1)).max(axis=(1, 2))
    scale = np.abs(cov).max(axis=(1, 2))
    bad = np.flatnonzero(asymmetry > 1e-5 * scale)
    if bad.size:
        p = int(bad[0])
        msg = (
            f"covariance of position {first_position + p} is not symmetric "
            f"(max |C - C^T| = {asymmetry[p]:.3g}, max |C| = {scale[p]:.3g})"
        )
        raise ValueError(msg)


def cholesky_factors(covariance, regularization: float = 0.01):
    """Cholesky factors of regularised covariances, packed for :func:`mahalanobis`.

    Computes ``L_p`` with ``L_p L_p^T = Sigma_p + regularization * I`` (PaDiM adds 0.01 * I) in
    float64, position chunk by position chunk, and packs each lower triangle row by row to
    float32. Once per fit; inference reuses the factors.

    Args:
        covariance: (P, d, d) per-position covariances or (d, d) one shared covariance, floating
            numpy or torch (converted to float64 on the host chunk by chunk); symmetric.
        regularization: added to every diagonal entry (>= 0).

    Returns:
        (P, d*(d+1)/2) or, for a (d, d) input, (1, d*(d+1)/2) float32 packed factors, numpy for
        numpy input, a torch tensor on the input's device for torch input.

    Raises:
        ValueError: a covariance is not symmetric, holds NaN/inf, or is not positive definite
            after regularisation (the message names the position and its smallest eigenvalue).
    """
    regularization = _arrays.number(regularization, "regularization", minimum=0.0)
    kind = _arrays.kind_of(covariance)
    if kind.torch:
        _arrays.check_device(covariance, "covariance")
    cov = covariance.detach() if kind.torch else covariance
    if not kind.torch and not isinstance(cov, np.ndarray):
        cov = np.asarray(cov)
    floating = cov.is_floating_point() if kind.torch else cov.dtype.kind == "f"
    if not floating:
        msg = f"covariance must be a floating-point array; got dtype {cov.dtype}"
        raise TypeError(msg)
    if cov.ndim == 2:
        cov = cov[None]
    if cov.ndim != 3 or cov.shape[1] != cov.shape[2] or cov.shape[1] < 1:
        msg = f"covariance must have shape (P, d, d) or (d, d) with d >= 1; got {tuple(covariance.shape)}"
        raise ValueError(msg)
    positions, dim = int(cov.shape[0]), int(cov.shape[1])
    out = _factors_buffer(positions, dim)
    step = _positions_per_chunk(dim)
    for p0 in range(0, positions, step):
        part = cov[p0 : p0 + step]
        chunk = _float64_copy(part, kind.torch)
        if not np.isfinite(chunk).all():
            msg = f"covariance contains NaN or infinite values (positions {p0}..{p0 + chunk.shape[0] - 1})"
            raise ValueError(msg)
        _check_symmetric(chunk, p0)
        packed = np.take(chunk.reshape(chunk.shape[0], dim * dim), _lower_flat_indices(dim), axis=1)
        _factor_packed(packed, dim, 1.0, regularization, p0, out[p0 : p0 + chunk.shape[0]])
    if kind.torch:
        import torch

        return torch.from_numpy(out).to(kind.device)
    return out


# --- streaming statistics ---------------------------------------------------------------------


class GaussianStats:
    """Streaming per-position mean and covariance in float64 (the fit of PaDiM).

    Feed feature batches with :meth:`update`; memory is fixed by P and d (the means and the packed
    lower triangles of the per-position scatter matrices, float64, plus a bounded buffer of
    incoming batches), never by the number of images. Buffered batches are merged with Chan et
    al.'s pairwise update (their mean and centred scatter in float64, then the mean-shift
    correction), as accurate as a two-pass computation: the result equals ``numpy.mean`` /
    ``numpy.cov`` on all images stacked. Merging waits until ``buffer_bytes`` of batches have
    arrived, because each merge is a pass over all P x d x d statistics.

    ``covariance`` is the unbiased estimate (ddof = 1), as anomalib's PaDiM computes it.
    ``covariance="shared"`` keeps one pooled within-position covariance for all positions:
    ``sum_p sum_n (x_np - mean_p)(x_np - mean_p)^T / (P (N - 1))``, the mean of the per-position
    unbiased covariances (d x d memory instead of P x d x d).

    Example::

        stats = GaussianStats()
        for batch in loader:                 # (B, P, d) features, numpy or torch
            stats.update(batch)
        factors = stats.cholesky_factors(0.01)     # PaDiM's Sigma + 0.01 I
        dist = xmodal.ops.mahalanobis(test_features, stats.mean.astype("float32"), factors)

    Torch inputs (CPU or CUDA) are copied to the host: the statistics are numpy. Statistics from
    separate workers combine exactly with :meth:`merge`.

    Args:
        covariance: "full" (one covariance per position) or "shared".
        buffer_bytes: incoming batches (copied in their own precision) are held up to this size
            before they are merged.
    """

    def __init__(self, covariance: str = "full", buffer_bytes: int = 256 << 20):
        self.covariance_type = _arrays.one_of(covariance, "covariance", ("full", "shared"))
        self.buffer_bytes = _arrays.integer(buffer_bytes, "buffer_bytes", minimum=0)
        self.positions: int | None = None
        self.dim: int | None = None
        self._count = 0  # images merged into the statistics
        self._mean: np.ndarray | None = None
        # Packed lower triangles of the scatter matrices: (P, d(d+1)/2), or (1, ...) for "shared".
        self._scatter: np.ndarray | None = None
        self._pending: list[np.ndarray] = []  # (B, P, d) host copies not merged yet

    # -- accumulation --

    def _start(self, positions: int, dim: int) -> None:
        self.positions, self.dim = positions, dim
        self._mean = np.zeros((positions, dim))
        self._scatter = np.zeros((1 if self.covariance_type == "shared" else positions, _packed_size(dim)))

    def _check_shape(self, positions: int, dim: int, name: str) -> None:
        if self.positions is None:
            if dim < 1:
                msg = f"{name} must have at least one feature (d >= 1); got d=0"
                raise ValueError(msg)
            self._start(positions, dim)
        elif (positions, dim) != (self.positions, self.dim):
            msg = (f"{name} must have P={self.positions}, d={self.dim} like the earlier batches; "
                   f"got P={positions}, d={dim}")
            raise ValueError(msg)

    @property
    def count(self) -> int:
        """Images seen."""
        return self._count + sum(batch.shape[0] for batch in self._pending)

    def update(self, x) -> GaussianStats:
        """Adds a batch of feature maps.

        Args:
            x: (B, P, d) floating features, numpy or torch (any device), B >= 0; every batch has
                the same P and d. Copied (float64 stays float64, other floats become float32).

        Returns:
            self.
        """
        kind = _arrays.kind_of(x)
        if kind.torch:
            _arrays.check_device(x, "x")
            if not x.is_floating_point():
                msg = f"x must be a floating-point tensor; got dtype {x.dtype}"
                raise TypeError(msg)
        else:
            x = np.asarray(x)
            if x.dtype.kind != "f":
                msg = f"x must be a floating-point array; got dtype {x.dtype}"
                raise TypeError(msg)
        if x.ndim != 3:
            msg = f"x must have 3 dimensions (B, P, d); got shape {tuple(x.shape)}"
            raise ValueError(msg)
        self._check_shape(int(x.shape[1]), int(x.shape[2]), "x")
        if x.shape[0] == 0:
            return self
        _arrays.check_finite(x, "x")
        if kind.torch:
            import torch

            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            host = x.detach().to("cpu", dtype=dtype, copy=True).numpy()
        else:
            host = np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        self._pending.append(host)
        if sum(batch.nbytes for batch in self._pending) >= self.buffer_bytes:
            self._flush()
        return self

    def _flush(self) -> None:
        """Merges the buffered batches (Chan et al.): per position, the centred rows plus one row
        sqrt(n_a n_b / n) * (mean_b - mean_a) give the batch scatter and the mean-shift
        correction in one float64 SYRK (native, one position per thread)."""
        if not self._pending:
            return
        batch = sum(b.shape[0] for b in self._pending)
        n = self._count + batch
        shift_weight = np.sqrt(self._count * batch / n)
        dim = self.dim
        shared = self.covariance_type == "shared"
        step = max(1, _CHUNK_BYTES // (8 * (batch + 1) * dim))
        for p0 in range(0, self.positions, step):
            p1 = min(p0 + step, self.positions)
            rows = np.empty((p1 - p0, batch + 1, dim))  # (c, n_b + 1, d)
            first = 0
            for b in self._pending:
                rows[:, first : first + b.shape[0]] = b[:, p0:p1].transpose(1, 0, 2)
                first += b.shape[0]
            batch_mean = rows[:, :batch].mean(axis=1)
            rows[:, :batch] -= batch_mean[:, None]
            delta = batch_mean - self._mean[p0:p1]
            rows[:, batch] = shift_weight * delta
            if shared:
                # per-position products first, summed in position order (independent of threads)
                products = np.zeros((p1 - p0, self._scatter.shape[1]))
                C.gaussian_accumulate_cpu(rows, products)
                self._scatter += products.sum(axis=0)
            else:
                C.gaussian_accumulate_cpu(rows, self._scatter[p0:p1])
            self._mean[p0:p1] += delta * (batch / n)
        self._pending.clear()
        self._count = n

    def merge(self, other: GaussianStats) -> GaussianStats:
        """Adds the images another GaussianStats has seen (same P, d and covariance type).

        Returns:
            self.
        """
        if not isinstance(other, GaussianStats):
            msg = f"other must be a GaussianStats; got {type(other).__name__}"
            raise TypeError(msg)
        if other.covariance_type != self.covariance_type:
            msg = f"cannot merge covariance={other.covariance_type!r} statistics into {self.covariance_type!r} ones"
            raise ValueError(msg)
        other._flush()
        if other.count == 0:
            return self
        self._check_shape(other.positions, other.dim, "other")
        self._flush()
        n_a, n_b = self._count, other._count
        n = n_a + n_b
        delta = other._mean - self._mean
        # the mean-shift correction n_a n_b / n * delta delta^T, as a one-row product per position
        # (for "shared": one product over the P rows)
        shift = np.sqrt(n_a * n_b / n) * delta
        shift = shift[None] if self.covariance_type == "shared" else shift[:, None, :]
        self._scatter += other._scatter
        C.gaussian_accumulate_cpu(np.ascontiguousarray(shift), self._scatter)
        self._mean += delta * (n_b / n)
        self._count = n
        return self

    # -- results --

    @property
    def mean(self) -> np.ndarray:
        """(P, d) float64 per-position means (read-only view)."""
        self._require(1)
        view = self._mean.view()
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held: the statistics (fixed by P and d) and the batches not merged yet."""
        if self._mean is None:
            return 0
        return self._mean.nbytes + self._scatter.nbytes + sum(b.nbytes for b in self._pending)

    def _require(self, minimum: int) -> None:
        self._flush()
        if self._count < minimum:
            msg = f"GaussianStats needs at least {minimum} image{'s' if minimum > 1 else ''}; it has seen {self._count}"
            raise ValueError(msg)

    def covariance(self) -> np.ndarray:
        """Unbiased (ddof = 1) covariances: (P, d, d) float64, or (d, d) for "shared".

        The full form materialises P x d x d float64 (7.6 GB for P = 3136, d = 550); for the
        factors use :meth:`cholesky_factors`, which works chunk by chunk.
        """
        self._require(2)
        dim, count = self.dim, self._scatter.shape[0]
        scale = (self.positions if self.covariance_type == "shared" else 1) * (self._count - 1)
        lower = np.zeros((count, dim * dim))
        lower[:, _lower_flat_indices(dim)] = self._scatter / scale
        lower = lower.reshape(count, dim, dim)
        full = lower + lower.transpose(0, 2, 1)
        diagonal = np.arange(dim)
        full[:, diagonal, diagonal] = lower[:, diagonal, diagonal]
        return full[0] if self.covariance_type == "shared" else full

    def cholesky_factors(self, regularization: float = 0.01) -> np.ndarray:
        """Packed float32 Cholesky factors of ``covariance + regularization * I`` for
        :func:`mahalanobis`: (P, d*(d+1)/2), or (1, d*(d+1)/2) for "shared". Computed in float64
        straight from the packed statistics (no P x d x d array)."""
        self._require(2)
        regularization = _arrays.number(regularization, "regularization", minimum=0.0)
        shared = self.covariance_type == "shared"
        out = _factors_buffer(self._scatter.shape[0], self.dim)
        scale = 1.0 / ((self.positions if shared else 1) * (self._count - 1))
        _factor_packed(self._scatter, self.dim, scale, regularization, 0, out)
        return out

    def __repr__(self) -> str:
        return (
            f"GaussianStats(covariance={self.covariance_type!r}, count={self.count}, positions={self.positions}, "
            f"dim={self.dim})"
        )
