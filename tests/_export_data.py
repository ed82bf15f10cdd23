"""The synthetic set and the comparison the export tests share (tests/test_export*.py)."""

from __future__ import annotations

import numpy as np

from xmodal.data import MVTec3D, synthetic

REL = 1e-4  # the bound on |score_engine - score_torch| / |score_torch|


def make_dataset(root):
    """Three training images, two validation images, a defect in 3D, one in RGB, a good part (96 px)."""
    synthetic.make_dataset(root, categories=["puck"], n_train=3, n_test=1, n_test_good=1, image_size=96, seed=3,
                           n_validation=2)
    return root


def picked_samples(root) -> list:
    samples = list(MVTec3D(root, "puck", "test"))
    return [samples[0], samples[3], samples[-1]]  # a defect in 3D, one in RGB, a good part


def assert_same(reference, results, rel=REL):
    """Scores and maps within ``rel`` of the reference (maps: of its largest value), same verdicts."""
    for ref, got in zip(reference, results, strict=True):
        assert abs(got.score - ref.score) <= rel * abs(ref.score), (got.score, ref.score)
        scale = float(np.abs(ref.map).max())
        assert float(np.abs(got.map - ref.map).max()) <= rel * scale
        assert got.is_anomalous == ref.is_anomalous


def small_sample():
    """A 96 px sample with a square of points (arrays only, no file)."""
    from xmodal.data import Sample

    rng = np.random.default_rng(0)
    xyz = np.zeros((96, 96, 3), np.float32)
    xyz[20:70, 20:70] = rng.random((50, 50, 3), dtype=np.float32) * 0.1 + [0, 0, 1]
    return Sample(rgb=rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), xyz=xyz)
