"""The bank builder's cost per image: `MemoryBank.builder(...).add(rows)` for one image's patch
rows (PatchCore WideResNet-50 at 224²: 784 x 1536 float32, projected 1536 -> JL dimension for
the coreset, float64 statistics, raw rows spilled to the temporary file).

Compares this tree's builder with the `_bank_build.py` of another git revision (`--before`,
default `main`), loaded into the same process, in interleaved rounds, for numpy rows and for
CPU torch rows (what PatchCore.fit feeds), and checks that both select the same bank.

    python benchmarks/bench_bank_add.py [--before main] [--images 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np

import xmodal
from _common import fmt_seconds, interleaved_best, machine_line, markdown_table


def load_builder(revision: str):
    """BankBuilder of `python/xmodal/_bank_build.py` at `revision`, as a module of this xmodal."""
    here = os.path.dirname(os.path.abspath(__file__))
    source = subprocess.run(["git", "show", f"{revision}:python/xmodal/_bank_build.py"], cwd=here, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("xmodal._bank_build_before", f.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    os.remove(f.name)
    return module.BankBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default="main", help="git revision of the builder to compare with")
    parser.add_argument("--images", type=int, default=40, help="images announced (sets the JL dimension)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    from xmodal._bank_build import BankBuilder

    Before = load_builder(args.before)
    rows_per_image, dim = 784, 1536
    rng = np.random.default_rng(0)
    images = [np.maximum(rng.standard_normal((rows_per_image, dim)), 0).astype(np.float32) for _ in range(4)]
    max_rows = args.images * rows_per_image
    options = {"ratio": 0.1, "projection": "sparse", "seed": 0}
    builders = {"before": Before(dim, max_rows, **options), "after": BankBuilder(dim, max_rows, **options)}

    def adder(name, framework):
        state = {"i": 0}

        def add():
            if builders[name].rows_seen + rows_per_image > max_rows:  # start over, same matrix
                builders[name].close()
                builders[name] = (Before if name == "before" else BankBuilder)(dim, max_rows, **options)
            image = images[state["i"] % len(images)]
            state["i"] += 1
            builders[name].add(torch.from_numpy(image) if framework == "torch" else image)

        return add

    fns = {(name, fw): adder(name, fw) for fw in ("numpy", "torch") for name in ("before", "after")}
    best = interleaved_best(fns, rounds=args.rounds)
    torch_threads = torch.get_num_threads()
    for builder in builders.values():
        builder.close()

    # Same rows in, same bank out (the selection is run once on a small build).
    small = [images[i % 4][: 196] for i in range(args.images)]
    banks = []
    for cls in (Before, BankBuilder):
        b = cls(dim, 196 * args.images, **options)
        for part in small:
            b.add(torch.from_numpy(part))
        banks.append(b.select()[1])
    same = np.array_equal(banks[0], banks[1])

    print("## bench_bank_add\n")
    print(machine_line() + f"; {torch_threads} torch threads\n")
    out_dim = xmodal.ops.jl_dimension(max_rows)
    rows = []
    for fw in ("numpy", "torch"):
        before, after = best[("before", fw)][1], best[("after", fw)][1]
        rows.append([f"{rows_per_image} x {dim} -> {out_dim}, {fw} rows", fmt_seconds(before), fmt_seconds(after),
                     f"{before / after:.1f}x"])
    print(markdown_table(["builder.add, one image", f"before ({args.before})", "this tree", "speed-up"], rows))
    print(f"\n- fastest of {args.rounds} interleaved rounds; same bank indices from both builders on "
          f"{args.images} x 196 rows: {same}")


if __name__ == "__main__":
    main()
