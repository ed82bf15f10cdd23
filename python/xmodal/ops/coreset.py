"""Greedy k-center coreset selection and the random projections it runs on."""

from __future__ import annotations

import math

import numpy as np

from .. import _arrays
from .._backend import C
from ._dispatch import run_kernel

PROJECTIONS = ("sparse", "linear", None)


def greedy_coreset(x, n: int, start: int = 0):
    """Greedy k-center (farthest-first) selection of ``n`` rows of ``x``.

    ``idx[0] = start``; each further index is the not-yet-selected row whose squared Euclidean
    distance to its nearest selected row is largest, ties to the lowest index. On the CPU the
    distances are accumulated in float64, so the selection equals the plain float64 loop of
    :func:`xmodal.reference.greedy_coreset`. One fused pass over ``x`` per selected row.

    Args:
        x: (N, D) floating array, numpy or torch (CPU or CUDA). Copied once if it is not
            C-contiguous float32.
        n: rows to select, 1 <= n <= N.
        start: first selected row, 0 <= start < N.

    Returns:
        idx (n,) int64, same framework and device as ``x``; all distinct.
    """
    arr, kind = _arrays.as_float32(x, "x", ndim=2, shape_doc="(N, D)")
    num_points = arr.shape[0]
    if num_points == 0 or arr.shape[1] == 0:
        msg = f"x must be a non-empty (N, D) matrix; got shape {tuple(arr.shape)}"
        raise ValueError(msg)
    n = _arrays.positive_int(n, "n", maximum=num_points, what="N=")
    start = _arrays.positive_int(start, "start", minimum=0, maximum=num_points - 1, what="N-1=")
    _arrays.check_finite(arr, "x")
    idx = _arrays.empty(kind, (n,), "int64")
    run_kernel("greedy_coreset", kind, arr, n, start, idx)
    return idx


def jl_dimension(num_samples: int, eps: float = 0.9) -> int:
    """Johnson-Lindenstrauss target dimension of the "sparse" coreset projection.

    The smallest dimension that preserves pairwise distances of ``num_samples`` points within a
    factor (1 +- eps), as ``sklearn.random_projection.johnson_lindenstrauss_min_dim`` computes it
    (anomalib and M3DM use eps = 0.9: 301 dimensions for 200,000 rows).

    Args:
        num_samples: number of rows to project, >= 1 (1 gives 0, as sklearn).
        eps: distortion, in (0, 1).

    Returns:
        The target dimension (int).
    """
    num_samples = _arrays.positive_int(num_samples, "num_samples")
    eps = _arrays.number(eps, "eps", minimum=0, maximum=1, low_open=True, high_open=True)
    denominator = eps**2 / 2 - eps**3 / 3
    return int(4 * math.log(num_samples) / denominator)


def projection_matrix(num_samples: int, dim: int, projection, proj_dim: int, rng: np.random.Generator):
    """The (out_dim, dim) float32 projection matrix, or None when no projection applies.

    "sparse": Li et al.'s very sparse random projection that sklearn's SparseRandomProjection
    (and through it anomalib and M3DM) use: density 1/sqrt(dim), entries +-sqrt(1/density) /
    sqrt(out_dim), out_dim = JL dimension at eps = 0.9 (depends on the number of rows only).
    "linear": PatchCore's untrained ``torch.nn.Linear(dim, proj_dim, bias=False)``, i.e.
    entries uniform in +-1/sqrt(dim). A projection that would not reduce the dimension is
    skipped, as M3DM does when the JL dimension exceeds the feature dimension.

    Args:
        num_samples: rows the matrix will project (sets the JL dimension of "sparse").
        dim: input feature dimension D.
        projection: "sparse", "linear" or None.
        proj_dim: output dimension of "linear".
        rng: numpy Generator the entries are drawn from (:func:`coreset` passes
            ``default_rng(seed)`` after drawing its start index).

    Returns:
        (out_dim, dim) float32 numpy array, or None.
    """
    _arrays.one_of(projection, "projection", PROJECTIONS)
    num_samples = _arrays.positive_int(num_samples, "num_samples")
    dim = _arrays.positive_int(dim, "dim")
    proj_dim = _arrays.positive_int(proj_dim, "proj_dim")
    if not isinstance(rng, np.random.Generator):
        msg = f"rng must be a numpy Generator (numpy.random.default_rng(seed)); got {type(rng).__name__}"
        raise TypeError(msg)
    if projection is None:
        return None
    if projection == "sparse":
        out_dim = jl_dimension(max(num_samples, 2))
        if out_dim >= dim:
            return None
        density = 1.0 / math.sqrt(dim)
        mask = rng.random((out_dim, dim)) < density
        signs = np.where(rng.random((out_dim, dim)) < 0.5, -1.0, 1.0)
        scale = math.sqrt(1.0 / density) / math.sqrt(out_dim)
        return (mask * signs * scale).astype(np.float32)
    if proj_dim >= dim:  # "linear"
        return None
    bound = 1.0 / math.sqrt(dim)
    return rng.uniform(-bound, bound, size=(proj_dim, dim)).astype(np.float32)


class SparseRows:
    """A projection matrix stored as its nonzeros (CSR), for :func:`project_sparse`.

    Built once per matrix (the bank builder projects every image's rows with the same one).
    """

    def __init__(self, matrix: np.ndarray):
        matrix = np.asarray(matrix, dtype=np.float32)
        rows, cols = np.nonzero(matrix)  # row-major: columns ascend within each row
        self.shape = matrix.shape
        self.indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=self.indptr[1:])
        self.indices = cols.astype(np.int32)
        self.values = np.ascontiguousarray(matrix[rows, cols])


def project_sparse(rows: np.ndarray, sparse: SparseRows) -> np.ndarray:
    """``rows @ matrix.T`` for a sparse ``matrix``: (r, D) C-contiguous float32 numpy rows ->
    (r, out) float32.

    Each output is the float64 sum of the exact products in ascending column order, rounded
    once to float32 (csrc/ops/coreset/projection.h): the same bits for any batching of the rows,
    on every CPU level. This, not a dense GEMM, is how :func:`coreset` and the bank builder
    apply the "sparse" projection, so the two select the same rows.
    """
    out = np.empty((rows.shape[0], sparse.shape[0]), dtype=np.float32)
    C.sparse_project_cpu(rows, sparse.indptr, sparse.indices, sparse.values, out)
    return out


def coreset(features, ratio=None, n=None, projection="sparse", proj_dim: int = 128, start="random", seed: int = 0):
    """Greedy coreset of ``features`` on randomly projected features.

    Args:
        features: (N, D) floating array, numpy or torch (CPU or CUDA).
        ratio: fraction of rows to keep, in (0, 1]; n = max(1, int(N * ratio)) as anomalib and
            M3DM count. Give exactly one of ``ratio`` and ``n``.
        n: number of rows to keep, 1 <= n <= N.
        projection: "sparse" (JL very sparse projection at eps 0.9, anomalib / M3DM; on the CPU
            applied by :func:`project_sparse`, float64 sums of its nonzeros rounded once to
            float32), "linear" (PatchCore's dense random map to ``proj_dim``, a float32 GEMM) or
            None (select on raw features).
        proj_dim: output dimension of the "linear" projection.
        start: "random" (drawn from ``seed``, as anomalib) or the index of the first row
            (M3DM uses 0).
        seed: seeds the start and the projection matrix; equal seeds give equal selections.

    Returns:
        idx (n,) int64 selected rows in selection order, same framework and device as
        ``features``.
    """
    arr, kind = _arrays.as_float32(features, "features", ndim=2, shape_doc="(N, D)")
    num_points, dim = arr.shape
    if num_points == 0 or dim == 0:
        msg = f"features must be a non-empty (N, D) matrix; got shape {tuple(arr.shape)}"
        raise ValueError(msg)
    if (ratio is None) == (n is None):
        msg = "give exactly one of ratio and n"
        raise ValueError(msg)
    if ratio is not None:
        ratio = _arrays.number(ratio, "ratio", minimum=0, maximum=1, low_open=True, expected="a number in (0, 1]")
        n = max(1, int(num_points * ratio))
    n = _arrays.positive_int(n, "n", maximum=num_points, what="N=")
    proj_dim = _arrays.positive_int(proj_dim, "proj_dim")
    rng = np.random.default_rng(seed)
    if isinstance(start, str):
        if start != "random":
            msg = f"start must be 'random' or an int; got {start!r}"
            raise ValueError(msg)
        start = int(rng.integers(num_points))
    else:
        start = _arrays.positive_int(start, "start", minimum=0, maximum=num_points - 1, what="N-1=")
    matrix = projection_matrix(num_points, dim, projection, proj_dim, rng)
    _arrays.check_finite(arr, "features")
    if matrix is not None and projection == "sparse" and not kind.cuda:
        projected = project_sparse(arr.numpy() if kind.torch else arr, SparseRows(matrix))
        arr = _arrays._torch().from_numpy(projected) if kind.torch else projected
    elif matrix is not None:
        # the dense "linear" map, and CUDA input (whose float32 greedy does not promise the CPU's
        # selection anyway): a GEMM on the features' device
        if kind.torch:
            import torch

            arr = arr @ torch.from_numpy(matrix).to(arr.device).T
        else:
            arr = arr @ matrix.T
    return greedy_coreset(arr, n, start)
