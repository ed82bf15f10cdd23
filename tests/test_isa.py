"""The CPU variants of the kernels (baseline x86-64-v2, AVX2+FMA, AVX-512; issue 16).

Each variant this machine can run is forced with XMODAL_ISA in a subprocess (a process loads one
variant for good), runs every hot kernel on the same inputs and must return the same bits:
every level compiles with -ffp-contract=off, so vector width changes speed, never results.
The choice logic itself is tested in-process with the loading stubbed out.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import xmodal
from xmodal import _isa

_PROBE = r"""
import json, sys
import numpy as np
import xmodal
from xmodal import ops

rng = np.random.default_rng(7)
out = {}
# kNN: the KD-tree path (D = 3), the sgemm screening path (odd D), a float16 bank, exact ties.
bank3 = rng.standard_normal((700, 3)).astype(np.float32)
q3 = rng.standard_normal((90, 3)).astype(np.float32)
out["knn3_d"], out["knn3_i"] = ops.knn(q3, bank3, 5)
bank = rng.standard_normal((1500, 67)).astype(np.float32)
bank[700:760] = bank[0]                          # 61 equal rows: ties resolved by index
q = rng.standard_normal((130, 67)).astype(np.float32)
q[:3] = bank[0]
out["knn_d"], out["knn_i"] = ops.knn(q, bank, 9)
out["knn16_d"], out["knn16_i"] = ops.knn(q, bank.astype(np.float16), 4)
# Coreset (plain greedy and with anomalib's sparse projection), FPS, 3-NN interpolation.
out["greedy"] = ops.greedy_coreset(bank, 60, start=3)
out["coreset"] = ops.coreset(bank, n=40, projection="sparse", seed=1)
from xmodal._backend import C
from xmodal.ops.coreset import SparseRows, project_sparse
wide = rng.standard_normal((1001, 1536)).astype(np.float32)
out["projected"] = project_sparse(wide, SparseRows(ops.projection_matrix(20000, 1536, "sparse", 128, rng)))
out["sum_squares"] = np.array(C.sum_squares_cpu(wide))
pts = rng.standard_normal((2000, 3)).astype(np.float32)
out["fps"] = ops.farthest_point_sample(pts, 128, start=5)
out["three_nn"] = ops.three_nn_interpolate(pts, pts[:64].copy(), rng.standard_normal((64, 11)).astype(np.float32))
# Evaluation: PRO curve (exact and threshold-sampled), AUPRO, AUROC (with ties).
maps = rng.random((6, 40, 48)).astype(np.float32).round(2)
masks = np.zeros((6, 40, 48), np.uint8)
masks[1, 5:15, 5:20] = 1
masks[3, 20:38, 30:46] = 1
masks[3, 2:6, 2:6] = 1
out["pro_fpr"], out["pro_pro"] = ops.pro_curve(maps, masks)
out["pro99_fpr"], out["pro99_pro"] = ops.pro_curve(maps, masks, num_thresholds=99)
out["aupro"] = np.array(list(ops.aupro(maps, masks).values()))
out["auroc"] = np.array([ops.auroc(maps.ravel(), masks.ravel())])
# MLP (exact GELU; LeakyReLU), Mahalanobis (per-position and shared factors).
w = [rng.standard_normal((96, 67)).astype(np.float32) * 0.1, rng.standard_normal((33, 96)).astype(np.float32) * 0.1]
b = [rng.standard_normal(96).astype(np.float32), rng.standard_normal(33).astype(np.float32)]
out["mlp_gelu"] = ops.mlp(q, w, b)
out["mlp_leaky"] = ops.mlp(q, w, b, activation="leaky_relu")
x = rng.standard_normal((5, 12, 9)).astype(np.float32)
cov = np.einsum("pij,pkj->pik", a := rng.standard_normal((12, 9, 9)), a) / 9
out["maha"] = ops.mahalanobis(x, x.mean(axis=0), ops.cholesky_factors(cov))
out["maha_shared"] = ops.mahalanobis(x, x.mean(axis=0), ops.cholesky_factors(cov[0]))
out.update(q=q, bank=bank, maps=maps, masks=masks)
np.savez(sys.argv[1], isa=np.array(xmodal.build_info()["isa"]), **{k: np.asarray(v) for k, v in out.items()})
"""


def _runnable_levels():
    info = xmodal.build_info()
    built = [level.strip() for level in info["isa_variants"].split(",")]
    cpu = _isa.cpu_levels() or ()
    return [level for level in _isa.LEVELS if level in built and level in cpu]


def _probe(level, path):
    env = {**os.environ, "XMODAL_ISA": level, "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", _PROBE, str(path)], check=True, env=env, timeout=600)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_build_info_reports_the_variant_in_use():
    info = xmodal.build_info()
    assert info["isa"] in (*_isa.LEVELS, "native")
    assert info["isa"] in [v.strip() for v in info["isa_variants"].split(",")]
    assert info["isa_reason"]
    if os.environ.get("XMODAL_ISA"):
        assert info["isa"] == os.environ["XMODAL_ISA"]
    elif info["isa"] != "native" and _isa.cpu_levels():
        assert info["isa"] == _runnable_levels()[-1]  # the best one this CPU runs


def test_every_variant_gives_the_same_bits(tmp_path):
    levels = _runnable_levels()
    if len(levels) < 2:
        pytest.skip(f"one CPU variant runnable here ({levels or xmodal.build_info()['isa']}); nothing to compare")
    results = {level: _probe(level, tmp_path / f"{level}.npz") for level in levels}
    first = results[levels[0]]
    for level in levels:
        assert str(results[level].pop("isa")) == level
    first.pop("isa", None)
    for level in levels[1:]:
        other = results[level]
        assert set(other) == set(first)
        for name, value in first.items():
            assert other[name].dtype == value.dtype, (level, name)
            assert np.array_equal(other[name], value, equal_nan=True), f"{level} differs from {levels[0]} in {name}"


def test_the_probe_results_are_right(tmp_path):
    # The results compared above are the kernels' real answers, not something trivially equal.
    levels = _runnable_levels()
    got = _probe(levels[0] if levels else "auto", tmp_path / "one.npz")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    q, bank = got["q"].astype(np.float64), got["bank"].astype(np.float64)
    d = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1))
    order = np.lexsort((np.broadcast_to(np.arange(len(bank)), d.shape), d), axis=-1)[:, :9]
    np.testing.assert_array_equal(got["knn_i"], order)
    np.testing.assert_array_equal(got["knn_i"][0], [0, *range(700, 708)])  # ties: lower index first
    np.testing.assert_allclose(got["knn_d"], np.take_along_axis(d, order, -1), rtol=1e-6, atol=1e-6)
    expected = sklearn_metrics.roc_auc_score(got["masks"].ravel(), got["maps"].ravel())
    assert got["auroc"][0] == pytest.approx(expected, abs=1e-12)
    assert got["greedy"][0] == 3 and len(set(got["greedy"].tolist())) == 60
    assert got["fps"][0] == 5 and len(set(got["fps"].tolist())) == 128


def test_forcing_a_variant_by_environment(monkeypatch, tmp_path):
    loaded = []
    lib = tmp_path / "lib"
    for sub in ("", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v4"):
        (lib / sub).mkdir(parents=True, exist_ok=True)
        (lib / sub / _isa.LIBRARY).write_bytes(b"")
    (lib / _isa.VARIANTS_FILE).write_text("baseline avx2 avx512\n")
    monkeypatch.setattr(_isa, "_library_dir", lambda: str(lib))
    monkeypatch.setattr(_isa.ctypes, "CDLL", loaded.append)
    monkeypatch.setattr(_isa, "cpu_levels", lambda: ("baseline", "avx2"))

    sel = _isa.load_kernels({})
    assert sel.level == "avx2" and loaded[-1].endswith("x86-64-v3/" + _isa.LIBRARY)
    sel = _isa.load_kernels({"XMODAL_ISA": "Baseline"})
    assert sel.level == "baseline" and loaded[-1] == str(lib / _isa.LIBRARY)
    assert _isa.load_kernels({"XMODAL_ISA": "auto"}).level == "avx2"
    with pytest.raises(ImportError, match="cannot run"):
        _isa.load_kernels({"XMODAL_ISA": "avx512"})
    with pytest.raises(ValueError, match="XMODAL_ISA must be one of"):
        _isa.load_kernels({"XMODAL_ISA": "sse2"})

    (lib / _isa.VARIANTS_FILE).write_text("native\n")
    count = len(loaded)
    with pytest.raises(ImportError, match="has only the native"):
        _isa.load_kernels({"XMODAL_ISA": "avx2"})
    sel = _isa.load_kernels({})
    assert sel.level is None and "native" in sel.reason and len(loaded) == count

    monkeypatch.setattr(_isa, "cpu_levels", lambda: ())
    (lib / _isa.VARIANTS_FILE).write_text("baseline avx2 avx512\n")
    with pytest.raises(ImportError, match="x86-64-v2"):
        _isa.load_kernels({})


def test_cpu_levels_from_cpuinfo():
    v2 = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
    v3 = v2 + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    v4 = v3 + " avx512f avx512bw avx512cd avx512dq avx512vl"
    assert _isa.cpu_levels(f"processor\t: 0\nflags\t\t: {v4}\n") == ("baseline", "avx2", "avx512")
    assert _isa.cpu_levels(f"flags\t: {v3}\n") == ("baseline", "avx2")
    assert _isa.cpu_levels(f"flags\t: {v2} avx512f avx512bw avx512cd avx512dq avx512vl\n") == ("baseline",)
    assert _isa.cpu_levels(f"flags\t: {v3.replace('fma', '')}\n") == ("baseline",)
    assert _isa.cpu_levels("flags\t: sse2 sse3\n") == ()
    assert _isa.cpu_levels("Features\t: fp asimd\n") is None


def test_unsupported_variant_is_refused_in_a_fresh_process():
    cpu = _isa.cpu_levels()
    missing = [level for level in _isa.LEVELS if cpu is not None and level not in cpu]
    env = {**os.environ, "XMODAL_ISA": missing[0] if missing else "sse2"}
    run = subprocess.run([sys.executable, "-c", "import xmodal"], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode != 0
    assert "XMODAL_ISA" in run.stderr and "Traceback" in run.stderr


def test_xmodal_info_shows_the_dispatch():
    code = "from xmodal.cli import main; raise SystemExit(main(['info']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    info = xmodal.build_info()
    assert f"isa: {info['isa']}" in run.stdout
    assert info["isa_variants"] in run.stdout
    json.dumps(info)  # plain data
