"""The CPU variants of the kernels side by side: baseline (x86-64-v2), avx2 (x86-64-v3) and
avx512 (x86-64-v4), each forced with XMODAL_ISA in its own process (a process loads one
variant), on the same inputs: kNN (the bench_knn shapes, sgemm screening and the D = 3 tree),
the greedy coreset step, FPS, AUPRO and the MLP. Prints one markdown table with every variant's
time and its speed relative to the baseline. The peer here is the baseline build itself: the
speed-up a portable wheel gets from dispatch (faiss/torch comparisons are in bench_knn and
bench_coreset).

    python benchmarks/bench_isa.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import xmodal
from _common import fmt_seconds, machine_line, markdown_table
from xmodal import _isa

_RUN = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import xmodal
from xmodal import ops
from _common import interleaved_best

quick = sys.argv[1] == "quick"
rng = np.random.default_rng(0)
bank = rng.standard_normal((5_000 if quick else 20_000, 768)).astype(np.float32)
queries = rng.standard_normal((784, 768)).astype(np.float32)
pts = rng.standard_normal((10_000 if quick else 50_000, 3)).astype(np.float32)
feats = rng.standard_normal((20_000 if quick else 50_000, 128)).astype(np.float32)
maps = rng.random((20, 224, 224)).astype(np.float32)
masks = np.zeros(maps.shape, np.uint8)
masks[::3, 50:120, 60:140] = 1
w = [rng.standard_normal((768, 768)).astype(np.float32) * 0.03 for _ in range(2)]
b = [np.zeros(768, np.float32), np.zeros(768, np.float32)]
rows = 3136 if quick else 12544
x = rng.standard_normal((rows, 768)).astype(np.float32)
fns = {
    f"knn Q=784 N={len(bank)} D=768 k=9": lambda: ops.knn(queries, bank, 9),
    f"knn Q=1024 N={len(pts)} D=3 k=128": lambda: ops.knn(pts[:1024], pts, 128),
    f"greedy_coreset N={len(feats)} D=128 n=500": lambda: ops.greedy_coreset(feats, 500),
    f"farthest_point_sample N={len(pts)} n=1024": lambda: ops.farthest_point_sample(pts, 1024),
    "aupro 20 x 224 x 224 (exact)": lambda: ops.aupro(maps, masks),
    f"mlp {rows} x 768, 2 layers GELU": lambda: ops.mlp(x, w, b),
}
best = interleaved_best(fns, rounds=2 if quick else 3)
print(json.dumps({"isa": xmodal.build_info()["isa"], "times": {k: v[1] for k, v in best.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller shapes")
    args = parser.parse_args()
    built = [v.strip() for v in xmodal.build_info()["isa_variants"].split(",")]
    levels = [v for v in _isa.LEVELS if v in built and v in (_isa.cpu_levels() or ())]
    if not levels:
        sys.exit(f"no dispatched CPU variants in this build ({built}); build with XMODAL_NATIVE=OFF")
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    for level in levels:
        env = {**os.environ, "XMODAL_ISA": level}
        out = subprocess.run([sys.executable, "-c", _RUN, "quick" if args.quick else "full", here], env=env,
                             check=True, capture_output=True, text=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        assert data["isa"] == level, data
        results[level] = data["times"]
    rows = []
    for name in results[levels[0]]:
        base = results[levels[0]][name]
        rows.append([name, *(f"{fmt_seconds(results[v][name])} ({base / results[v][name]:.2f}x)" for v in levels)])
    print(machine_line())
    print(markdown_table(["op", *(f"{v} (vs {levels[0]})" for v in levels)], rows))


if __name__ == "__main__":
    main()
