"""A detector with no backbone, for testing the Detector plumbing fast (also from subprocesses).

Its map is |gray - mean gray of the training images| on a 16 x 16 grid; its score the map's
maximum. Samples: a flat gray image; an anomalous one carries a bright square.
"""

from __future__ import annotations

import contextlib

import numpy as np

from xmodal.data import Sample
from xmodal.methods import METHODS
from xmodal.methods.base import AnomalyResult, Detector, register

SIDE = 16


def sample(index: int, anomalous: bool = False, size: int = 32) -> Sample:
    rng = np.random.default_rng(index)
    rgb = np.clip(100 + rng.normal(0, 6, (size, size, 3)), 0, 255)
    gt = np.zeros((size, size), bool)
    if anomalous:
        top = 4 + index % 12
        rgb[top : top + 8, 6:14] += 90
        gt[top : top + 8, 6:14] = True
    xyz = np.ones((size, size, 3), np.float32)
    return Sample(rgb=rgb.astype(np.uint8), xyz=xyz, gt=gt if anomalous else None, label=int(anomalous),
                  defect="bright" if anomalous else "good")


@register
class Toy(Detector):
    method = "toy"
    map_size = SIDE

    def __init__(self, seed: int = 0, calibration: float = 0.1, progress: bool = False, batch_size: int = 2,
                 device: str = "cpu", **legacy):
        # device: accepted (CPU only) so that xmodal.load(path, device=...) and `xmodal predict` work
        common = self.common_options(legacy, backbones="offline", weights_dir=None, device=device, seed=seed,
                                     batch_size=batch_size, max_memory=None, max_memory_default=None,
                                     calibration=calibration, progress=progress, random_weights=False, pointmae=None)
        super().__init__(**{k: common[k] for k in ("seed", "calibration", "progress", "batch_size")})
        self.mean = None
        self.seen = []  # ids of the training samples (tests check the held-out split)

    def _fit(self, samples) -> None:
        self.info = {"backbones": "none"}
        total, self.seen = 0.0, []
        for batch in self._batches(samples, "toy fit"):
            for s in batch:
                total += float(s.rgb.mean())
                self.seen.append(float(s.rgb.mean()))
        self.mean = total / len(self.seen)

    def _score_batch(self, batch):
        out = []
        for s in batch:
            gray = s.rgb.astype(np.float32).mean(-1)
            h, w = gray.shape
            grid = gray[: h - h % SIDE, : w - w % SIDE].reshape(SIDE, h // SIDE, SIDE, w // SIDE).mean(axis=(1, 3))
            score_map = np.abs(grid - np.float32(self.mean)).astype(np.float32)
            out.append(AnomalyResult(score=float(score_map.max()), map=score_map))
        return out

    def _state(self):
        return {"mean": np.array([self.mean])}

    def _state_spec(self):
        return {"mean": (1,)}

    def _restore(self, state):
        self.mean = float(state["mean"][0])


@contextlib.contextmanager
def loadable():
    """Makes "toy" a known method name (for xmodal.load) while the block runs."""
    METHODS["toy"] = ("unused: registered by tests._toy", "Toy")
    try:
        yield
    finally:
        METHODS.pop("toy", None)
