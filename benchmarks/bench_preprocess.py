"""Per-sample MVTec 3D-AD background removal at 800x800: xmodal vs the open3d pipeline.

The peer is the offline preprocessing of BTF / M3DM / CFM / G2SF, written here from its
description (M3DM / BTF preprocessing scripts) on open3d: ``segment_plane(0.004, 50,
1000)`` on the 10-pixel border strips, removal of points closer than 0.005 to the plane, square
zero padding to a multiple of 100, ``cluster_dbscan(0.006, 30)`` and the largest cluster (noise
label -1 included). xmodal runs :class:`xmodal.data.preprocess.BackgroundRemoval` with the
same parameters (its RANSAC and DBSCAN are the native kernels). Both run in this process on the
same synthetic 800x800 samples (MVTec-like density: 0.2 mm pixels, ~70 k object points, 2
floating debris clumps); the table gives the median time per sample, the ratio, peak extra
memory and the agreement of the surviving points (fraction of the input's valid points that
both keep or both drop).

Needs open3d (``open3d-cpu``; on Debian also ``libusb-1.0-0``). Run::

    python benchmarks/bench_preprocess.py [--samples 4] [--repeat 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, peak_extra_memory, timed
from xmodal.data import preprocess as pp
from xmodal.data import synthetic


def open3d_background_removal(xyz: np.ndarray) -> np.ndarray:
    """(S, S, 3) cleaned cloud, the reference pipeline on open3d."""
    import open3d as o3d

    edges = pp.border_points(xyz, 10).astype(np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(edges))
    plane, _ = cloud.segment_plane(distance_threshold=0.004, ransac_n=50, num_iterations=1000)
    flat = xyz.reshape(-1, 3).astype(np.float64)
    distance = np.abs(flat @ np.asarray(plane[:3]) + plane[3])
    flat = np.where((distance < 0.005)[:, None], 0.0, flat).astype(np.float32)
    padded = pp.pad_to_multiple(flat.reshape(xyz.shape), 100)
    points = padded.reshape(-1, 3)
    valid = np.flatnonzero(np.all(points != 0, axis=1))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[valid].astype(np.float64)))
    labels = np.asarray(cloud.cluster_dbscan(eps=0.006, min_points=30))
    ids, counts = np.unique(labels, return_counts=True)
    points[valid[labels != ids[np.argmax(counts)]]] = 0
    return padded


def release_freed_memory() -> None:
    """Returns freed heap pages to the OS, so each peak-memory reading starts from the same
    resident set (open3d's large, freed allocations would otherwise hide ours)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="synthetic 800x800 samples (one per category)")
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=3, help="xmodal runs per sample (median)")
    args = parser.parse_args()

    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    xm = pp.BackgroundRemoval()
    rows, ratios, agreements = [], [], []
    for i in range(args.samples):
        category = synthetic.CATEGORIES[i % len(synthetic.CATEGORIES)]
        sample, _ = synthetic.make_sample(category, "good", image_size=args.size, seed=0, index=i, outliers=True)
        valid = pp.pad_to_multiple(sample.foreground(), 100)
        release_freed_memory()
        ours, our_peak = peak_extra_memory(lambda: xm(sample))
        _, our_time = timed(lambda: xm(sample), args.repeat, warmup=0)
        release_freed_memory()
        ref, ref_peak = peak_extra_memory(lambda: open3d_background_removal(sample.xyz))
        _, ref_time = timed(lambda: open3d_background_removal(sample.xyz), 1, warmup=0)
        kept_ref, kept_ours = np.all(ref != 0, axis=-1), ours.foreground()
        agreement = float((kept_ref == kept_ours)[valid].mean())
        ratios.append(ref_time / our_time)
        agreements.append(agreement)
        rows.append([f"{category} #{i}", f"{int(valid.sum()):,} / {int(kept_ours.sum()):,}", fmt_seconds(ref_time),
                     fmt_seconds(our_time), f"{ref_time / our_time:.0f}x", fmt_bytes(ref_peak), fmt_bytes(our_peak),
                     f"{100 * agreement:.4f} %"])
    print(f"## bench_preprocess\n\n{machine_line()}; open3d {o3d.__version__}\n")
    print(f"Background removal per sample, {args.size}x{args.size} synthetic MVTec-like clouds "
          "(RANSAC 0.004/50/1000 on 10-px borders, plane < 0.005, pad to x100, DBSCAN 0.006/30, largest cluster).\n")
    header = ["sample", "valid / kept points", "open3d", "xmodal", "speed-up", "open3d peak", "xmodal peak",
              "same surviving points"]
    print(markdown_table(header, rows))
    print(f"\nGeometric-mean speed-up {np.exp(np.mean(np.log(ratios))):.0f}x; "
          f"lowest agreement {100 * min(agreements):.4f} %.")


if __name__ == "__main__":
    main()
