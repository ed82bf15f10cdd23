"""examples/cpp against the installed CMake package: configure, build, run, and compare every
number it prints with the Python API on the same inputs (issue 16 item 5)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal import ops

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cpp"


def _hashed(size, salt):
    # main.cpp's hashed(): ((i * 2654435761 + salt * 40503) mod 2^32 >> 8) / 2^24, exact in float32.
    i = np.arange(size, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(salt * 40503)) & np.uint64(0xFFFFFFFF)
    return ((h >> np.uint64(8)).astype(np.float64) / 16777216.0).astype(np.float32)


@pytest.fixture(scope="module")
def example_output(tmp_path_factory):
    if shutil.which("cmake") is None or not EXAMPLE.is_dir():
        pytest.skip("needs cmake and the source tree's examples/cpp")
    from xmodal.cmake_dir import cmake_dir

    build = tmp_path_factory.mktemp("cpp-example")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build), *generator, f"-Dxmodal_DIR={cmake_dir()}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, timeout=600)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, timeout=600)
    env = dict(os.environ)
    site = Path(cmake_dir()).parents[3]
    if not (site / "scipy_openblas32").is_dir():
        # A venv that sees scipy-openblas32 through a .pth file from another site-packages: the
        # library's relative RUNPATH cannot find it there (a normal install can).
        import scipy_openblas32

        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [scipy_openblas32.get_lib_dir(),
                                                                env.get("LD_LIBRARY_PATH")]))
    run = subprocess.run([str(build / "xmodal_example")], check=True, capture_output=True, text=True, env=env,
                         timeout=300)
    return run.stdout


def test_knn_matches_python(example_output):
    bank, queries = _hashed(500 * 40, 1).reshape(500, 40), _hashed(20 * 40, 2).reshape(20, 40)
    dist, idx = ops.knn(queries, bank, 5)
    rows = re.findall(r"^knn (\d+): (.*)$", example_output, re.MULTILINE)
    assert len(rows) == 20
    for r, values in rows:
        parts = values.split()
        np.testing.assert_array_equal(np.array(parts[0::2], np.int64), idx[int(r)])
        np.testing.assert_array_equal(np.array(parts[1::2], np.float32), dist[int(r)])


def test_coreset_matches_python(example_output):
    bank = _hashed(500 * 40, 1).reshape(500, 40)
    line = re.search(r"^coreset: (.*)$", example_output, re.MULTILINE).group(1)
    np.testing.assert_array_equal(np.array(line.split(), np.int64), xmodal.greedy_coreset(bank, 16))


def test_aupro_matches_python(example_output):
    maps = _hashed(4 * 32 * 32, 3).reshape(4, 32, 32)
    masks = np.zeros((4, 32, 32), np.uint8)
    masks[1, 4:12, 6:20] = 1
    masks[3, 10:30, 2:9] = 1
    expected = ops.aupro(maps, masks)
    got = dict(re.findall(r"^aupro ([0-9.]+): (\S+)$", example_output, re.MULTILINE))
    assert len(got) == 4
    for limit, value in expected.items():
        assert float(got[f"{limit:g}"]) == pytest.approx(value, abs=1e-15)
        assert 0 < value < 1
