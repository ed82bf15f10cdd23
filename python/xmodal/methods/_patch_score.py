"""PatchCore's image score: the largest patch distance, re-weighted by how isolated its match is.

PatchCore (Roth et al., CVPR 2022, Eq. 7): let m_test be the test patch farthest from the
memory bank, s* its distance and m* its nearest bank row. With N_b(m*) the ``num_neighbors``
bank rows nearest to m* (m* itself first),

    s = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*,

i.e. one minus the softmax weight of m* among the support set (anomalib's
``compute_anomaly_score``; ``num_neighbors == 1`` returns s*, as anomalib does). M3DM's variant
(M3DM's code) takes the 3 rows nearest to m*, drops the first (m*),
and divides every distance by D = sqrt(feature dimension):

    s = (1 - exp(s* / D) / (sum_{b in 2 neighbours} exp(||m_test - b|| / D) + eps)) * s*,

with eps = 1e-5 in M3DM's single-modality scorers and 0 in its fused ones. Everything after the
nearest-neighbour search runs in float64 on a handful of rows.
"""

from __future__ import annotations

import math

import torch

from .._arrays import integer, one_of

REWEIGHTS = ("paper", "m3dm", "none")
DEFAULT_NEIGHBORS = {"paper": 9, "m3dm": 3, "none": 1}


def check_reweight(reweight: str, num_neighbors) -> int:
    """Validates the re-weighting options; returns the number of neighbours to use."""
    one_of(reweight, "reweight", REWEIGHTS)
    if num_neighbors is None:
        return DEFAULT_NEIGHBORS[reweight]
    num_neighbors = integer(num_neighbors, "num_neighbors", minimum=1, expected="a positive int")
    if reweight == "m3dm" and num_neighbors < 2:
        msg = f"num_neighbors must be >= 2 with reweight='m3dm' (the first neighbour is m* itself); got {num_neighbors}"
        raise ValueError(msg)
    return num_neighbors


def image_score(patches: torch.Tensor, min_dist: torch.Tensor, nn_index: torch.Tensor, bank: torch.Tensor, *,
                reweight: str = "paper", num_neighbors: int = 9, eps: float = 0.0, scale: float = 1.0) -> float:
    """Re-weighted image score of one image.

    Args:
        patches: (Q, D) float32 scored patch features (Q may be 0: the score is then 0).
        min_dist: (Q,) float32 distance of each patch to its nearest bank row.
        nn_index: (Q,) int64 index of that row.
        bank: (N, D) float32 memory bank, same device as ``patches``.
        reweight: "paper" (Eq. 7), "m3dm" or "none" (s*).
        num_neighbors: support-set size (|N_b(m*)|; M3DM: 3, of which 2 are used).
        eps: added to the M3DM denominator.
        scale: every distance is multiplied by it first (1 / std: M3DM's standardised features).

    Returns:
        The image score, in scaled distance units.
    """
    from ..ops import knn

    if patches.shape[0] == 0:
        return 0.0
    top = int(torch.argmax(min_dist))  # first maximum, like torch.max / np.argmax
    s_star = float(min_dist[top]) * scale
    k = min(num_neighbors, bank.shape[0])
    if reweight == "none" or (reweight == "paper" and k == 1):
        return s_star
    m_test = patches[top : top + 1]
    m_star = bank[int(nn_index[top]) : int(nn_index[top]) + 1]
    support = knn(m_star, bank, k).idx[0]
    if reweight == "m3dm":
        support = support[1:]
        if support.numel() == 0:  # a one-row bank has no neighbour besides m*
            return s_star
    d = torch.linalg.vector_norm(bank[support].double() - m_test.double(), dim=1) * scale
    if reweight == "paper":
        weight = 1.0 - float(torch.softmax(d, dim=0)[0])
        return weight * s_star
    scale = math.sqrt(patches.shape[1])
    logits = torch.cat([torch.tensor([s_star], dtype=torch.float64, device=d.device), d]) / scale
    shift = float(logits.max())  # exp of distances/D can overflow float64 for far-off features
    numerator = math.exp(float(logits[0]) - shift)
    denominator = float(torch.exp(logits[1:] - shift).sum()) + eps * math.exp(-shift)
    return (1.0 - numerator / denominator) * s_star
