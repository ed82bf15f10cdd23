import os

import numpy as np
import pytest

import xmodal


def test_build_info_fields():
    info = xmodal.build_info()
    assert set(info) >= {"version", "cuda", "cuda_version", "cuda_archs", "compiler", "openmp", "blas"}
    assert info["version"] == xmodal.__version__
    assert info["openmp"] is True
    assert "openblas" in info["blas"].lower()
    if info["cuda"]:
        assert info["cuda_version"] and "90" in info["cuda_archs"]


def test_cuda_compiled_when_ci_requires_it():
    # .ci/run builds with XMODAL_CUDA=ON and sets this, so a silent CPU-only build fails CI.
    if os.environ.get("XMODAL_REQUIRE_CUDA_BUILD") != "1":
        pytest.skip("XMODAL_REQUIRE_CUDA_BUILD is not set")
    assert xmodal.build_info()["cuda"] is True


def test_cuda_available_is_false_without_device_or_build():
    if not xmodal.build_info()["cuda"]:
        assert xmodal.cuda_available() is False
    assert isinstance(xmodal.cuda_available(), bool)


def test_cuda_path_without_cuda_build_says_how_to_rebuild():
    torch = pytest.importorskip("torch")
    if xmodal.build_info()["cuda"]:
        pytest.skip("this build has CUDA")
    from xmodal._backend import require_cuda

    with pytest.raises(RuntimeError, match="XMODAL_CUDA=ON"):
        require_cuda("knn")
    del torch


def test_threads_roundtrip():
    before = xmodal.get_num_threads()
    xmodal.set_num_threads(1)
    assert xmodal.get_num_threads() == 1
    xmodal.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        xmodal.set_num_threads(0)


def test_import_does_not_need_torch():
    # numpy in, numpy out without torch imported by the call
    d, i = xmodal.knn(np.zeros((1, 2), np.float32), np.ones((3, 2), np.float32), 1)
    assert isinstance(d, np.ndarray) and isinstance(i, np.ndarray)
