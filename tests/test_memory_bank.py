import numpy as np
import pytest

import xmodal
from xmodal import reference


def test_query_equals_reference_and_coreset_subset(rng, tmp_path):
    feats = rng.standard_normal((1500, 96)).astype(np.float32)
    bank = xmodal.MemoryBank(feats, coreset_ratio=0.1, seed=1)
    assert len(bank) == 150 and bank.dim == 96
    np.testing.assert_array_equal(bank.features, feats[bank.indices])
    q = rng.standard_normal((40, 96)).astype(np.float32)
    dist, idx = bank.query(q, k=3)
    ref_dist, ref_idx = reference.knn(q, feats[bank.indices], 3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_save_load_roundtrip(rng, tmp_path):
    feats = rng.standard_normal((300, 20)).astype(np.float32)
    bank = xmodal.MemoryBank(feats, coreset_ratio=0.5, projection="linear", proj_dim=8, seed=4)
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    loaded = xmodal.MemoryBank.load(path)
    np.testing.assert_array_equal(loaded.features, bank.features)
    np.testing.assert_array_equal(loaded.indices, bank.indices)
    assert loaded.config == bank.config
    q = rng.standard_normal((10, 20)).astype(np.float32)
    np.testing.assert_array_equal(loaded.query(q, 2).idx, bank.query(q, 2).idx)
    raw = path.read_bytes()
    assert b"pickle" not in raw and raw[8:9] == b"{"  # safetensors: length + JSON header


def test_float16_storage(rng, tmp_path):
    feats = rng.standard_normal((200, 32)).astype(np.float32)
    bank = xmodal.MemoryBank(feats, dtype="float16")
    assert bank.features.dtype == np.float16 and bank.features.nbytes == feats.nbytes // 2
    q = rng.standard_normal((15, 32)).astype(np.float32)
    dist, idx = bank.query(q, 4)
    ref_dist, ref_idx = reference.knn(q, feats.astype(np.float16).astype(np.float32), 4)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    bank.save(tmp_path / "b.safetensors")
    assert xmodal.MemoryBank.load(tmp_path / "b.safetensors").features.dtype == np.float16


def test_torch_bank(rng):
    torch = pytest.importorskip("torch")
    feats = torch.from_numpy(rng.standard_normal((100, 8)).astype(np.float32))
    bank = xmodal.MemoryBank(feats, dtype="float16")
    dist, idx = bank.query(torch.zeros(3, 8), 2)
    assert isinstance(dist, torch.Tensor) and bank.features.dtype == torch.float16
    with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
        bank.query(np.zeros((3, 8), np.float32), 1)


def test_bad_input(rng, tmp_path):
    with pytest.raises(ValueError, match="features must be a non-empty"):
        xmodal.MemoryBank(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="dtype must be"):
        xmodal.MemoryBank(np.zeros((3, 4), np.float32), dtype="int8")
    bank = xmodal.MemoryBank(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="x must have D=4"):
        bank.query(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"k must be in \[1, N=3\]"):
        bank.query(np.zeros((2, 4), np.float32), k=4)
    bogus = tmp_path / "x.safetensors"
    from safetensors.numpy import save_file

    save_file({"features": np.zeros((2, 2), np.float32)}, bogus)
    with pytest.raises(ValueError, match="not an xmodal memory bank"):
        xmodal.MemoryBank.load(bogus)
