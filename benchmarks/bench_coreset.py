"""Greedy k-center coreset: xmodal.greedy_coreset vs anomalib 2.7 KCenterGreedy and the torch
loop M3DM writes (get_coreset_idx_randomp, run here on the CPU in float32).

All three run on the same projected features (the JL sparse projection of xmodal.coreset at
eps 0.9, D = 1152 -> 267 / 301 dims), from the same start index. Features are synthetic but
shaped like patch features (a low-dimensional manifold embedded in D dims plus noise), since
isotropic Gaussian data is the one case where farthest-first selection has no structure.

The peers take minutes per 1,000 selections at N = 200k, so by default they run the first
`--peer-steps` selections and the full time is extrapolated linearly (their cost per step is
constant); xmodal always runs the full selection. Run with `--full` to run everything.

    python benchmarks/bench_coreset.py [--quick] [--full] [--peer-steps 500]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's per-step progress bar

import numpy as np

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure_once
from xmodal.ops import projection_matrix


def patch_like_features(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    latent = 24
    centers = rng.standard_normal((64, latent)) * 3
    z = centers[rng.integers(0, 64, n)] + rng.standard_normal((n, latent))
    embed = rng.standard_normal((latent, dim)) / np.sqrt(latent)
    x = np.maximum(z @ embed, 0) + 0.05 * rng.standard_normal((n, dim))  # ReLU-like, non-negative
    return x.astype(np.float32)


def anomalib_runner():
    try:
        import torch
        from anomalib.models.components.sampling import KCenterGreedy
    except ImportError as exc:
        return None, f"anomalib not importable ({exc.__class__.__name__})"

    def run(projected: np.ndarray, steps: int, start: int):
        # A 3-D embedding makes KCenterGreedy use the features as given (no projection of its
        # own), so it runs on exactly our projected features. Its start is torch.randint: seed it
        # to land on the same start index is not possible, so the start is patched in below.
        sampler = KCenterGreedy(embedding=torch.from_numpy(projected)[:, :, None], sampling_ratio=1.0)
        sampler.coreset_size = steps
        original = torch.randint
        torch.randint = lambda *a, **k: torch.tensor([start])
        try:
            return sampler.select_coreset_idxs()
        finally:
            torch.randint = original

    return run, None


def m3dm_runner():
    try:
        import torch
    except ImportError as exc:
        return None, f"torch not importable ({exc})"

    def run(projected: np.ndarray, steps: int, start: int):
        z_lib = torch.from_numpy(projected)
        last_item = z_lib[start : start + 1]
        coreset_idx = [torch.tensor(start)]
        min_distances = torch.linalg.norm(z_lib - last_item, dim=1, keepdims=True)
        for _ in range(steps - 1):
            distances = torch.linalg.norm(z_lib - last_item, dim=1, keepdims=True)
            min_distances = torch.minimum(distances, min_distances)
            select_idx = torch.argmax(min_distances)
            last_item = z_lib[select_idx : select_idx + 1]
            min_distances[select_idx] = 0
            coreset_idx.append(select_idx.to("cpu"))
        return coreset_idx

    return run, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full", action="store_true", help="run the peers to completion")
    parser.add_argument("--peer-steps", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000], help="numbers of features N")
    args = parser.parse_args()
    sizes = [5_000] if args.quick else args.sizes
    dim, ratio, start = 1152, 0.1, 0
    rng = np.random.default_rng(0)
    threads = xmodal.get_num_threads()
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    rows = []
    notes = []
    for n in sizes:
        features = patch_like_features(n, dim, rng)
        matrix = projection_matrix(n, dim, "sparse", 128, np.random.default_rng(1))
        projected = np.ascontiguousarray(features @ matrix.T)
        steps = int(n * ratio)
        label = f"N={n:,}, D'={projected.shape[1]}, n={steps:,}"
        ours_idx, ours, ours_peak = measure_once(lambda: xmodal.greedy_coreset(projected, steps, start))
        rows.append([label, "**xmodal.greedy_coreset**", f"{steps:,}", fmt_seconds(ours),
                     fmt_seconds(ours / steps), fmt_seconds(ours), "1.0", fmt_bytes(ours_peak)])
        for name, (runner, why) in {"anomalib 2.7 KCenterGreedy": anomalib_runner(),
                                    "M3DM torch loop (fp32, CPU)": m3dm_runner()}.items():
            if runner is None:
                rows.append([label, name, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"])
                notes.append(f"{name}: {why}")
                continue
            run_steps = steps if args.full else min(steps, args.peer_steps)
            peer_idx, elapsed, peer_peak = measure_once(lambda runner=runner: runner(projected, run_steps, start))
            full = elapsed / run_steps * steps
            agree = int(np.argmax(np.asarray([int(i) for i in peer_idx]) != ours_idx[:run_steps])) \
                if np.any(np.asarray([int(i) for i in peer_idx]) != ours_idx[:run_steps]) else run_steps
            rows.append([label, name, f"{run_steps:,}", fmt_seconds(elapsed), fmt_seconds(elapsed / run_steps),
                         fmt_seconds(full) + ("" if run_steps == steps else " (extrap.)"),
                         f"{full / ours:.1f}", fmt_bytes(peer_peak)])
            notes.append(f"{label}: {name} selected the same first {agree:,} of {run_steps:,} indices as xmodal "
                         "(float32 distances vs xmodal's float64: later near-ties may resolve differently)")
    print("## bench_coreset\n")
    print(machine_line() + f"; {threads} threads for every library\n")
    print(markdown_table(["features", "implementation", "steps run", "time", "per step", "full selection",
                          "full time / xmodal", "peak extra memory"], rows))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
