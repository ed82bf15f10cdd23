"""Small synthetic sets shared by the flow-method tests (RGB-visible defects only)."""

from __future__ import annotations

import numpy as np

from xmodal import metrics
from xmodal.data import synthetic

RGB_DEFECTS = ("stain", "discoloration", "crack", "contamination")


def train(n=16, size=96, category="puck"):
    return [synthetic.make_sample(category, "good", image_size=size, split="train", index=i)[0] for i in range(n)]


def with_defects(good=6, per_defect=2, size=96, category="puck"):
    out = [synthetic.make_sample(category, "good", image_size=size, index=i)[0] for i in range(good)]
    for d in RGB_DEFECTS:
        out += [synthetic.make_sample(category, d, image_size=size, index=i)[0] for i in range(per_defect)]
    return out


def image_auroc(detector, samples) -> float:
    results = detector.predict_batch(samples)
    labels = np.array([s.label for s in samples])
    return float(metrics.auroc(np.array([r.score for r in results]), labels))


def fit_one_thread(detector, samples, **kwargs):
    """Fits with one torch thread: on a shared, loaded machine the small flow kernels run many
    times faster than with threads contending for the cores (results are the same)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return detector.fit(samples, **kwargs)
    finally:
        torch.set_num_threads(threads)
