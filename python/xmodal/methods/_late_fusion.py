"""M3DM's decision-layer fusion: a linear one-class SVM over the per-modality scores.

M3DM (Wang et al., CVPR 2023) scores the *training* images a second time against
the finished banks and fits two ``sklearn.linear_model.SGDOneClassSVM(nu=0.5, max_iter=1000,
random_state=seed)``: one on the image-score vectors [s_xyz, s_rgb], one on the per-pixel
vectors [map_xyz, map_rgb]; at test time ``score_samples`` is the fused anomaly score. For a
linear one-class SVM ``score_samples(x) = x . coef_``, so the fitted model is two or three
numbers: they are stored as arrays and applied without sklearn (and without pickle).
"""

from __future__ import annotations

import numpy as np


def fit_ocsvm(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fits M3DM's SGDOneClassSVM on (N, F) score vectors; returns (coef_ (F,), offset_ (1,)).

    Raises:
        ImportError: scikit-learn is not installed (it is only needed here).
    """
    try:
        from sklearn.linear_model import SGDOneClassSVM
    except ImportError as exc:
        msg = ("fusion='ocsvm' fits sklearn.linear_model.SGDOneClassSVM, so it needs scikit-learn "
               "(pip install scikit-learn); fusion='sum' does not")
        raise ImportError(msg) from exc
    model = SGDOneClassSVM(nu=0.5, max_iter=1000, random_state=seed)
    model.fit(np.asarray(vectors, dtype=np.float64))
    return np.asarray(model.coef_, dtype=np.float64).reshape(-1), np.asarray(model.offset_, dtype=np.float64).reshape(1)


def ocsvm_score(vectors, coef):
    """sklearn's ``score_samples``: (..., F) vectors -> (...) scores, numpy or torch."""
    if hasattr(vectors, "new_tensor"):
        return vectors @ vectors.new_tensor(np.asarray(coef))
    return np.asarray(vectors) @ np.asarray(coef)
