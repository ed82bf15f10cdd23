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


@pytest.fixture(scope="session")
def puck_dataset(tmp_path_factory):
    """A small synthetic MVTec 3D-AD category (128², 8 train, 8 validation, 7 defect types x 2 +
    6 good), generated once per session for the end-to-end method tests (read-only)."""
    from xmodal.data import synthetic

    root = tmp_path_factory.mktemp("puck128")
    synthetic.make_dataset(root, categories=["puck"], n_train=8, n_test=2, n_test_good=6, image_size=128, seed=3,
                           n_validation=8)
    return root
