"""PaDiM's Gaussian part: xmodal's streaming statistics + Cholesky factors + Mahalanobis kernel vs
the same model computed the way anomalib 2.7's PaDiM computes it (torch, float32).

The peer, written here in torch after anomalib 2.7's ``MultiVariateGaussian`` and
``AnomalyMapGenerator.compute_distance`` (anomalib itself is not installed here):

- fit: every batch's (B, d, H, W) embedding is kept in a list, ``torch.vstack``-ed, then per
  position the unbiased covariance (ddof = 1) + 0.01 I, and ``torch.linalg.inv`` of the
  (P, d, d) stack: the model is the mean (d, P) and the float32 inverse covariances (P, d, d);
- inference: ``delta = (embedding - mean).permute(2, 0, 1)`` (P, B, d),
  ``sqrt(clamp((delta @ inv_covariance * delta).sum(-1), 0))``.

xmodal: ``GaussianStats.update`` per batch (float64, nothing kept per image),
``cholesky_factors(0.01)`` (float64, packed float32), ``xmodal.ops.mahalanobis`` on
``embedding.permute(0, 2, 3, 1)`` (the permute is inside xmodal's timed call).

(a) Inference at WideResNet-50 size (P = 56 x 56 = 3136 positions, d = 550 of 1792 channels),
    B = 1 and B = 8: both models describe the same per-position Gaussians (built chunk by
    chunk from 64 random samples per position + 0.01 I); agreement is checked against float64
    distances on a sample of positions.
(b) Fit on N training images (default 200) at ``--fit-positions`` positions (default 784 = 28 x 28;
    both sides' memory and time scale linearly with P, and the full 3136 needs ~14 GiB for the
    peer's fit): time and peak extra resident memory, then the distances both fitted models give
    on the same test images.

    python benchmarks/bench_padim.py [--quick] [--fit-positions 784] [--train 200]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, peak_extra_memory, steady_state_malloc

DIM = 550
REGULARIZATION = 0.01


# --- the peer: anomalib 2.7's way, in torch -----------------------------------------------------


def peer_fit(batches):
    """Mean (d, P) and float32 inverse covariances (P, d, d), as anomalib's PaDiM fits them."""
    embeddings = [batch() for batch in batches]  # training_step keeps every batch's embedding
    embedding = torch.vstack(embeddings)
    n, d, h, w = embedding.shape
    vectors = embedding.reshape(n, d, h * w)
    mean = vectors.mean(dim=0)
    covariance = torch.zeros(d, d, h * w)
    identity = torch.eye(d)
    for p in range(h * w):
        centred = vectors[:, :, p] - vectors[:, :, p].mean(dim=0)
        covariance[:, :, p] = centred.T @ centred / (n - 1) + REGULARIZATION * identity
    inv_covariance = torch.linalg.inv(covariance.permute(2, 0, 1))
    return mean, inv_covariance


def peer_distances(embedding, mean, inv_covariance):
    b, d, h, w = embedding.shape
    delta = (embedding.reshape(b, d, h * w) - mean).permute(2, 0, 1)
    distances = (torch.matmul(delta, inv_covariance) * delta).sum(2).permute(1, 0)
    return distances.reshape(b, h, w).clamp(0).sqrt()


# --- xmodal -------------------------------------------------------------------------------------


def channels_last(embedding):
    b, d, h, w = embedding.shape
    return embedding.permute(0, 2, 3, 1).reshape(b, h * w, d)


def xmodal_fit(batches):
    stats = xmodal.ops.GaussianStats()
    for batch in batches:
        stats.update(channels_last(batch()))
    return torch.from_numpy(stats.mean.astype(np.float32)), torch.from_numpy(stats.cholesky_factors(REGULARIZATION))


def xmodal_distances(embedding, mean, factors):
    b, _, h, w = embedding.shape
    return xmodal.ops.mahalanobis(channels_last(embedding), mean, factors).reshape(b, h, w)


# --- inputs -------------------------------------------------------------------------------------


def feature_batch(seed: int, batch: int, grid: int, channel_scale):
    """A (B, d, grid, grid) embedding with channel-dependent scales (what a backbone gives is
    irrelevant to these kernels; the same seed gives both sides the same tensor)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, DIM, grid, grid, generator=g)
    return x * channel_scale[None, :, None, None] + 0.5


def inference_models(positions: int, samples: int, reference_positions):
    """Per-position Gaussians from `samples` random vectors each: xmodal's packed factors and
    mean, the peer's mean (d, P) and float32 inverse covariances, and float64 factors of a few
    positions for the reference distances."""
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, DIM)
    mean = rng.standard_normal((positions, DIM)).astype(np.float32)
    factors = np.empty((positions, DIM * (DIM + 1) // 2), np.float32)
    inv_covariance = torch.empty(positions, DIM, DIM)
    reference = {}
    step = 32
    rows, cols = np.tril_indices(DIM)
    for p0 in range(0, positions, step):
        c = min(step, positions - p0)
        z = rng.standard_normal((c, samples, DIM)) * scale
        z -= z.mean(axis=1, keepdims=True)
        cov = z.transpose(0, 2, 1) @ z / (samples - 1) + REGULARIZATION * np.eye(DIM)
        lower = np.linalg.cholesky(cov)
        factors[p0 : p0 + c] = lower[:, rows, cols]
        inv_covariance[p0 : p0 + c] = torch.linalg.inv(torch.from_numpy(cov.astype(np.float32)))  # the peer's float32
        for p in reference_positions:
            if p0 <= p < p0 + c:
                reference[p] = lower[p - p0]
    return scale, mean, factors, inv_covariance, reference


def reference_distances(x_nchw, mean, reference):
    """float64 distances at the sampled positions from the float64 factors."""
    from scipy.linalg import solve_triangular

    x = channels_last(x_nchw).double().numpy()
    out = {}
    for p, lower in reference.items():
        delta = x[:, p, :] - mean[p].astype(np.float64)
        y = solve_triangular(lower, delta.T, lower=True)
        out[p] = np.sqrt((y * y).sum(axis=0))
    return out


def relative_errors(values, reference):
    """Max relative difference of (B, P) distances at the sampled positions."""
    flat = values.reshape(values.shape[0], -1)
    return max(float(np.max(np.abs(flat[:, p].double().numpy() / ref - 1))) for p, ref in reference.items())


def interleaved_medians(fns, repeat: int):
    """Median seconds of each function, their runs alternating (after one warm-up run each), so a
    change in the machine's load affects every side alike."""
    times = [[] for _ in fns]
    with steady_state_malloc():
        for fn in fns:
            fn()
        for _ in range(repeat):
            for fn, recorded in zip(fns, times, strict=True):
                t0 = time.perf_counter()
                fn()
                recorded.append(time.perf_counter() - t0)
    return [float(np.median(recorded)) for recorded in times]


# --- the two sections ---------------------------------------------------------------------------


def inference_section(quick: bool) -> str:
    grid = 16 if quick else 56
    positions = grid * grid
    sampled = np.random.default_rng(1).choice(positions, size=min(32, positions), replace=False)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):  # untimed set-up; busy BLAS threads crawl on a shared machine
        scale, mean, factors, inv_covariance, reference = inference_models(positions, 64, set(sampled.tolist()))
    setup = time.perf_counter() - t0
    peer_mean = torch.from_numpy(mean.T.copy())
    mean_t, factors_t = torch.from_numpy(mean), torch.from_numpy(factors)
    rows = []
    for batch in (1, 8):
        x = feature_batch(100 + batch, batch, grid, torch.from_numpy(scale).float())
        x = x * 0.5 + torch.from_numpy(mean.T.reshape(DIM, grid, grid))[None]
        ours_fn = functools.partial(xmodal_distances, x, mean_t, factors_t)
        peer_fn = functools.partial(peer_distances, x, peer_mean, inv_covariance)
        ours, ours_peak = peak_extra_memory(ours_fn)
        peer, peer_peak = peak_extra_memory(peer_fn)
        ours_time, peer_time = interleaved_medians([ours_fn, peer_fn], repeat=5 if batch == 1 else 2)
        ref = reference_distances(x, mean, reference)
        agreement = float((ours - peer).abs().max() / peer.abs().max())
        rows.append([f"P={positions}, d={DIM}, B={batch}", fmt_seconds(peer_time), fmt_seconds(ours_time),
                     f"**{peer_time / ours_time:.1f}x**", fmt_bytes(peer_peak), fmt_bytes(ours_peak),
                     f"{agreement:.1e}", f"{relative_errors(peer, ref):.1e}", f"{relative_errors(ours, ref):.1e}"])
    header = ["input", "anomalib-style torch", "xmodal", "speed-up", "torch peak extra", "xmodal peak extra",
              "max |xmodal - torch| / max torch", "torch vs float64 (max rel.)", "xmodal vs float64 (max rel.)"]
    model = (f"Model: xmodal packed factors {fmt_bytes(factors.nbytes)} vs inverse covariances "
             f"{fmt_bytes(inv_covariance.numel() * 4)} (P x d x d float32); setup {setup:.0f} s (not timed). "
             f"float64 reference on {len(reference)} sampled positions.")
    return markdown_table(header, rows) + "\n\n" + model


def fit_section(quick: bool, positions: int, train: int, batch: int = 8) -> str:
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise SystemExit(f"--fit-positions must be a square (grid x grid); got {positions}")
    if quick:
        grid, train = 8, 24
    scale = torch.from_numpy(np.random.default_rng(2).uniform(0.5, 2.0, DIM)).float()
    batches = [lambda i=i: feature_batch(1000 + i, min(batch, train - i), grid, scale) for i in range(0, train, batch)]
    t0 = time.perf_counter()
    (ours_mean, ours_factors), ours_peak = peak_extra_memory(lambda: xmodal_fit(batches))
    ours_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    (peer_mean, peer_inv), peer_peak = peak_extra_memory(lambda: peer_fit(batches))
    peer_time = time.perf_counter() - t0
    test = feature_batch(5, 4, grid, scale)
    ours = xmodal_distances(test, ours_mean, ours_factors)
    peer = peer_distances(test, peer_mean, peer_inv)
    agreement = float(((ours - peer).abs() / peer).max())
    mean_diff = float((ours_mean - peer_mean.T).abs().max())
    header = ["fit", "anomalib-style torch", "xmodal", "ratio"]
    rows = [
        [f"time, {train} images, P={grid * grid}, d={DIM}", fmt_seconds(peer_time), fmt_seconds(ours_time),
         f"{peer_time / ours_time:.2f}x faster"],
        ["peak extra resident memory", fmt_bytes(peer_peak), fmt_bytes(ours_peak),
         f"**{ours_peak / peer_peak:.2f}x**"],
        ["model", f"{fmt_bytes(peer_inv.numel() * 4)} inverse covariances",
         f"{fmt_bytes(ours_factors.numel() * 4)} packed factors", f"{ours_factors.numel() / peer_inv.numel():.2f}x"],
    ]
    note = (f"Fitted models on 4 test images: max relative distance difference {agreement:.1e}; "
            f"max mean difference {mean_diff:.1e}.")
    return markdown_table(header, rows) + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--fit-positions", type=int, default=784)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--sections", default="ab")
    args = parser.parse_args()
    if torch.get_num_threads() != xmodal.get_num_threads():
        # Only when needed: in torch 2.13 (CPU, MKL) an explicit set_num_threads makes the batched
        # torch.linalg.inv the peer fits with fail ("Pivots given to lu_solve ...").
        torch.set_num_threads(xmodal.get_num_threads())
    print("## bench_padim\n")
    print(machine_line() + f"; torch {torch.__version__}, {torch.get_num_threads()} threads for both; "
          f"load average at start {os.getloadavg()[0]:.1f}\n")
    if "a" in args.sections:
        print("### (a) Mahalanobis distances per inference batch\n")
        print(inference_section(args.quick) + "\n")
    if "b" in args.sections:
        print("### (b) Fit: per-position mean and covariance, then the model\n")
        print(fit_section(args.quick, args.fit_positions, args.train) + "\n")
    print(f"Load average at the end: {os.getloadavg()[0]:.1f} (1 min), on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
