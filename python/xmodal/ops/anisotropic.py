"""G2SF's fused anisotropic metric: min over k prototype pairs of the folded LSPN's distance.

The formula, per patch q and pair j (see ``csrc/ops/anisotropic/anisotropic.h``)::

    c_m  = 5 / max(sqrt(s_img^2 + s_pcd^2), 1e-3)     (joint)   or   5 / max(s_m, 1e-3)
    h_a  = relu(c_img (qa_img[q] - A_img[i]) + c_pcd (qa_pcd[q] - A_pcd[p]) + b_a)
    h_b  = relu(B_img[i] + B_pcd[p] + b_b)
    w    = exp(tanh(w2 relu(w1 [h_a, h_b] + b1) + b2))
    l_j  = w_img coef_img s_img + w_pcd coef_pcd s_pcd;   out[q] = min_j l_j

with i = idx_img[q, j], p = idx_pcd[q, j], s_m = dist_m[q, j] and bank rows [A_m | B_m]. Background
patches (foreground False) use w = 1 and never touch the banks. :mod:`xmodal.methods.g2sf.scoring`
builds the arguments from a trained LSPN; :func:`xmodal.reference.anisotropic_min` is the float64
reference.
"""

from __future__ import annotations

import numpy as np

from .. import _arrays
from ._dispatch import run_kernel


def _index(x, name: str, kind: _arrays.ArrayKind, shape: tuple):
    if kind.torch:
        torch = _arrays._torch()
        if not _arrays.is_torch(x) or x.dtype not in (torch.int64, torch.int32):
            msg = f"{name} must be an int64 tensor like the other inputs; got {getattr(x, 'dtype', type(x).__name__)}"
            raise TypeError(msg)
        out = x.to(torch.int64).contiguous()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iu":
            msg = f"{name} must be an integer array; got dtype {arr.dtype}"
            raise TypeError(msg)
        out = np.ascontiguousarray(arr, dtype=np.int64)
    if tuple(out.shape) != shape:
        msg = f"{name} must have shape {shape}; got {tuple(out.shape)}"
        raise ValueError(msg)
    return out


def _mask(x, kind: _arrays.ArrayKind, queries: int):
    if kind.torch:
        torch = _arrays._torch()
        out = x.to(torch.uint8).contiguous() if _arrays.is_torch(x) else torch.as_tensor(np.asarray(x, np.uint8))
        out = out.to(kind.device)
    else:
        out = np.ascontiguousarray(np.asarray(x).astype(np.uint8))
    if tuple(out.shape) != (queries,):
        msg = f"foreground must have shape ({queries},); got {tuple(out.shape)}"
        raise ValueError(msg)
    return out


def anisotropic_min(qa_img, qa_pcd, bank_img, bank_pcd, idx_img, idx_pcd, dist_img, dist_pcd, foreground, b_a, b_b,
                    w1, b1, w2, b2, coef, *, joint: bool = False, return_all: bool = False):
    """Fused per-patch anisotropic metric, min over the k prototype pairs (G2SF Eq. 11).

    Args:
        qa_img, qa_pcd: (Q, H) direction-branch projections of the patches' IMG / PCD features.
        bank_img, bank_pcd: (n_m, 2H) [direction, prototype] projections of every bank row.
        idx_img, idx_pcd: (Q, k) integer bank rows of the k pairs (any value on background).
        dist_img, dist_pcd: (Q, k) bank distances ||f_m - m_m||.
        foreground: (Q,) bool; False = w = 1 (no network).
        b_a, b_b: (H,); w1: (H1, 2H); b1: (H1,); w2: (2, H1); b2: (2,): the folded LSPN.
        coef: (2,) sigma_m / mu_m.
        joint: one direction norm over both modalities (the reference code) instead of one per
            modality (the paper).
        return_all: return the (Q, k) l_j instead of their min.

    Returns:
        (Q,) float32 minima (or (Q, k)), numpy or torch like ``qa_img``.

    Raises:
        TypeError / ValueError naming the argument: wrong dtype, shape, NaN, or a foreground
        index outside its bank.
    """
    qa_img, kind = _arrays.as_float32(qa_img, "qa_img", ndim=2, shape_doc="(Q, H)")
    queries, hidden = (int(s) for s in qa_img.shape)
    floats = {}
    for name, value, ndim in (("qa_pcd", qa_pcd, 2), ("bank_img", bank_img, 2), ("bank_pcd", bank_pcd, 2),
                              ("dist_img", dist_img, 2), ("dist_pcd", dist_pcd, 2), ("b_a", b_a, 1), ("b_b", b_b, 1),
                              ("w1", w1, 2), ("b1", b1, 1), ("w2", w2, 2), ("b2", b2, 1), ("coef", coef, 1)):
        arr, other = _arrays.as_float32(value, name, ndim=ndim)
        _arrays.check_same_kind(kind, other, "qa_img", name)
        floats[name] = arr
    k = int(floats["dist_img"].shape[1]) if floats["dist_img"].ndim == 2 else 0
    expected = {"qa_pcd": (queries, hidden), "bank_img": (None, 2 * hidden), "bank_pcd": (None, 2 * hidden),
                "dist_img": (queries, k), "dist_pcd": (queries, k), "b_a": (hidden,), "b_b": (hidden,),
                "w1": (None, 2 * hidden), "w2": (2, None), "b2": (2,), "coef": (2,)}
    for name, shape in expected.items():
        got = tuple(floats[name].shape)
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=True)):
            msg = f"{name} must have shape {tuple('*' if s is None else s for s in shape)}; got {got}"
            raise ValueError(msg)
    head = int(floats["w1"].shape[0])
    if tuple(floats["b1"].shape) != (head,) or int(floats["w2"].shape[1]) != head:
        msg = f"b1 must be ({head},) and w2 (2, {head}) to match w1; got {tuple(floats['b1'].shape)}, " \
              f"{tuple(floats['w2'].shape)}"
        raise ValueError(msg)
    if k < 1:
        msg = "dist_img must have k >= 1 columns"
        raise ValueError(msg)
    for name in ("qa_img", "qa_pcd", "dist_img", "dist_pcd"):
        _arrays.check_finite(qa_img if name == "qa_img" else floats[name], name)
    ii = _index(idx_img, "idx_img", kind, (queries, k))
    ip = _index(idx_pcd, "idx_pcd", kind, (queries, k))
    fg = _mask(foreground, kind, queries)
    out_min = _arrays.empty(kind, (queries,), np.float32)
    out_all = _arrays.empty(kind, (queries, k) if return_all else (1, 1), np.float32)
    f = floats
    args = (qa_img, f["qa_pcd"], f["bank_img"], f["bank_pcd"], ii, ip, f["dist_img"], f["dist_pcd"], fg, f["b_a"],
            f["b_b"], f["w1"], f["b1"], f["w2"], f["b2"], f["coef"], bool(joint), out_min, out_all, bool(return_all))
    if kind.cuda:
        status = _arrays.zeros(kind, (1,), np.int32)
        run_kernel("anisotropic_min", kind, *args, cuda_args=(status,))
        if int(status.item()) != 0:
            msg = "idx_img / idx_pcd hold a foreground index outside its bank"
            raise ValueError(msg)
    else:
        run_kernel("anisotropic_min", kind, *args)
    return out_all if return_all else out_min
