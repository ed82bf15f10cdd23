"""G2SF's five LSPN losses (separation, margin, consistency, scaling, crossmodal alignment) + L1.

Each loss is a small function of tensors so that tests can check it against its formula; the
formulas follow the reference code (G2SF's README gives the weighted separation form), the
bracketed paper values are the "paper" weight set:

- separation (weight 1) on q = l0^2: normals q * clamp(q^2, 0.33, 3); anomalies
  relu(1 / (q + 1e-5) - 1 / M) * clamp((q + 1e-5)^-2, 0.33, 3); mean over the batch. M = 2 x
  the largest normalised unimodal distance of an anomalous training patch.
- margin (10 [alpha 10]) on q / max(q | normals): [sum relu(n - min a) + sum relu(1 - a)] / B.
- consistency (40 [beta 60]), k = 5, eta = 1.2: (1/k) sum_{j=1..k} mean relu(l_j - eta (s_j / s_0) l0)
  + (1/k) sum_{j=k+1..2k} mean relu(l0 - l_j), s_j = mean of the two normalised distances.
- scaling (3 [gamma 8]): mean(e - w | anomalies) + mean(relu(w - 1) | normals).
- crossmodal alignment (20 [mu 20]): mean(e - w) of permuted pairs (the first half of the batch
  shuffles f's two modality parts independently, the second half the prototype's).
- L1 (5e-4 [1e-4]) on every Linear weight.

The clamp factors are not detached (the reference weights are plain tensor expressions).
"""

from __future__ import annotations

import math

import torch

E = math.e
EPS = 1e-5
CLAMP = (0.33, 3.0)

# loss weights and the Adam weight decay of each preset (the README: changed after publication)
LOSS_WEIGHTS = {
    "paper": {"separation": 1.0, "margin": 10.0, "consistency": 60.0, "scaling": 8.0, "crossmodal": 20.0,
              "l1": 1e-4, "weight_decay": 1.5e-4},
    "code": {"separation": 1.0, "margin": 10.0, "consistency": 40.0, "scaling": 3.0, "crossmodal": 20.0,
             "l1": 5e-4, "weight_decay": 1e-4},
}
TERMS = ("separation", "margin", "consistency", "scaling", "crossmodal", "l1")


def separation_loss(q: torch.Tensor, normal: torch.Tensor, big_m: float) -> torch.Tensor:
    """Mean over the batch of the weighted separation term (``normal``: bool (B,))."""
    pos = q * torch.clamp(q * q, *CLAMP)
    qe = q + EPS
    neg = torch.relu(1.0 / qe - 1.0 / big_m) * torch.clamp(qe ** -2, *CLAMP)
    return torch.where(normal, pos, neg).mean()


def margin_loss(q: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """[sum relu(n - min a) + sum relu(1 - a)] / B on q normalised by its normal maximum
    (0 when the batch lacks normals or anomalies)."""
    if not bool(normal.any()) or bool(normal.all()):
        return q.sum() * 0.0
    qn = q / q[normal].max()
    n, a = qn[normal], qn[~normal]
    return (torch.relu(n - a.min()).sum() + torch.relu(1.0 - a).sum()) / q.shape[0]


def consistency_loss(lj: torch.Tensor, s_mean: torch.Tensor, k: int = 5, eta: float = 1.2) -> torch.Tensor:
    """Proximal + distal consistency; ``l`` and ``s_mean`` are (B, >= 2k + 1): the metric and
    the mean normalised distance to prototypes 0..2k."""
    l0, s0 = lj[:, :1], s_mean[:, :1]
    proximal = torch.relu(lj[:, 1 : k + 1] - eta * (s_mean[:, 1 : k + 1] / s0) * l0).mean(dim=0).sum() / k
    distal = torch.relu(l0 - lj[:, k + 1 : 2 * k + 1]).mean(dim=0).sum() / k
    return proximal + distal


def scaling_loss(w: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """mean(e - w | anomalies) + mean(relu(w - 1) | normals), w (B, 2) (empty groups give 0)."""
    total = w.sum() * 0.0
    if bool((~normal).any()):
        total = total + (E - w[~normal]).mean()
    if bool(normal.any()):
        total = total + torch.relu(w[normal] - 1.0).mean()
    return total


def crossmodal_loss(w_permuted: torch.Tensor) -> torch.Tensor:
    """mean(e - w) of the scales predicted for modality-permuted pairs."""
    return (E - w_permuted).mean()


def l1_penalty(linears) -> torch.Tensor:
    return sum(layer.weight.abs().sum() for layer in linears)


def add_noise(x: torch.Tensor, split: int, mu: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x + u / ||u|| * rho per modality part, u ~ U[0, 1)^d, rho ~ U(0, 0.1 mu_m) per row."""
    parts = []
    for i, part in enumerate((x[:, :split], x[:, split:])):
        u = torch.rand(part.shape, generator=generator, device=x.device, dtype=x.dtype)
        rho = torch.rand((part.shape[0], 1), generator=generator, device=x.device, dtype=x.dtype) * 0.1 * mu[i]
        parts.append(part + u / u.norm(dim=1, keepdim=True).clamp_min(1e-12) * rho)
    return torch.cat(parts, dim=1)


def permuted_pairs(f: torch.Tensor, m0: torch.Tensor, split: int, generator: torch.Generator):
    """The crossmodal-alignment inputs: rows [0, B/2) get f's two parts shuffled independently
    (prototype kept), rows [B/2, B) the prototype's parts (feature kept)."""
    half = f.shape[0] // 2

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        a = torch.randperm(n, generator=generator, device="cpu").to(x.device)
        b = torch.randperm(n, generator=generator, device="cpu").to(x.device)
        return torch.cat([x[a, :split], x[b, split:]], dim=1)

    f_perm = torch.cat([shuffle(f[:half]), f[half:]])
    m_perm = torch.cat([m0[:half], shuffle(m0[half:])])
    return f_perm, m_perm


def lspn_losses(net, f: torch.Tensor, protos: torch.Tensor, normal: torch.Tensor, mu: torch.Tensor, big_m: float,
                weights: dict, generator: torch.Generator, k: int = 5, eta: float = 1.2,
                noise: bool = True) -> dict[str, torch.Tensor]:
    """All terms of one training batch and their weighted sum under "total".

    Args:
        net: the :class:`~xmodal.methods.g2sf.lspn.LSPN`.
        f: (B, D) features [img, pcd]; protos: (B, >= 2k + 1, D) prototypes, nearest first.
        normal: (B,) bool (True = normal patch, the reference's label +1).
        mu: (2,) mean normal distances; big_m: the separation's M.
    """
    from .lspn import normalised_distances

    split = net.dim_img
    if noise:
        f = add_noise(f, split, mu, generator)
        protos = torch.cat([add_noise(protos[:, 0], split, mu, generator)[:, None], protos[:, 1:]], dim=1)
    count = 2 * k + 1
    fj = f[:, None, :].expand(-1, count, -1)
    mj = protos[:, :count]
    s = normalised_distances(fj, mj, split, mu)  # (B, K, 2)
    w = net.scales(fj, mj)  # (B, K, 2)
    lj = net.metric(w, s)  # (B, K)
    q = lj[:, 0] ** 2
    f_perm, m_perm = permuted_pairs(f, protos[:, 0], split, generator)
    terms = {
        "separation": separation_loss(q, normal, big_m),
        "margin": margin_loss(q, normal),
        "consistency": consistency_loss(lj, s.mean(dim=-1), k, eta),
        "scaling": scaling_loss(w[:, 0], normal),
        "crossmodal": crossmodal_loss(net.scales(f_perm, m_perm)),
        "l1": l1_penalty(net.linear_layers()),
    }
    terms["total"] = sum(weights[name] * terms[name] for name in TERMS)
    return terms
