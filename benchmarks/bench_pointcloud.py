"""Point-cloud kernels of the Point-MAE feature path, xmodal against the peers, same inputs.

- FPS 1024 of the cloud: xmodal (exact bucket FPS) vs fpsample 0.3.3 (vanilla, bucket KD-tree,
  bucket KD-line h = 3/5/7/9; all exact) and the torch loop of anomalib's CFM / Point-MAE
  utilities (a Python loop of 1024 steps over all N points).
- Grouping 1024 x 128: xmodal.ops.group_points (FPS + KD-tree kNN) and its kNN half alone vs
  the reference code's torch broadcast torch.norm(xyz[:, :, None] - centers[:, None]) + topk.
- 3-NN interpolation of 1152-d center features: xmodal vs square_distance (N x G) + full sort.
- Scatter + AvgPool2d(3, 1) + AdaptiveAvgPool2d to 224 and 56: xmodal vs torch.

Clouds: the foreground of a synthetic organized 224 x 224 cloud of an object (raster order,
spatially coherent, ~35k points) and 50k uniform random points. Peak extra memory is the
resident-set high-water mark of the call (benchmarks/_common.py); "work mem" subtracts the
output both sides must return, which dominates for the 1152-channel ops.

Run where fpsample 0.3.3 is installed (e.g. the shared peer venv):
    pip install --no-deps --target /tmp/xm . && PYTHONPATH=/tmp/xm python benchmarks/bench_pointcloud.py
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import xmodal
from xmodal import ops

N_GROUPS, GROUP_SIZE, CHANNELS = 1024, 128, 1152


# --- inputs ---------------------------------------------------------------------------------


def object_cloud(size: int = 224, seed: int = 0):
    """Organized cloud of a bumpy elliptic object, background removed (raster order)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    c = size / 2
    r2 = ((u - c) / (0.49 * size)) ** 2 + ((v - c) / (0.45 * size)) ** 2
    mask = r2 < 1
    x = (u - c) / c * 0.04
    y = (v - c) / c * 0.04
    z = 0.35 + 0.012 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.0015 * np.sin(u / 9) * np.cos(v / 13)
    z = z + 2e-5 * rng.standard_normal(z.shape)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    return xyz[mask], np.flatnonzero(mask)


# --- the reference code's torch approaches (written from their semantics) --------------------


def torch_fps_loop(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """anomalib CFM / Point-MAE utils: n Python steps, each over all N points."""
    num = xyz.shape[0]
    centroids = torch.zeros(n, dtype=torch.long)
    distance = torch.full((num,), 1e10)
    farthest = 0
    for i in range(n):
        centroids[i] = farthest
        d = ((xyz - xyz[farthest]) ** 2).sum(-1)
        distance = torch.minimum(distance, d)
        farthest = int(torch.argmax(distance))
    return centroids


def torch_knn_broadcast(xyz: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """CFM / G2SF KNN: B x N x G x 3 difference, norm, topk over N."""
    d = torch.norm(xyz[None, :, None] - centers[None, None], dim=-1)
    return torch.topk(d, k, dim=1, largest=False, sorted=True)[1][0].T


def torch_interpolate_sort(xyz: torch.Tensor, centers: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """interpolating_points: square_distance N x G, full sort, 3 nearest, 1 / (d + 1e-8)."""
    d = -2 * xyz @ centers.T + (xyz**2).sum(-1)[:, None] + (centers**2).sum(-1)[None]
    d, idx = d.sort(dim=-1)
    d, idx = d[:, :3], idx[:, :3]
    w = 1.0 / (d + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (feats[idx] * w[..., None]).sum(1)


def torch_grid(feats: torch.Tensor, pixel_index: torch.Tensor, size: int, out: int) -> torch.Tensor:
    grid = torch.zeros(1, feats.shape[1], size * size)
    grid[0, :, pixel_index] = feats.T
    grid = grid.view(1, feats.shape[1], size, size)
    return torch.nn.AdaptiveAvgPool2d(out)(torch.nn.AvgPool2d(3, 1)(grid))[0]


# --- runs -----------------------------------------------------------------------------------


def fpsample_variants():
    try:
        import fpsample
    except ImportError:
        return {}
    v = {"fpsample vanilla": lambda p, n: fpsample.fps_sampling(p, n, start_idx=0),
         "fpsample bucket KD-tree": lambda p, n: fpsample.bucket_fps_kdtree_sampling(p, n, start_idx=0)}
    for h in (3, 5, 7, 9):
        v[f"fpsample KD-line h={h}"] = lambda p, n, h=h: fpsample.bucket_fps_kdline_sampling(p, n, h=h, start_idx=0)
    return v


def row(name, m, base=None, out_bytes=0, note=""):
    ratio = f"{m['seconds'] / base['seconds']:.1f}x"  # peer time / xmodal time
    work = m["peak_bytes"] - out_bytes
    return [name, _common.fmt_seconds(m["seconds"]), ratio, _common.fmt_bytes(m["peak_bytes"]),
            _common.fmt_bytes(max(work, 0)), note]


def bench_cloud(label, points, pixel_index, size, repeat, rows):
    num = len(points)
    pts_t = torch.from_numpy(points)
    rng = np.random.default_rng(1)
    print(f"# {label}: N={num}", file=sys.stderr)

    # FPS ----------------------------------------------------------------------------------
    ours = _common.measure(lambda: ops.farthest_point_sample(points, N_GROUPS), repeat=repeat)
    ref_idx = ops.farthest_point_sample(points, N_GROUPS)
    section = []
    best = None
    for name, fn in fpsample_variants().items():
        m = _common.measure(lambda fn=fn: fn(points, N_GROUPS), repeat=repeat)
        theirs = np.asarray(fn(points, N_GROUPS), dtype=np.int64)
        if np.array_equal(theirs, ref_idx):
            note = "same indices"
        elif theirs[0] != 0:
            note = f"ignores start_idx=0 (starts at {theirs[0]})"
        else:
            note = f"differs from step {int(np.argmax(theirs != ref_idx))}"
        section.append((name, m, note))
        if "vanilla" not in name and (best is None or m["seconds"] < best[1]["seconds"]):
            best = (name, m)
    loop = _common.measure(lambda: torch_fps_loop(pts_t, N_GROUPS), repeat=max(1, repeat // 3), warmup=0)
    same = np.array_equal(torch_fps_loop(pts_t, N_GROUPS).numpy(), ref_idx)
    rows.append([f"**{label}: FPS {N_GROUPS} of {num}**", "", "", "", "", ""])
    rows.append(row("xmodal farthest_point_sample", ours, ours, note="exact, ties lowest index"))
    for name, m, note in section:
        rows.append(row(name, m, ours, note=note))
    rows.append(row("torch loop (anomalib CFM)", loop, ours, note=("same indices" if same else "differs")))
    if best:
        print(f"  FPS speed-up vs fastest fpsample ({best[0]}): {best[1]['seconds'] / ours['seconds']:.2f}x",
              file=sys.stderr)
    print(f"  FPS speed-up vs torch loop: {loop['seconds'] / ours['seconds']:.1f}x", file=sys.stderr)

    # grouping ------------------------------------------------------------------------------
    centers = points[ref_idx]
    cen_t = torch.from_numpy(centers)
    knn_ours = _common.measure(lambda: xmodal.knn(centers, points, GROUP_SIZE), repeat=repeat)
    group_ours = _common.measure(lambda: ops.group_points(points, N_GROUPS, GROUP_SIZE), repeat=repeat)
    knn_torch = _common.measure(lambda: torch_knn_broadcast(pts_t, cen_t, GROUP_SIZE), repeat=max(1, repeat // 3))
    same = (np.sort(torch_knn_broadcast(pts_t, cen_t, GROUP_SIZE).numpy(), 1)
            == np.sort(xmodal.knn(centers, points, GROUP_SIZE).idx, 1)).mean()
    group_torch = {"seconds": loop["seconds"] + knn_torch["seconds"],
                   "peak_bytes": max(loop["peak_bytes"], knn_torch["peak_bytes"])}
    rows.append([f"**{label}: grouping {N_GROUPS} x {GROUP_SIZE}**", "", "", "", "", ""])
    rows.append(row("xmodal knn(centers, points, 128)", knn_ours, knn_ours))
    rows.append(row("torch broadcast norm + topk", knn_torch, knn_ours, note=f"{same:.4%} same neighbours"))
    rows.append(row("xmodal group_points (FPS + kNN)", group_ours, group_ours))
    rows.append(row("torch FPS loop + broadcast + topk", group_torch, group_ours, note="sum of the two"))

    # 3-NN interpolation ----------------------------------------------------------------------
    feats = rng.standard_normal((N_GROUPS, CHANNELS)).astype(np.float32)
    feats_t = torch.from_numpy(feats)
    out_bytes = num * CHANNELS * 4
    interp_ours = _common.measure(lambda: ops.three_nn_interpolate(points, centers, feats), repeat=repeat)
    interp_torch = _common.measure(lambda: torch_interpolate_sort(pts_t, cen_t, feats_t), repeat=max(1, repeat // 3))
    exact = ops.three_nn_interpolate(points, centers, feats)
    diff = (np.abs(exact - torch_interpolate_sort(pts_t, cen_t, feats_t).numpy()).max(1)
            / np.abs(feats).max())  # per point, relative to the feature scale
    rows.append([f"**{label}: 3-NN interpolation, C={CHANNELS}**", "", "", "", "", ""])
    rows.append(row("xmodal three_nn_interpolate", interp_ours, interp_ours, out_bytes))
    rows.append(row("torch square_distance + sort", interp_torch, interp_ours, out_bytes,
                    note=f"rel. diff median {np.median(diff):.0e}, max {diff.max():.0e}: its float32 "
                         "a²+b²-2ab distances"))

    # points_to_grid ---------------------------------------------------------------------------
    if pixel_index is not None:
        per_point = ops.three_nn_interpolate(points, centers, feats)
        per_point_t = torch.from_numpy(per_point)
        pix_t = torch.from_numpy(pixel_index)
        for out in (224, 56):
            out_bytes = CHANNELS * out * out * 4
            g_ours = _common.measure(lambda out=out: ops.points_to_grid(per_point, pixel_index, size, size, out),
                                     repeat=repeat)
            g_torch = _common.measure(lambda out=out: torch_grid(per_point_t, pix_t, size, out), repeat=repeat)
            err = np.abs(ops.points_to_grid(per_point, pixel_index, size, size, out)
                         - torch_grid(per_point_t, pix_t, size, out).numpy()).max()
            rows.append([f"**{label}: scatter + pool to {out}x{out}, C={CHANNELS}**", "", "", "", "", ""])
            rows.append(row("xmodal points_to_grid", g_ours, g_ours, out_bytes))
            rows.append(row("torch zeros + scatter + AvgPool2d + AdaptiveAvgPool2d", g_torch, g_ours, out_bytes,
                            note=f"max abs diff {err:.1e}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(xmodal.get_num_threads())
    rows: list[list[str]] = []
    points, pixel_index = object_cloud()
    bench_cloud("object cloud", points, pixel_index, 224, args.repeat, rows)
    uniform = np.random.default_rng(0).random((50000, 3)).astype(np.float32)
    bench_cloud("uniform 50k", uniform, None, 224, args.repeat, rows)
    print(_common.machine_line())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); xmodal {xmodal.get_num_threads()} threads; "
          "fpsample is single-threaded. Speed-up = peer time / xmodal time of the section's first row.\n")
    print(_common.markdown_table(["", "time", "speed-up of xmodal", "peak extra mem", "work mem (minus output)",
                                  "note"], rows))


if __name__ == "__main__":
    main()
