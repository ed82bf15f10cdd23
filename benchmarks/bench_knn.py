"""Exact kNN: xmodal.knn vs faiss-cpu IndexFlatL2, torch cdist+topk, sklearn brute force, and
(for D = 3) the torch broadcast + topk grouping that CFM / anomalib use.

Same inputs, same process, same thread count. Peers that are not installed are reported as n/a.

    python benchmarks/bench_knn.py [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure

SHAPES = [  # (Q, N, D, k)
    (784, 20_000, 768, 1),
    (784, 20_000, 768, 9),
    (3136, 80_000, 1152, 1),
    (1024, 50_000, 3, 128),
]
QUICK_SHAPES = [(784, 5_000, 768, 9), (1024, 10_000, 3, 128)]


def peers(threads: int):
    runners = {}
    try:
        import faiss

        faiss.omp_set_num_threads(threads)

        def run_faiss(q, b, k):
            index = faiss.IndexFlatL2(b.shape[1])
            index.add(b)
            return index.search(q, k)

        runners["faiss IndexFlatL2"] = run_faiss
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(threads)

        def run_cdist(q, b, k):
            d = torch.cdist(torch.from_numpy(q), torch.from_numpy(b))
            return d.topk(k, dim=1, largest=False)

        runners["torch cdist+topk"] = run_cdist

        def run_broadcast(q, b, k):  # CFM / anomalib grouping (B=1): N x G broadcast, then topk over N
            xyz, centers = torch.from_numpy(b)[None], torch.from_numpy(q)[None]
            d = torch.norm(xyz[:, :, None] - centers[:, None], dim=-1)
            return d.topk(k, dim=1, largest=False, sorted=True)

        runners["torch broadcast+topk (CFM)"] = run_broadcast
    except ImportError:
        pass
    try:
        from sklearn.neighbors import NearestNeighbors

        def run_sklearn(q, b, k):
            return NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=threads).fit(b).kneighbors(q)

        runners["sklearn brute"] = run_sklearn
    except ImportError:
        pass
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    args = parser.parse_args()
    threads = xmodal.get_num_threads()
    rng = np.random.default_rng(0)
    rows = []
    for q_count, n, d, k in QUICK_SHAPES if args.quick else SHAPES:
        queries = rng.standard_normal((q_count, d)).astype(np.float32)
        bank = rng.standard_normal((n, d)).astype(np.float32)
        flops = 2.0 * q_count * n * d
        shape = f"{q_count} x {n:,} x {d}, k={k}"
        ours = measure(lambda: xmodal.knn(queries, bank, k), repeat=3)
        rows.append([shape, "**xmodal.knn**", fmt_seconds(ours["seconds"]),
                     f"{q_count / ours['seconds']:,.0f} q/s", f"{flops / ours['seconds'] / 1e9:.0f}",
                     "1.00", fmt_bytes(ours["peak_bytes"])])
        for name, run in peers(threads).items():
            if "broadcast" in name and d > 4:
                continue
            repeat = 1 if (name == "sklearn brute" and flops > 1e11) else 3
            try:
                peer = measure(lambda run=run: run(queries, bank, k), repeat=repeat, warmup=0 if repeat == 1 else 1)
            except MemoryError:
                rows.append([shape, name, "OOM", "", "", "", ""])
                continue
            ratio = peer["seconds"] / ours["seconds"]
            rows.append([shape, name, fmt_seconds(peer["seconds"]), f"{q_count / peer['seconds']:,.0f} q/s",
                         f"{flops / peer['seconds'] / 1e9:.0f}", f"{ratio:.2f}", fmt_bytes(peer["peak_bytes"])])
    print("## bench_knn\n")
    print(machine_line() + f"; {threads} threads for every library\n")
    print(markdown_table(["shape (Q x N x D)", "implementation", "time", "throughput", "GFLOP/s (2QND)",
                          "peer time / xmodal time", "peak extra memory"], rows))
    print("\nGFLOP/s counts the 2·Q·N·D multiply-adds of the distance computation for every implementation.")


if __name__ == "__main__":
    main()
