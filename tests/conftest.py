import numpy as np
import pytest

import xmodal


def pytest_collection_modifyitems(config, items):
    if xmodal.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and an xmodal built with CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
