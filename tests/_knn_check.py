"""Tie-aware comparison of kNN results with an independent implementation (faiss style)."""

import numpy as np


def assert_knn_matches(dist, idx, ref_dist, ref_idx, rtol=1e-5, atol=1e-6):
    """Distances agree within tolerance; index sets agree except inside groups of (near-)equal
    distances, where any permutation — and, at the k-th position, any tied member — is fine."""
    dist, idx = np.asarray(dist), np.asarray(idx)
    ref_dist, ref_idx = np.asarray(ref_dist), np.asarray(ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=rtol, atol=atol)
    for row in range(idx.shape[0]):
        if np.array_equal(idx[row], ref_idx[row]):
            continue
        d = ref_dist[row]
        # positions whose distance is not tied (within tolerance) with a neighbour must match
        tol = atol + rtol * np.abs(d)
        for j in range(idx.shape[1]):
            tied = np.abs(d - d[j]) <= tol + tol[j]
            if tied.sum() == 1 and j < idx.shape[1] - 1:
                assert idx[row, j] == ref_idx[row, j], (row, j, idx[row], ref_idx[row])
        # the untied prefix of the row as sets
        kth = d[-1]
        sure = d < kth - tol[-1] * 2
        assert set(idx[row][sure]) == set(ref_idx[row][sure]), (row, idx[row], ref_idx[row])
