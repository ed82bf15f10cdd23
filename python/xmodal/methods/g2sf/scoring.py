"""Fused patch scores min_j l_j: the unfused LSPN in torch, and the folded form the native
kernel (:func:`xmodal.ops.anisotropic_min`) runs.

Folding (exact algebra, G2SF reference notes): the first layers of both branches are linear in
f and m, so W_A d = c_img (W_A^img f_img - W_A^img m_img) + c_pcd (W_A^pcd f_pcd - W_A^pcd m_pcd)
with c = 5 / max(||f - m||, 1e-3) (the joint norm for both modalities, or each modality's own)
and W_B m = W_B^img m_img + W_B^pcd m_pcd: the 512-d projections of every bank row are computed
once, those of the test features once per patch. No activation follows the branches' 512 -> 128
layers, so they fold into the head's first layer (a 256 x 1024 matrix). Per (patch, prototype)
pair only gather + add -> ReLU -> 1024 -> 256 -> ReLU -> 256 -> 2 -> exp(tanh) remain.
"""

from __future__ import annotations

import numpy as np
import torch

from .lspn import normalised_distances

CHUNK_ROWS = 1024  # foreground patches per LSPN call of the unfused path (times k prototypes each)


def _chunks(n: int, size: int):
    for first in range(0, n, size):
        yield first, min(n, first + size)


def fused_scores_torch(p, net, mu: np.ndarray, banks: dict, k: int, all_l: bool = False, scales=None):
    """(cells,) min_{j<k} l_j with the unfused LSPN (the reference's computation): per patch
    and prototype, w from the network on [f, m_j], l_j = sum_m w_m sigma_m s_m, s_m the bank
    distances / mu; background cells use w = 1. ``all_l``: return (cells, k) l_j instead.
    ``scales``: a runner of the exported ``lspn`` graph ((rows, D) features and prototypes ->
    (scales,)) standing in for ``net.scales``."""
    mu_t = torch.as_tensor(mu, dtype=torch.float32, device=p.img.device)
    s = torch.stack([p.dist_img[:, :k], p.dist_pcd[:, :k]], dim=-1) / mu_t
    w = torch.ones_like(s)
    rows = torch.nonzero(p.foreground).reshape(-1)
    bank_img, bank_pcd = banks["img"].features, banks["pcd"].features
    with torch.no_grad():
        for a, b in _chunks(rows.numel(), CHUNK_ROWS):
            r = rows[a:b]
            f = torch.cat([p.img[r], p.pcd[r]], dim=1)[:, None, :].expand(-1, k, -1)
            m = torch.cat([bank_img[p.idx_img[r, :k]], bank_pcd[p.idx_pcd[r, :k]]], dim=-1)
            if scales is None:
                w[r] = net.scales(f, m)
            else:
                width = f.shape[-1]
                (out,) = scales(f.reshape(-1, width), m.reshape(-1, width))
                w[r] = out.reshape(len(r), k, 2).to(w.dtype)
        lj = (w * net.sigma() * s).sum(dim=-1)
    return lj if all_l else lj.min(dim=1).values


def lspn_metric_torch(net, f: torch.Tensor, m: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """l of features f and prototypes m (..., D) with distances recomputed from f - m."""
    return net.metric(net.scales(f, m), normalised_distances(f, m, net.dim_img, mu))


class FusedHead:
    """The LSPN folded for inference: per-bank projections and the 256 x 1024 head matrix.

    Attributes:
        wa_img, wa_pcd: (H, D_m) the direction branch's first weights, split by modality.
        bank_img, bank_pcd: (n_m, 2H) float32 [W_A^m rows, W_B^m rows] of every bank row.
        b_a, b_b: (H,) first-layer biases; w1 (H1, 2H), b1 (H1,): the folded layer; w2 (2, H1),
        b2 (2,): the output layer; sigma (2,) the global scales; joint: the direction mode.
    """

    def __init__(self, net, banks: dict, chunk: int = 8192):
        with torch.no_grad():
            a1, a2 = net.branch_direction[0], net.branch_direction[3]
            p1, p2 = net.branch_prototype[0], net.branch_prototype[3]
            h1, h2 = net.head[0], net.head[3]
            split, out = net.dim_img, a2.out_features
            self.wa_img = a1.weight[:, :split].contiguous()
            self.wa_pcd = a1.weight[:, split:].contiguous()
            self.b_a, self.b_b = a1.bias.detach().clone(), p1.bias.detach().clone()
            ha, hb = h1.weight[:, :out], h1.weight[:, out:]
            self.w1 = torch.cat([ha @ a2.weight, hb @ p2.weight], dim=1).contiguous()
            self.b1 = (ha @ a2.bias + hb @ p2.bias + h1.bias).contiguous()
            self.w2, self.b2 = h2.weight.detach().clone().contiguous(), h2.bias.detach().clone().contiguous()
            self.sigma = net.sigma().detach().clone()
            self.joint = net.direction == "joint"
            self.bank_img = self._project(banks["img"].features, self.wa_img, p1.weight[:, :split], chunk)
            self.bank_pcd = self._project(banks["pcd"].features, self.wa_pcd, p1.weight[:, split:], chunk)

    @staticmethod
    def _project(rows: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor, chunk: int) -> torch.Tensor:
        rows = rows.float()
        out = torch.empty((rows.shape[0], wa.shape[0] + wb.shape[0]), dtype=torch.float32, device=rows.device)
        both = torch.cat([wa, wb], dim=0)
        for a, b in _chunks(rows.shape[0], chunk):
            out[a:b] = rows[a:b] @ both.T
        return out

    @property
    def nbytes(self) -> int:
        return int(self.bank_img.numel() + self.bank_pcd.numel()) * 4


def fused_scores_native(p, head: FusedHead, mu: np.ndarray, k: int, all_l: bool = False):
    """(cells,) min_{j<k} l_j through :func:`xmodal.ops.anisotropic_min` (one fused pass)."""
    from ...ops import anisotropic_min

    with torch.no_grad():
        qa_img = p.img @ head.wa_img.T
        qa_pcd = p.pcd @ head.wa_pcd.T
    coef = (head.sigma.double().cpu().numpy() / np.asarray(mu, dtype=np.float64)).astype(np.float32)
    result = anisotropic_min(qa_img.contiguous(), qa_pcd.contiguous(), head.bank_img, head.bank_pcd,
                             p.idx_img[:, :k].contiguous(), p.idx_pcd[:, :k].contiguous(),
                             p.dist_img[:, :k].contiguous(), p.dist_pcd[:, :k].contiguous(), p.foreground,
                             head.b_a, head.b_b, head.w1, head.b1, head.w2, head.b2,
                             torch.from_numpy(coef).to(p.img.device), joint=head.joint, return_all=all_l)
    return result
