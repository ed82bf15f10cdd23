import ctypes
import importlib.metadata
import os
import re
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal import _isa
from xmodal._backend import C


def test_build_info_fields():
    info = xmodal.build_info()
    assert set(info) >= {"version", "cuda", "cuda_version", "cuda_archs", "compiler", "openmp", "blas", "isa",
                         "isa_variants", "isa_reason", "cpu_levels"}
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


def _native_libraries():
    """Every shared library of the install: the module and lib/ (kernels variants, CUDA library)."""
    lib_dir = Path(_isa._library_dir())
    return [Path(C.__file__), *sorted(lib_dir.rglob("*.so"))], lib_dir


def test_device_code_is_in_the_cuda_library_only():
    # Device code (the ELF section .nv_fatbin) exists once: in lib/libxmodal_cuda.so of a CUDA
    # build, never in the module or in the CPU variants (which a CUDA build used to copy it into).
    libraries, lib_dir = _native_libraries()
    assert any(p.name == _isa.LIBRARY for p in libraries), libraries
    with_device_code = [p for p in libraries if b".nv_fatbin" in p.read_bytes()]
    cuda_library = lib_dir / "libxmodal_cuda.so"
    if xmodal.build_info()["cuda"]:
        assert with_device_code == [cuda_library]
    else:
        assert with_device_code == [] and not cuda_library.exists()


def test_cuda_runtime_is_hidden_in_the_cuda_library():
    # The static cudart's symbols must not be exported: they would bind to (or serve) another
    # CUDA runtime in the process, such as a CUDA torch's.
    if not xmodal.build_info()["cuda"]:
        pytest.skip("this build has no CUDA")
    library = ctypes.CDLL(str(_native_libraries()[1] / "libxmodal_cuda.so"))
    assert hasattr(library, "_ZN6xmodal17cuda_device_countEv")  # xmodal's own API is exported
    assert not hasattr(library, "cudaGetDeviceCount")


def test_version_is_the_installed_distributions():
    # The CUDA wheel's version has a local label (0.1.0+cu13): xmodal.__version__ must say it too.
    try:
        installed = importlib.metadata.version("xmodal")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("xmodal is not installed as a distribution")
    assert xmodal.__version__ == installed


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


# --- the native module never converts arrays (issue 11 item 1) -------------------------------
# Every array argument of every binding is `.noconvert()`: a wrong dtype or a non-contiguous
# array is a TypeError, never a silent copy (an output converted to a temporary would swallow
# the result). Each case is first called as given (it must succeed), then once per array
# argument with that argument of the wrong dtype and once with it non-contiguous. (Arguments
# that take several dtypes, such as float32 or float16 banks, check the dtype themselves and
# raise TypeError too.)


def _f32(*shape):
    return np.zeros(shape, np.float32)


def _native_calls():
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((20, 3)).astype(np.float32)
    maps = rng.random((2, 5, 6)).astype(np.float32)
    masks = np.zeros((2, 5, 6), np.uint8)
    masks[0, 1:3, 1:3] = 1
    return {
        "knn": ("knn_cpu", dict(queries=_f32(4, 6), bank=_f32(9, 6), k=2, dist=_f32(4, 2),
                                idx=np.zeros((4, 2), np.int64))),
        "coreset": ("greedy_coreset_cpu", dict(x=_f32(10, 4), n=3, start=0, idx=np.zeros(3, np.int64))),
        "fps": ("farthest_point_sample_cpu", dict(points=pts, n=4, start=0, reference=False,
                                                  idx=np.zeros(4, np.int64))),
        "three_nn": ("three_nn_interpolate_cpu", dict(points=pts, centers=pts[:5].copy(),
                                                      center_features=_f32(5, 7), out=_f32(20, 7))),
        "points_to_grid": ("points_to_grid_cpu", dict(features=_f32(4, 3), pixel_index=np.arange(4, dtype=np.int64),
                                                      height=4, width=5, out_height=2, out_width=2,
                                                      channels_last=False, out=_f32(3, 2, 2))),
        "ccl": ("connected_components_cpu", dict(masks=masks, labels=np.zeros((2, 5, 6), np.int32),
                                                 num=np.zeros(2, np.int64))),
        "pro_curve": ("pro_curve_cpu", dict(maps=[maps], masks=[masks], num_thresholds=0)),
        "aupro": ("aupro_cpu", dict(maps=[maps], masks=[masks], num_thresholds=0, limits=np.array([0.3, 0.1]),
                                    out=np.zeros(2))),
        "aupro_bootstrap": ("aupro_bootstrap_cpu", dict(maps=[maps], masks=[masks], num_thresholds=0,
                                                        limits=np.array([0.3]),
                                                        multiplicity=np.ones((3, 2), np.int32), out=np.zeros((3, 1)))),
        "auroc": ("auroc_cpu", dict(scores=[maps.ravel()], labels=[masks.ravel()])),
        "ransac": ("ransac_plane_cpu", dict(points=pts, threshold=0.1, sample_size=3, iterations=10,
                                            probability=0.99, seed=0, plane=np.zeros(4), inliers=np.zeros(20, bool))),
        "dbscan": ("dbscan_cpu", dict(points=pts, eps=0.5, min_points=2, labels=np.zeros(20, np.int64))),
    }


def _mutations(args):
    for name, value in args.items():
        arrays = value if isinstance(value, list) else [value]
        if not all(isinstance(a, np.ndarray) for a in arrays):
            continue
        wrap = (lambda a: [a]) if isinstance(value, list) else (lambda a: a)
        wrong = np.int16 if arrays[0].dtype != np.int16 else np.float32
        yield f"{name}: dtype {np.dtype(wrong)}", {**args, name: wrap(arrays[0].astype(wrong))}
        strided = np.repeat(arrays[0], 2, axis=-1)[..., ::2] if arrays[0].ndim else arrays[0]
        if arrays[0].size > 1:
            assert not strided.flags.c_contiguous
            yield f"{name}: non-contiguous", {**args, name: wrap(strided)}


@pytest.mark.parametrize("family", list(_native_calls()))
def test_bindings_never_convert_arrays(family):
    from xmodal._backend import C

    function, args = _native_calls()[family]
    getattr(C, function)(**args)  # the unmutated call is valid
    cases = list(_mutations(args))
    assert cases
    for what, mutated in cases:
        # nanobind's own message, or the dtype check of arguments that take several dtypes
        try:
            getattr(C, function)(**mutated)
        except TypeError as exc:
            assert re.search(r"incompatible function arguments|must be float32", str(exc)), (what, exc)  # noqa: PT017 (names the case)
        else:
            pytest.fail(f"{function} accepted {what}")
