"""The package's layering: upper layers reach the kernels only through xmodal.ops' public names,
and the kernels, metrics and memory bank work without torch."""

from __future__ import annotations

import ast
import itertools
import pathlib
import re
import subprocess
import sys
import textwrap

import xmodal
import xmodal.ops

PACKAGE = pathlib.Path(xmodal.__file__).parent
BENCHMARKS = pathlib.Path(__file__).parent.parent / "benchmarks"


def _private_ops_uses(path: pathlib.Path) -> list[str]:
    """`from ...ops._x import`, `import xmodal.ops._x`, `from ...ops import _x` and `ops._x`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            parts = node.module.split(".")
            if "_ops" in parts or any(a == "ops" and b.startswith("_") for a, b in itertools.pairwise(parts)):
                found.append(f"{path.name}:{node.lineno}: from {'.' * node.level}{node.module} import ...")
            elif parts[-1] == "ops":
                found += [f"{path.name}:{node.lineno}: from ...ops import {a.name}" for a in node.names
                          if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                      if "._ops" in a.name or ".ops._" in a.name]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and isinstance(node.value, (ast.Name, ast.Attribute))
              and (node.value.id if isinstance(node.value, ast.Name) else node.value.attr) == "ops"):
            found.append(f"{path.name}:{node.lineno}: ops.{node.attr}")
    return found


def test_nothing_outside_ops_uses_a_private_ops_name():
    files = [p for p in PACKAGE.rglob("*.py") if "ops" not in p.relative_to(PACKAGE).parts[:1]]
    files += sorted(BENCHMARKS.glob("*.py"))
    assert len(files) > 20
    offenders = [use for path in files for use in _private_ops_uses(path)]
    assert offenders == []


def test_the_checker_finds_private_uses(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from xmodal.ops._dispatch import run_kernel\nfrom ..ops import _private\n"
                   "from xmodal._ops.knn import knn\nimport xmodal.ops._dispatch\nx = xmodal.ops._dispatch\n")
    assert len(_private_ops_uses(bad)) == 5
    good = tmp_path / "good.py"
    good.write_text("from xmodal.ops import knn, aupro_bootstrap\nfrom . import ops\ny = ops.knn\n")
    assert _private_ops_uses(good) == []


def test_ops_public_names_are_documented():
    assert sorted(xmodal.ops.__all__) == sorted(set(xmodal.ops.__all__))
    for name in xmodal.ops.__all__:
        value = getattr(xmodal.ops, name)
        assert value.__doc__ and len(value.__doc__.strip()) > 40, name
    assert not (PACKAGE / "_ops").exists() and not (PACKAGE / "ops.py").exists()


_HIDE_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, HideTorch())
""")


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _HIDE_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_import_and_kernels_work_without_torch(tmp_path):
    result = _run_without_torch(f"""
        import sys
        import numpy as np

        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("torch was not hidden")
        import xmodal
        from xmodal import ops
        assert "torch" not in sys.modules, "import xmodal loaded torch"

        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 8)).astype(np.float32)
        d, i = xmodal.knn(x[:5], x, 3)
        assert isinstance(d, np.ndarray) and (i[:, 0] == np.arange(5)).all()
        assert xmodal.greedy_coreset(x, 10).shape == (10,)
        assert xmodal.coreset(x, ratio=0.1).shape == (30,)
        pts = rng.random((500, 3)).astype(np.float32)
        ops.farthest_point_sample(pts, 16)
        groups = ops.group_points(pts, 8, 4)
        ops.three_nn_interpolate(pts, groups.centers, rng.random((8, 5)).astype(np.float32))
        ops.dbscan(pts, 0.2, 3)
        ops.ransac_plane(pts, 0.01, 3, 20)
        ops.mlp(x, [rng.standard_normal((4, 8)).astype(np.float32)], [None])
        maps = rng.random((3, 16, 16)).astype(np.float32)
        masks = np.zeros((3, 16, 16), bool); masks[0, 4:8, 4:8] = True
        ops.aupro(maps, masks); ops.pro_curve(maps, masks, 10); ops.connected_components(masks)
        ops.auroc(maps.max(axis=(1, 2)), [1, 0, 0])
        report = xmodal.metrics.evaluate_maps(None, None, maps, masks, bootstrap=5)
        table = xmodal.metrics.ResultsTable(); table.add("a", report); table.save({str(tmp_path)!r})

        bank = xmodal.MemoryBank(x, coreset_ratio=0.5)
        assert bank.query(x[:4], 2).idx.shape == (4, 2)
        built = xmodal.MemoryBank.build(np.split(x, 3), 300, coreset_ratio=0.2, chunk_rows=100)
        built.save({str(tmp_path / "bank.safetensors")!r})
        xmodal.MemoryBank.load({str(tmp_path / "bank.safetensors")!r}).query(x[:2])
        from xmodal.data import synthetic
        synthetic.make_sample("puck", "dent", image_size=64)

        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_one_cpu_cuda_dispatch(monkeypatch):
    """Every op reaches the native module through ops._dispatch.run_kernel: CPU inputs call
    ``<op>_cpu(*args)``, CUDA inputs check the build and call ``<op>_cuda(*args, *cuda_args,
    stream)``; no other ops module names a CUDA entry point itself."""
    torch = __import__("pytest").importorskip("torch")
    from xmodal import _arrays
    from xmodal.ops import _dispatch

    calls = []

    class FakeNative:
        def __getattr__(self, name):
            return lambda *args: calls.append((name, args))

    monkeypatch.setattr(_dispatch, "C", FakeNative())
    monkeypatch.setattr(_dispatch, "require_cuda", lambda op: calls.append(("require_cuda", (op,))))
    monkeypatch.setattr(_arrays, "stream_of", lambda kind: 77)
    _dispatch.run_kernel("knn", _arrays.ArrayKind(False), 1, 2, cuda_args=(3,))
    _dispatch.run_kernel("knn", _arrays.ArrayKind(True, torch.device("cpu")), 1, 2, cuda_args=(3,))
    _dispatch.run_kernel("knn", _arrays.ArrayKind(True, torch.device("cuda")), 1, 2, cuda_args=(3,))
    assert calls == [("knn_cpu", (1, 2)), ("knn_cpu", (1, 2)), ("require_cuda", ("knn",)),
                     ("knn_cuda", (1, 2, 3, 77))]

    for path in (PACKAGE / "ops").glob("*.py"):
        if path.name != "_dispatch.py":
            text = path.read_text()
            assert not re.search(r"\bC\.\w+_cuda\b", text) and "require_cuda" not in text, path.name
