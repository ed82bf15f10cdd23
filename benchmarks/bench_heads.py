"""BridgeNet's heads on one sample: xmodal.ops.mlp (extended: LeakyReLU, bias-free last layer,
sigmoid output) on the folded weights vs torch eager.

Shapes of the reference code: 5184 patches (72 x 72 at 576 input) x 3072 features (RGB 1536 +
depth 1536); adaptor Linear(3072, 3072) with bias; discriminator 2 x [Linear(3072, 3072) +
BatchNorm1d + LeakyReLU(0.3)] -> Linear(3072, 1, no bias) -> Sigmoid; random Xavier-normal
weights and random BatchNorm running statistics, eval mode.

- torch eager, as the reference runs it: ``disc(adaptor(x))`` (three 3072 x 3072 GEMMs);
- torch eager on the folded weights (adaptor and BatchNorm folded: two GEMMs, as xmodal runs);
- xmodal.ops.mlp on the folded weights (``fold_linears`` / ``fold_linear_batchnorm``, done once).

    python benchmarks/bench_heads.py [--rows 5184]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure


def heads(dim: int, seed: int = 0):
    torch.manual_seed(seed)
    adaptor = torch.nn.Linear(dim, dim)
    layers = []
    for _ in range(2):
        bn = torch.nn.BatchNorm1d(dim)
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.2, 3.0)
        layers += [torch.nn.Linear(dim, dim), bn, torch.nn.LeakyReLU(0.3)]
    disc = torch.nn.Sequential(*layers, torch.nn.Linear(dim, 1, bias=False), torch.nn.Sigmoid())
    for module in (adaptor, *disc):
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_normal_(module.weight)
    return adaptor.eval(), disc.eval()


def folded(adaptor, disc):
    first = xmodal.ops.fold_linears(adaptor, xmodal.ops.fold_linear_batchnorm(disc[0], disc[1]))
    second = xmodal.ops.fold_linear_batchnorm(disc[3], disc[4])
    return [first.weight, second.weight, disc[6].weight.detach()], [first.bias, second.bias, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5184)
    parser.add_argument("--dim", type=int, default=3072)
    args = parser.parse_args()
    if torch.get_num_threads() != xmodal.get_num_threads():
        torch.set_num_threads(xmodal.get_num_threads())
    adaptor, disc = heads(args.dim)
    weights, biases = folded(adaptor, disc)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float32))
    kwargs = {"activation": "leaky_relu", "negative_slope": 0.3, "output_activation": "sigmoid"}

    def reference_torch():
        with torch.no_grad():
            return disc(adaptor(x))

    def folded_torch():
        with torch.no_grad():
            h = torch.nn.functional.leaky_relu(torch.nn.functional.linear(x, weights[0], biases[0]), 0.3)
            h = torch.nn.functional.leaky_relu(torch.nn.functional.linear(h, weights[1], biases[1]), 0.3)
            return torch.sigmoid(torch.nn.functional.linear(h, weights[2]))

    def ours():
        return xmodal.ops.mlp(x, weights, biases, **kwargs)

    with torch.no_grad():
        exact = disc.double()(adaptor.double()(x.double()))
        disc.float(), adaptor.float()
    rows = []
    results = {}
    for name, fn in (("torch eager, unfolded (the reference)", reference_torch),
                     ("torch eager, folded weights", folded_torch), ("**xmodal.ops.mlp**, folded weights", ours)):
        results[name] = measure(fn, repeat=3)
        error = float((fn().double() - exact).abs().max())
        rows.append([name, fmt_seconds(results[name]["seconds"]), fmt_bytes(results[name]["peak_bytes"]),
                     f"{error:.1e}"])
    ours_seconds = results["**xmodal.ops.mlp**, folded weights"]["seconds"]
    for row, result in zip(rows, results.values(), strict=True):
        row.insert(2, f"{result['seconds'] / ours_seconds:.2f}")
    print("## bench_heads\n")
    print(machine_line() + f"; torch {torch.__version__}, {torch.get_num_threads()} threads for both\n")
    print(f"{args.rows} x {args.dim} -> {args.dim} -> {args.dim} -> 1 (adaptor folded into the first layer)\n")
    print(markdown_table(["implementation", "time", "time / xmodal", "peak extra memory",
                          "max abs diff vs float64 torch"], rows))


if __name__ == "__main__":
    main()
