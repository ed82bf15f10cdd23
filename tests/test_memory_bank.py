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
    dist, _idx = bank.query(torch.zeros(3, 8), 2)
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


# --- exact pruned search (moved from test_patchcore.py; k > 1 and ties added) ---------------


def _structured(rng, n, dim, latent=12, noise=0.01, basis=None):
    """Low-rank non-negative features like CNN patch features; pass ``basis`` to draw queries
    from the same distribution as a bank."""
    basis = rng.standard_normal((latent, dim)) if basis is None else basis
    z = rng.standard_normal((n, basis.shape[0]))
    return (np.maximum(z @ basis / 3, 0) + noise * rng.standard_normal((n, dim))).astype(np.float32)


def _bank_and_queries(rng, n=2500, q=300, dim=320):
    torch = pytest.importorskip("torch")
    basis = rng.standard_normal((12, dim))
    bank = torch.from_numpy(_structured(rng, n, dim, basis=basis))
    bank[100] = bank[7]  # exact duplicate: the lower index must win
    bank[200:203] = bank[50]  # a run of ties: k > 1 lists them in index order
    queries = torch.from_numpy(_structured(rng, q, dim, basis=basis))
    queries[:20] += 3 * torch.from_numpy(rng.standard_normal((20, dim)).astype(np.float32))  # anomalies
    queries[20] = bank[100]
    queries[21] = bank[201]
    return bank, queries


@pytest.mark.parametrize("k", [1, 6, 20])
@pytest.mark.parametrize(("rank", "candidates"), [(None, 16), (16, 2), (32, 1)])
def test_bank_search_equals_knn(rng, rank, candidates, k):
    import torch

    bank, queries = _bank_and_queries(rng)
    memory = xmodal.MemoryBank(bank, rank=rank, candidates=candidates)
    dist, idx = memory.query(queries, k)
    assert memory._search.rank > 0
    want = xmodal.knn(queries, bank, k)
    assert torch.equal(dist, want.dist) and torch.equal(idx, want.idx)
    assert int(idx[20, 0]) == 7
    assert idx[21, :4].tolist() == [50, 200, 201, 202][: min(k, 4)]  # distance 0, then index order
    if candidates == 1 and k == 1:
        assert memory.search_stats["fallback"] > 0  # the fallback path ran and stayed exact


def test_bank_search_equals_float64_reference_with_ties(rng):
    torch = pytest.importorskip("torch")
    bank, queries = _bank_and_queries(rng, q=40)
    memory = xmodal.MemoryBank(bank, rank=16, candidates=4)
    for k in (1, 6, 20):
        dist, idx = memory.query(queries, k)
        ref_dist, ref_idx = reference.knn(queries.numpy(), bank.numpy(), k)
        np.testing.assert_array_equal(idx.numpy(), ref_idx)
        np.testing.assert_array_equal(dist.numpy(), ref_dist)
    del torch


def test_numpy_bank_uses_the_pruned_search_when_torch_is_loaded(rng):
    pytest.importorskip("torch")
    bank, queries = _bank_and_queries(rng, q=50)
    memory = xmodal.MemoryBank(bank.numpy(), rank=16)
    dist, idx = memory.query(queries.numpy(), 6)
    assert isinstance(dist, np.ndarray) and isinstance(idx, np.ndarray)
    assert memory._search.rank == 16 and memory.search_stats["queries"] == 50
    ref_dist, ref_idx = reference.knn(queries.numpy(), bank.numpy(), 6)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_concurrent_searches_keep_torch_threads(rng):
    """Overlapping searches from several Python threads stay exact and never touch torch's
    process-wide thread count (read in the workers while the others search, and after)."""
    import threading

    torch = pytest.importorskip("torch")
    bank, _ = _bank_and_queries(rng)
    queries = torch.from_numpy(_structured(rng, 1500, 320))
    memory = xmodal.MemoryBank(bank, rank=16, candidates=8)
    want = {k: xmodal.knn(queries, bank, k) for k in (1, 6)}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    failures, seen = [], set()

    def work(k):
        for _ in range(5):
            dist, idx = memory.query(queries, k)
            seen.add(torch.get_num_threads())
            if not (torch.equal(dist, want[k].dist) and torch.equal(idx, want[k].idx)):
                failures.append("mismatch")

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in (1, 6, 1, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert seen == {2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bank_search_without_pruning(rng):
    torch = pytest.importorskip("torch")
    bank = torch.from_numpy(rng.standard_normal((50, 120)).astype(np.float32))
    memory = xmodal.MemoryBank(bank)
    q = torch.from_numpy(rng.standard_normal((9, 120)).astype(np.float32))
    want = xmodal.knn(q, bank, 3)
    dist, idx = memory.query(q, 3)
    assert memory._search.rank == 0  # narrow features: plain search
    assert torch.equal(dist, want.dist) and torch.equal(idx, want.idx)


# --- streaming build (moved from test_patchcore.py) -----------------------------------------


@pytest.mark.parametrize(("projection", "framework"), [("sparse", "numpy"), ("linear", "numpy"), ("sparse", "torch")])
def test_one_shot_builder_equals_coreset_of_stacked_rows(rng, tmp_path, projection, framework):
    rows = _structured(rng, 1200, 300)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        rows = torch.from_numpy(rows)
    builder = xmodal.MemoryBank.builder(300, 1200, coreset_ratio=0.1, projection=projection, proj_dim=64, seed=3,
                                        spill_dir=tmp_path)
    for part in rows.split(200) if framework == "torch" else np.split(rows, 6):
        builder.add(part)
    bank = builder.finish()
    idx = xmodal.coreset(rows, ratio=0.1, projection=projection, proj_dim=64, seed=3)
    assert np.array_equal(bank.features, np.asarray(rows[idx]))
    np.testing.assert_array_equal(bank.indices, np.asarray(idx))
    assert list(tmp_path.iterdir()) == []  # the temporary feature file is gone


def test_streaming_builder(rng):
    rows = _structured(rng, 2000, 200)
    one_chunk = xmodal.MemoryBank.builder(200, 2000, coreset_ratio=0.1, seed=1, chunk_rows=2000)
    chunked = xmodal.MemoryBank.builder(200, 2000, coreset_ratio=0.1, seed=1, chunk_rows=300)
    for part in np.split(rows, 8):
        one_chunk.add(part)
        chunked.add(part)
    assert np.array_equal(one_chunk.finish().features, rows[xmodal.coreset(rows, ratio=0.1, seed=1)])
    bank = chunked.finish()
    assert chunked.chunks == 7
    assert bank.features.shape == (200, 200)
    as_rows = {r.tobytes() for r in rows}
    assert all(r.tobytes() in as_rows for r in bank.features) and len({r.tobytes() for r in bank.features}) == 200
    np.testing.assert_array_equal(bank.features, rows[bank.indices])  # positions among the added rows


def test_builder_statistics_and_all_rows(rng):
    rows = rng.standard_normal((90, 5)).astype(np.float32)
    builder = xmodal.MemoryBank.builder(5, 100)
    builder.add(rows[:40])
    builder.add(rows[40:])
    mean, std = builder.statistics()
    assert mean == pytest.approx(rows.astype(np.float64).mean(), rel=1e-9)
    assert std == pytest.approx(rows.astype(np.float64).std(ddof=1), rel=1e-9)
    bank = builder.finish()
    assert np.array_equal(bank.features, rows)
    assert bank.statistics == {"rows": 90, "mean": mean, "std": std}


def test_build_under_max_memory_streams_and_saves_statistics(rng, tmp_path):
    rows = _structured(rng, 3000, 64)
    kept, per_row = xmodal.memory_bank.MemoryBankBuilder.memory_model(64, 3000, 0.1)
    assert kept == 300 * 64 * 4 and per_row == 64 * 4 + 32  # D = 64 < JL dimension: nothing projected
    budget = kept + 500 * per_row
    bank = xmodal.MemoryBank.build(np.split(rows, 30), 3000, coreset_ratio=0.1, max_memory=budget)
    assert bank.config["chunk_rows"] == 500 and len(bank) == 300
    np.testing.assert_array_equal(bank.features, rows[bank.indices])
    bank.save(tmp_path / "b.safetensors")
    loaded = xmodal.MemoryBank.load(tmp_path / "b.safetensors")
    assert loaded.statistics == bank.statistics and loaded.config == bank.config
    with pytest.raises(ValueError, match="max_memory=1000 bytes is too small"):
        xmodal.MemoryBank.builder(64, 3000, coreset_ratio=0.1, max_memory=1000)


def test_builder_bad_input(rng):
    builder = xmodal.MemoryBank.builder(4, 10, coreset_ratio=0.5)
    with pytest.raises(ValueError, match="rows must have D=4 columns"):
        builder.add(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="rows must be a floating-point array"):
        builder.add(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="rows contains NaN"):
        builder.add(np.full((2, 4), np.nan, np.float32))
    builder.add(np.zeros((8, 4), np.float32))
    with pytest.raises(ValueError, match="more rows than announced"):
        builder.add(np.zeros((3, 4), np.float32))
    assert builder.rows_seen == 8 and builder.statistics() == (0.0, 1.0)
    builder.close()
    with pytest.raises(TypeError, match="coreset_ratio must be a number"):
        xmodal.MemoryBank.builder(4, 10, coreset_ratio="0.1")
    with pytest.raises(ValueError, match="projection must be one of"):
        xmodal.MemoryBank.builder(4, 10, projection="pca")
    with pytest.raises(ValueError, match="at least one"):
        xmodal.MemoryBank.build([], 10)
    with pytest.raises(ValueError, match="no rows were added"):
        xmodal.MemoryBank.builder(4, 10).finish()


@pytest.mark.cuda
def test_cuda_builder_runs_the_coreset_on_the_device(rng, monkeypatch):
    """device="cuda": every greedy selection gets a CUDA tensor, the bank lives on the device,
    and each pick is within float32 rounding of the farthest remaining row."""
    import torch

    from xmodal import _bank_build

    rows = _structured(rng, 4000, 300)
    devices = []
    original = _bank_build.greedy_coreset

    def spy(x, n, start=0):
        devices.append(x.device.type)
        return original(x, n, start)

    monkeypatch.setattr(_bank_build, "greedy_coreset", spy)
    for chunk_rows in (None, 1000):
        builder = xmodal.MemoryBank.builder(300, 4000, coreset_ratio=0.05, seed=2, chunk_rows=chunk_rows,
                                            device="cuda")
        projected = rows @ builder.matrix.T
        for part in np.split(rows, 8):
            builder.add(part)
        bank = builder.finish()
        assert bank.features.is_cuda and len(bank) == 200
        np.testing.assert_array_equal(bank.features.cpu().numpy(), rows[bank.indices.cpu().numpy()])
        if chunk_rows is None:  # one greedy pass: check every pick against float64
            picks = bank.indices.cpu().numpy()
            p64 = projected.astype(np.float64)
            nearest = ((p64 - p64[picks[0]]) ** 2).sum(1)
            for pick in picks[1:]:
                assert nearest[pick] >= nearest.max() * (1 - 1e-5)
                nearest = np.minimum(nearest, ((p64 - p64[pick]) ** 2).sum(1))
    assert devices and set(devices) == {"cuda"}
    del torch


@pytest.mark.cuda
def test_cuda_bank_search_equals_cpu(rng):
    import torch

    bank, queries = _bank_and_queries(rng)
    memory = xmodal.MemoryBank(bank.cuda(), rank=16, candidates=8)
    for k in (1, 6, 20):
        dist, idx = memory.query(queries.cuda(), k)
        assert dist.is_cuda and idx.is_cuda
        want = xmodal.knn(queries, bank, k)
        assert torch.equal(idx.cpu(), want.idx) and torch.equal(dist.cpu(), want.dist)
