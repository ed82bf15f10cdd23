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
(c) End to end, against anomalib 2.7's own ``PadimModel`` (run in a peer environment where
    anomalib is installed next to xmodal; skipped otherwise): the same WideResNet-50-2 layer1-3
    network (xmodal's weights, or its seeded random weights when the file is absent, copied into
    anomalib's timm extractor), the same 550 channels (anomalib's ``idx`` set to xmodal's), the same
    normalised input tensors at ``--e2e-size`` (default 112: P = 28 x 28, so the peer's fit fits in
    the shared machine's memory). Fit: ``PaDiM.fit`` on Samples vs anomalib's training forward on
    every batch + ``PadimModel.fit()`` (time, peak extra resident memory). Inference per image
    (batch 1, interleaved): ``PaDiM.predict(sample)`` vs ``PadimModel.eval()(images)``; agreement
    of the Mahalanobis grids and of the image scores.

    python benchmarks/bench_padim.py [--quick] [--fit-positions 784] [--train 200] [--sections abc]
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
from _common import (
    fmt_bytes,
    fmt_seconds,
    machine_line,
    markdown_table,
    measure_once,
    peak_extra_memory,
    steady_state_malloc,
)

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


def import_anomalib():
    """anomalib's PadimModel, or None. On a CPU-only torch, PyPI's torchvision (a CUDA build) has
    no loadable native ops and fails at import while registering their fake kernels; PaDiM uses
    none of them, so that registration is skipped during the import."""
    try:
        import torch.library

        real = torch.library.register_fake
        torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
        try:
            import torchvision  # noqa: F401
        finally:
            torch.library.register_fake = real
        from anomalib.models.image.padim.torch_model import PadimModel
    except ImportError:
        return None
    return PadimModel


def end_to_end_section(quick: bool, size: int, train: int, test: int) -> str:
    import warnings

    from xmodal.backbones import available
    from xmodal.data import synthetic
    from xmodal.methods import PaDiM

    padim_model = import_anomalib()
    if padim_model is None:
        return "anomalib is not installed in this environment: section (c) skipped."
    if quick:
        size, train, test = 64, 6, 4
    make = functools.partial(synthetic.make_sample, "puck", image_size=128)
    train_samples = [make("good", split="train", index=i)[0] for i in range(train)]
    defects = ("stain", "discoloration", "crack", "contamination")
    test_samples = [make("good", split="test", index=i)[0] for i in range(test // 2)]
    test_samples += [make(defects[i % 4], split="test", index=i)[0] for i in range(test - test // 2)]
    found = bool(available().get("wide_resnet50_2"))
    det = PaDiM(backbones="paper", random_weights=not found, n_features=DIM, image_size=size, calibration=0,
                progress=False, batch_size=8)
    det.fit(train_samples[:2])  # builds the network once: the peer's is built outside its timed fit too
    _, ours_time, ours_peak = measure_once(lambda: det.fit(train_samples))  # a refit keeps the network
    ex = det.extractor
    batches = [train_samples[i : i + 8] for i in range(0, train, 8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = padim_model(backbone="wide_resnet50_2", pre_trained=False, n_features=DIM)
    report = peer.feature_extractor.feature_extractor.load_state_dict(ex.network.state_dict(), strict=False)
    # xmodal's module holds layer4 and fc too (unused: the forward stops after layer3)
    if report.missing_keys or any(not k.startswith(("layer4.", "fc.")) for k in report.unexpected_keys):
        raise SystemExit(f"the networks differ: {report}")
    peer.idx = torch.from_numpy(det.channels)

    def peer_fit_all():
        peer.train()
        with torch.no_grad():
            for batch in batches:
                peer(ex.images(batch))
        peer.fit()

    _, peer_time, peer_peak = measure_once(peer_fit_all)
    peer.eval()
    grid_errors, score_pairs = [], []
    with torch.no_grad():
        for s in test_samples:
            x = ex.images([s])
            ours = det._distances(x).grid[0]
            embedding = peer.generate_embedding(peer.feature_extractor(x))
            theirs = peer.anomaly_map_generator.compute_distance(embedding, [peer.gaussian.mean,
                                                                             peer.gaussian.inv_covariance])[0, 0]
            grid_errors.append(float(((ours - theirs).abs() / theirs.abs().clamp_min(1e-6)).max()))
            score_pairs.append((det.predict(s).score, float(peer(x).pred_score[0])))
    sample = test_samples[-1]
    ours_fn = functools.partial(det.predict, sample)

    def peer_fn():
        with torch.no_grad():
            return peer(ex.images([sample]))

    ours_inf, peer_inf = interleaved_medians([ours_fn, peer_fn], repeat=3 if quick else 7)
    positions = ex.grid**2
    rows = [
        [f"fit, {train} images, {size}x{size} input (P={positions}, d={DIM})", fmt_seconds(peer_time),
         fmt_seconds(ours_time), f"{peer_time / ours_time:.2f}x faster"],
        ["fit: peak extra resident memory", fmt_bytes(peer_peak), fmt_bytes(ours_peak),
         f"**{ours_peak / peer_peak:.2f}x**"],
        ["inference per image (batch 1, network included)", fmt_seconds(peer_inf), fmt_seconds(ours_inf),
         f"**{peer_inf / ours_inf:.2f}x**"],
        ["model", f"{fmt_bytes(peer.gaussian.inv_covariance.numel() * 4)} inverse covariances",
         f"{fmt_bytes(det.model_size()['bytes'])} means + packed factors", ""],
    ]
    ours_scores, peer_scores = np.array(score_pairs).T
    note = (f"Network weights: {'the local file' if found else 'seeded random (no weight file here)'}. Agreement on "
            f"{len(test_samples)} test images: max relative difference of the Mahalanobis grids "
            f"{max(grid_errors):.1e}; image scores differ by their maps' post-processing only (xmodal upsamples to "
            f"224 and blurs there, anomalib to the {size}-pixel input): Spearman rank correlation "
            f"{spearman(ours_scores, peer_scores):.3f}.")
    header = ["end to end", "anomalib 2.7 PadimModel", "xmodal PaDiM", "ratio"]
    return markdown_table(header, rows) + "\n\n" + note


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--fit-positions", type=int, default=784)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--sections", default="abc")
    parser.add_argument("--e2e-size", type=int, default=112, help="(c): side of the network input")
    parser.add_argument("--e2e-train", type=int, default=100, help="(c): training images")
    parser.add_argument("--e2e-test", type=int, default=12, help="(c): test images")
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
    if "c" in args.sections:
        print("### (c) End to end: fit and per-image inference vs anomalib 2.7's PadimModel\n")
        print(end_to_end_section(args.quick, args.e2e_size, args.e2e_train, args.e2e_test) + "\n")
    print(f"Load average at the end: {os.getloadavg()[0]:.1f} (1 min), on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
