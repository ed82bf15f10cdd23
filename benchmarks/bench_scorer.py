"""CFM's crossmodal scorer: xmodal.ops.crossmodal_discrepancy (fused) vs the same computation in
torch eager and torch.compile, on 50,176 x 768 / 1152 features (one 224 x 224 image), with
CFM's MLPs (768 -> 960 -> 960 -> 1152 and back). Reported for all pixels foreground (the work
CFM's code does) and for a realistic 45 % foreground (xmodal skips background rows; CFM computes
them and zeros them afterwards).

Activation memory: peak extra resident memory during the call, minus the outputs.

    python benchmarks/bench_scorer.py [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure


def cfm_mlp(d_in, d_out):
    hidden = (d_in + d_out) // 2
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.GELU(), torch.nn.Linear(hidden, d_out)).eval()


def torch_scorer(m23, m32):
    normalize = torch.nn.functional.normalize

    def score(f2d, f3d, mask):
        with torch.no_grad():
            d_3d = (normalize(m23(f2d), dim=-1) - normalize(f3d, dim=-1)).norm(dim=-1)
            d_2d = (normalize(m32(f3d), dim=-1) - normalize(f2d, dim=-1)).norm(dim=-1)
            return d_2d * mask, d_3d * mask

    return score


def scorer_table(quick: bool = False) -> str:
    """Runs the comparison; returns the Markdown table (and a note when torch.compile failed)."""
    threads = xmodal.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = 4096 if quick else 224 * 224
    m23, m32 = cfm_mlp(768, 1152), cfm_mlp(1152, 768)
    rng = np.random.default_rng(0)
    f2d = torch.from_numpy(rng.standard_normal((rows, 768)).astype(np.float32))
    f3d = torch.from_numpy(rng.standard_normal((rows, 1152)).astype(np.float32))
    eager = torch_scorer(m23, m32)
    try:
        compiled = torch.compile(eager)
    except Exception as exc:  # pragma: no cover - depends on the torch build
        compiled, compile_error = None, exc
    output_bytes = 2 * rows * 4
    table = []
    for fraction in (1.0, 0.45):
        mask = torch.from_numpy(rng.random(rows) < fraction)
        maskf = mask.float()
        ours = measure(lambda: xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask), repeat=3)
        label = f"{rows:,} rows, {fraction:.0%} foreground"
        table.append([label, "**xmodal fused**", fmt_seconds(ours["seconds"]), "1.00",
                      fmt_bytes(max(0, ours["peak_bytes"] - output_bytes))])
        peers = {"torch eager": eager}
        if compiled is not None:
            compiled(f2d, f3d, maskf)  # compile outside the timed region
            peers["torch.compile (inductor)"] = compiled
        for name, fn in peers.items():
            peer = measure(lambda fn=fn: fn(f2d, f3d, maskf), repeat=3)
            table.append([label, name, fmt_seconds(peer["seconds"]), f"{peer['seconds'] / ours['seconds']:.2f}",
                          fmt_bytes(max(0, peer["peak_bytes"] - output_bytes))])
        ref = eager(f2d, f3d, maskf)
        got = xmodal.ops.crossmodal_discrepancy(f2d, f3d, m23, m32, mask)
        err = max(float((got.d_2d - ref[0]).abs().max()), float((got.d_3d - ref[1]).abs().max()))
        table[-1 - len(peers)][0] += f" (max diff vs eager {err:.1e})"
    text = markdown_table(["input", "implementation", "time", "peer time / xmodal time", "activation memory"], table)
    if compiled is None:
        text += f"\n\ntorch.compile unavailable: {compile_error}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("## bench_scorer\n")
    print(machine_line() + f"; {xmodal.get_num_threads()} threads for every library\n")
    print(scorer_table(args.quick))


if __name__ == "__main__":
    main()
