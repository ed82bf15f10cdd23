"""Output allocation at the Python boundary: large CPU outputs get huge-page advice on their
2 MiB-aligned interior only, and never for small or CUDA outputs."""

import numpy as np
import pytest

from xmodal import _arrays


@pytest.fixture
def advice(monkeypatch):
    calls = []
    monkeypatch.setattr(_arrays, "_madvise", lambda start, length, flag: calls.append((start, length, flag)) or 0)
    return calls


def _check_interior(calls, address, nbytes):
    assert len(calls) == 1
    start, length, flag = calls[0]
    assert flag == 14  # MADV_HUGEPAGE
    assert start % (2 << 20) == 0 and length % (2 << 20) == 0 and length > 0
    assert address <= start and start + length <= address + nbytes
    assert start - address < (2 << 20) and (address + nbytes) - (start + length) < (2 << 20)


def test_large_numpy_output_is_advised_inside_its_bounds(advice):
    out = _arrays.empty(_arrays.kind_of(np.zeros(1, np.float32)), (1152, 56, 56), "float32")
    assert out.shape == (1152, 56, 56) and out.dtype == np.float32
    _check_interior(advice, out.ctypes.data, out.nbytes)


def test_large_torch_output_is_advised_inside_its_bounds(advice):
    torch = pytest.importorskip("torch")
    out = _arrays.empty(_arrays.kind_of(torch.zeros(1)), (1152, 64, 64), "float32")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    _check_interior(advice, out.data_ptr(), out.nbytes)


def test_small_outputs_are_left_alone(advice):
    _arrays.empty(_arrays.kind_of(np.zeros(1, np.float32)), (1024, 3), "float32")
    assert advice == []


def test_real_advice_keeps_the_buffer_usable():
    out = _arrays.empty(_arrays.kind_of(np.zeros(1, np.float32)), (3, 1 << 21), "float32")
    out[...] = 1.5
    assert float(out.sum()) == 1.5 * out.size


def test_integer_and_number_follow_one_rule():
    from xmodal import _arrays

    assert _arrays.integer(3, "n", minimum=1) == 3
    assert _arrays.integer(None, "n", allow_none=True) is None
    for bad_kind in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="n must be an int"):
            _arrays.integer(bad_kind, "n")
    with pytest.raises(ValueError, match=r"n must be in \[1, 4\]; got 5"):
        _arrays.integer(5, "n", minimum=1, maximum=4)
    assert _arrays.number(0.5, "r", minimum=0, maximum=1, low_open=True) == 0.5
    assert _arrays.number(None, "r", allow_none=True) is None
    for bad_kind in (False, "0.1", [0.1], None):
        with pytest.raises(TypeError, match="r must be a number"):
            _arrays.number(bad_kind, "r")
    for bad_value in (0, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"r must be a finite number in \(0, 1\]"):
            _arrays.number(bad_value, "r", minimum=0, maximum=1, low_open=True)
    with pytest.raises(ValueError, match=r"in \[0, inf\)"):
        _arrays.number(-1, "r", minimum=0)


def test_worded_expectations_keep_the_rule():
    with pytest.raises(ValueError, match=r"eps must be a positive finite number; got 0.0"):
        _arrays.number(0, "eps", minimum=0, low_open=True, expected="a positive finite number")
    with pytest.raises(TypeError, match="eps must be a number; got str"):
        _arrays.number("1", "eps", minimum=0, low_open=True, expected="a positive finite number")
    with pytest.raises(ValueError, match="depth must be an int in \\[1, 12\\]; got 13"):
        _arrays.integer(13, "depth", minimum=1, maximum=12, expected="an int in [1, 12]")
    with pytest.raises(TypeError, match="depth must be an int; got float"):
        _arrays.integer(1.5, "depth", minimum=1, maximum=12, expected="an int in [1, 12]")
    assert _arrays.positive_int(np.int64(3), "n", maximum=3, what="N=") == 3
    with pytest.raises(ValueError, match=r"n must be in \[1, N=3\]; got 4"):
        _arrays.positive_int(4, "n", maximum=3, what="N=")
    assert _arrays.one_of(None, "projection", ("sparse", None)) is None
