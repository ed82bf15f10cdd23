"""Issue 10 part 4: MemoryBank (queries and streamed builds) and xmodal.metrics.evaluate_maps
against the fuzz harness (tests/_fuzz.py), plus regressions for the defects it found."""

from __future__ import annotations

import numpy as np
import pytest

from tests import _fuzz
from xmodal import MemoryBank
from xmodal.metrics import evaluate_maps

torch = pytest.importorskip("torch")


def test_every_bank_and_metrics_case_is_a_reference_result_or_a_named_error():
    rows = _fuzz.assert_clean("bank_metrics", hypothesis=15, min_cases=200)
    assert {r["spec"] for r in rows} == {"MemoryBank.query", "MemoryBank.build", "evaluate_maps"}


@pytest.mark.parametrize(("rows", "ratio", "chunk"), [(4097, 0.1, 4096), (4097, 0.1, 64), (9000, 0.05, 1000)])
def test_streamed_build_whose_bank_has_fewer_than_4096_rows(rows, ratio, chunk):
    x = np.random.default_rng(rows).normal(size=(rows, 16)).astype(np.float32)
    bank = MemoryBank.build([x[: rows // 3], x[rows // 3 :]], rows, coreset_ratio=ratio, chunk_rows=chunk)
    assert len(bank) == int(rows * ratio)
    np.testing.assert_array_equal(bank.to_numpy(), x[bank.indices])
    assert len(set(bank.indices.tolist())) == len(bank)


@pytest.mark.parametrize("value", [1e5, -7e4, 65520.0])
def test_float16_bank_refuses_values_beyond_float16(value):
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = value
    with pytest.raises(ValueError, match=r"^features hold values up to .* beyond float16's range"):
        MemoryBank(x, dtype="float16")
    with pytest.raises(ValueError, match=r"beyond float16's range"):
        MemoryBank(torch.from_numpy(x), dtype="float16")
    x[1, 2] = 65504.0  # the largest float16 is fine
    assert float(MemoryBank(x, dtype="float16").query(x, 1).dist.max()) == 0.0


@pytest.mark.parametrize("batch", [None, "rows.npy", [[1.0, 2.0]]])
def test_build_names_a_batch_that_is_not_an_array(batch):
    with pytest.raises(TypeError, match=r"^batches\[0\] must be an \(r, D\) numpy array or torch tensor"):
        MemoryBank.build([batch], 10)


def test_evaluate_maps_rejects_meta_tensors():
    maps = np.random.default_rng(0).normal(size=(2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[1, :2, :2] = True
    with pytest.raises(TypeError, match=r"^image_scores must be a tensor on the CPU or a CUDA device"):
        evaluate_maps(torch.zeros(2, device="meta"), None, maps, masks)


def test_evaluate_maps_with_huge_and_tiny_finite_values_matches_the_reference():
    from xmodal import reference as ref

    rng = np.random.default_rng(0)
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:5, 2:5] = masks[2, 0:2, 6:8] = True
    for scale in (1e38, 1e-40, 3e38):
        maps = (rng.uniform(-1, 1, (3, 8, 8)) * scale).astype(np.float32)
        got = evaluate_maps(None, None, maps, masks)
        assert got["P-AUROC"] == pytest.approx(ref.auroc(maps, masks), abs=1e-12)
        assert got["AUPRO@30%"] == pytest.approx(ref.aupro(maps.astype(np.float64), masks)[0.3], abs=1e-9)


@pytest.mark.parametrize(("scale", "dtype"), [(3e38, np.float32), (1.7e308, np.float64), (6e4, np.float16)])
def test_cfm_protocol_with_maps_near_the_dtype_maximum(scale, dtype):
    """Found by the fuzz: the cfm protocol's means overflowed to inf (every normalised map became
    0, under filterwarnings=error a RuntimeWarning); float16 maps lost their order in float16."""
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:5, 2:5] = masks[2, 0:2, 6:8] = True
    unit = rng.uniform(0.1, 1, (3, 8, 8))
    unit[masks] += 0.5
    expected = evaluate_maps(None, None, unit, masks, protocol="cfm")
    maps = (unit / 1.5 * scale).astype(dtype)
    for given in (maps, torch.from_numpy(maps)):
        got = evaluate_maps(None, None, given, masks, protocol="cfm")
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key
