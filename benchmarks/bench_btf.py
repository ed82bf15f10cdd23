"""BTF (FPFH only, ``modality="xyz"``): xmodal.methods.BTF vs the same pipeline built on open3d,
numpy and torch as BTF's reference code (eliahuhorwitz/3D-ADS) builds it, same samples.

Both sides get the same preprocessed samples (background plane removed and padded, which the
reference does offline before training, so neither side's timing includes it). The peer, per
sample: the organized cloud nearest-resized to 224 x 224, open3d normals
(``KDTreeSearchParamHybrid(0.1, 30)``, oriented towards the camera at the origin as xmodal does)
and ``compute_fpfh_feature`` (``KDTreeSearchParamHybrid(0.25, 100)``) on the valid points, the
33 bins scattered on the 224 x 224 grid, ``AvgPool2d(3, 1)`` + ``AdaptiveAvgPool2d(28)``; fit
stacks every training cell and takes a 10 % greedy coreset in torch (BTF's loop: start at row 0,
no projection for 33 dimensions, where the JL bound would not reduce it); inference is
``torch.cdist`` to the bank, the max cell distance re-weighted by BTF's rule
(3 neighbours of the matched bank row), and the 28 x 28 map upsampled bilinearly to 224 and
blurred with a Gaussian of sigma 4 (scipy; BTF blurs with PIL on a 256-level quantised map).

Reported: fit time for N training samples and per-sample inference (median), peak extra RSS of
each side, and the agreement of the image scores (Spearman correlation, largest relative
difference: the coresets start at different rows, so the banks differ slightly).

Needs open3d (``pip install open3d-cpu``) next to xmodal. Run::

    python benchmarks/bench_btf.py [--train 10] [--test 6] [--repeat 3]
"""

from __future__ import annotations

import argparse

import numpy as np

import xmodal
from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure_once, median_time, peak_extra_memory
from xmodal.data import preprocess as pp
from xmodal.data import synthetic
from xmodal.methods.btf import BTF, INPUT_SIZE, btf_input

GRID = 28
CORESET_RATIO = 0.1


def reference_features(xyz: np.ndarray):
    """(784, 33) float32 BTF patch features of one preprocessed organized cloud (open3d + torch)."""
    import open3d as o3d
    import torch

    cloud = pp.resize_organized(xyz, INPUT_SIZE).reshape(-1, 3)
    valid = np.flatnonzero(np.any(cloud != 0, axis=1))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud[valid].astype(np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.1, max_nn=30))
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    fpfh = o3d.pipelines.registration.compute_fpfh_feature(pcd, o3d.geometry.KDTreeSearchParamHybrid(0.25, 100))
    full = np.zeros((INPUT_SIZE * INPUT_SIZE, 33), dtype=np.float32)
    full[valid] = np.asarray(fpfh.data).T
    grid = torch.from_numpy(full.T.reshape(1, 33, INPUT_SIZE, INPUT_SIZE))
    pooled = torch.nn.AdaptiveAvgPool2d((GRID, GRID))(torch.nn.AvgPool2d(3, 1)(grid))
    return pooled.reshape(33, -1).T.contiguous()


def reference_coreset(rows, ratio: float):
    """BTF's greedy coreset loop in torch, starting at row 0."""
    import torch

    count = max(1, int(len(rows) * ratio))
    picked = [0]
    min_dist = torch.linalg.norm(rows - rows[0:1], dim=1, keepdim=True)
    for _ in range(count - 1):
        idx = int(torch.argmax(min_dist))
        picked.append(idx)
        min_dist = torch.minimum(min_dist, torch.linalg.norm(rows - rows[idx:idx + 1], dim=1, keepdim=True))
    return rows[torch.tensor(picked)]


class ReferenceBTF:
    def fit(self, xyzs) -> None:
        import torch

        rows = torch.cat([reference_features(x) for x in xyzs])
        self.bank = reference_coreset(rows, CORESET_RATIO)

    def predict(self, xyz) -> tuple[float, np.ndarray]:
        import torch
        from scipy.ndimage import gaussian_filter

        patch = reference_features(xyz)
        dist = torch.cdist(patch, self.bank)
        min_val, min_idx = torch.min(dist, dim=1)
        s_idx = torch.argmax(min_val)
        s_star = torch.max(min_val)
        m_test = patch[s_idx].unsqueeze(0)
        m_star = self.bank[min_idx[s_idx]].unsqueeze(0)
        nn_idx = torch.topk(torch.cdist(m_star, self.bank), k=3, largest=False).indices
        m_star_knn = torch.linalg.norm(m_test - self.bank[nn_idx[0, 1:]], dim=1)
        d = np.sqrt(patch.shape[1])
        weight = 1 - torch.exp(s_star / d) / torch.sum(torch.exp(m_star_knn / d))
        small = min_val.reshape(1, 1, GRID, GRID)
        up = torch.nn.functional.interpolate(small, size=INPUT_SIZE, mode="bilinear", align_corners=False)
        return float(weight * s_star), gaussian_filter(up[0, 0].numpy(), sigma=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=10, help="good training samples (one category)")
    parser.add_argument("--test", type=int, default=6, help="test samples (half good, half defective)")
    parser.add_argument("--size", type=int, default=400, help="side of the synthetic organized clouds")
    parser.add_argument("--repeat", type=int, default=3, help="timed inference runs per sample (median)")
    args = parser.parse_args()

    import open3d as o3d
    from scipy.stats import spearmanr

    category = synthetic.CATEGORIES[0]
    train = [btf_input(synthetic.make_sample(category, "good", image_size=args.size, seed=0, index=i)[0])
             for i in range(args.train)]
    kinds = [k for k, where in synthetic.DEFECTS.items() if where != "rgb"]  # FPFH sees 3D defects only
    test = []
    for i in range(args.test):
        kind = "good" if i % 2 == 0 else kinds[(i // 2) % len(kinds)]
        test.append(btf_input(synthetic.make_sample(category, kind, image_size=args.size, seed=1, index=i)[0]))

    ours = BTF(modality="xyz", background="keep", coreset_ratio=CORESET_RATIO, calibration=0, progress=False)
    theirs = ReferenceBTF()
    _, our_fit, our_fit_peak = measure_once(lambda: ours.fit(train))
    _, their_fit, their_fit_peak = measure_once(lambda: theirs.fit([s.xyz for s in train]))

    our_scores = [float(ours.predict(s).score) for s in test]
    their_scores = [theirs.predict(s.xyz)[0] for s in test]
    _, our_peak = peak_extra_memory(lambda: ours.predict(test[0]))
    _, their_peak = peak_extra_memory(lambda: theirs.predict(test[0].xyz))
    our_time = np.median([median_time(lambda s=s: ours.predict(s), args.repeat) for s in test[:2]])
    their_time = np.median([median_time(lambda s=s: theirs.predict(s.xyz), args.repeat) for s in test[:2]])

    rho = spearmanr(our_scores, their_scores).statistic
    rel = np.max(np.abs(np.subtract(our_scores, their_scores)) / np.maximum(np.abs(their_scores), 1e-12))
    print(f"## bench_btf\n\n{machine_line()}; open3d {o3d.__version__}; {xmodal.get_num_threads()} threads\n")
    print(f"BTF FPFH-only, {args.train} training and {args.test} test samples ({args.size}² synthetic "
          f"'{category}', background removed beforehand), coreset {CORESET_RATIO}.\n")
    header = ["step", "reference (open3d + torch)", "xmodal", "speed-up", "reference peak", "xmodal peak"]
    rows = [[f"fit ({args.train} samples)", fmt_seconds(their_fit), fmt_seconds(our_fit),
             f"**{their_fit / our_fit:.1f}x**", fmt_bytes(their_fit_peak), fmt_bytes(our_fit_peak)],
            ["inference per sample (median)", fmt_seconds(their_time), fmt_seconds(our_time),
             f"**{their_time / our_time:.1f}x**", fmt_bytes(their_peak), fmt_bytes(our_peak)]]
    print(markdown_table(header, rows))
    print(f"\nImage scores: Spearman {rho:.3f}, largest relative difference {rel:.2e} "
          "(the coresets start at different rows).")


if __name__ == "__main__":
    main()
