"""The path around the backbones (issue 18 item 6): a batch gives exactly the per-image results."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xmodal.data import synthetic  # noqa: E402
from xmodal.methods import PatchCore  # noqa: E402

SIZE = 96


def _samples(split, defects, n):
    return [synthetic.make_sample("puck", d, image_size=SIZE, split=split, index=i)[0] for i in range(n)
            for d in defects]


@pytest.mark.parametrize("modality", ["rgb", "rgb+xyz", "xyz"])
def test_predict_batch_equals_predict(modality):
    det = PatchCore(modality=modality, backbones="offline", progress=False, calibration=0.25, batch_size=3)
    det.fit(_samples("train", ["good"], 8))
    tests = _samples("test", ["good", "stain", "dent"], 2)
    single = [det.predict(s) for s in tests]
    for size in (2, 4, len(tests)):
        batched = det.predict_batch(tests, batch_size=size)
        for a, b in zip(single, batched, strict=True):
            assert a.score == b.score
            np.testing.assert_array_equal(a.map, b.map)
            assert a.is_anomalous == b.is_anomalous
    assert det._batch_nearest is None  # nothing of a batch is kept
