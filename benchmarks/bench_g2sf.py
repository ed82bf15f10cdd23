"""G2SF per-sample inference after the backbones: xmodal vs the reference's inference shape in torch.

Both sides get the same features (IMG 28 x 28 x 768 as DINO ViT-B/8 gives, nearest-upsampled to
the 56 x 56 grid; PCD 56 x 56 x 1152 as Point-MAE gives, background cells all-zero), the same
banks of the supplement's average size (20,823 IMG x 768 and 83,292 PCD x 1152 rows) and the same
random LSPN weights. Features and banks are random with a decaying spectrum (real patch features
concentrate in few directions) and test patches lie near bank rows, as normal patches do.

Peer (the reference's inference, written in torch as its code does it): two full ``torch.cdist``
searches of all 3136 grid rows (IMG on the upsampled grid), ``topk`` 20 per modality, six LSPN
passes on the 1920-d [f, m_j] inputs of all 3136 patches (background w = 1 afterwards), min over
the six, and three maps (IMG, PCD, fused) upsampled bilinearly to 224 and blurred (Gaussian
sigma 4). xmodal: :meth:`xmodal.methods.G2SF._result` (exact pruned top-6 search per modality,
each unique IMG row once; the fused native kernel on foreground patches; one map).

Reported: median seconds per sample, peak extra resident memory per sample, the largest relative
difference of the patch scores, and the one-time cost of the per-bank projections. Then the fuser
training throughput (patches/s) of xmodal's trainer vs a plain torch loop (the whole dataset as
tensors, WeightedRandomSampler + DataLoader, the same losses).

Run::

    python benchmarks/bench_g2sf.py [--scale 1.0] [--repeat 2] [--train-patches 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import fmt_bytes, fmt_seconds, machine_line, markdown_table, measure_once
from xmodal.backbones.extractor import Features
from xmodal.memory_bank import MemoryBank
from xmodal.methods import G2SF
from xmodal.methods.g2sf.lspn import LSPN
from xmodal.methods.postprocess import gaussian_blur, upsample_bilinear

D_IMG, D_PCD, GRID, GRID3 = 768, 1152, 28, 56


def structured(g, n, dim, rank=48, noise=0.05):
    basis = g.standard_normal((rank, dim)).astype(np.float32)
    scales = (1.0 / np.arange(1, rank + 1) ** 0.7).astype(np.float32)
    return (g.standard_normal((n, rank)).astype(np.float32) * scales) @ basis + noise * g.standard_normal(
        (n, dim)).astype(np.float32), basis, scales


def make_case(scale: float, seed: int = 0):
    g = np.random.default_rng(seed)
    n_img, n_pcd = int(20823 * scale), int(83292 * scale)
    bank_img, _, _ = structured(g, n_img, D_IMG)
    bank_pcd, _, _ = structured(g, n_pcd, D_PCD)
    # test patches: near random bank rows
    img = bank_img[g.integers(0, n_img, GRID * GRID)]
    img = img + 0.05 * g.standard_normal((GRID * GRID, D_IMG)).astype(np.float32)
    pcd = bank_pcd[g.integers(0, n_pcd, GRID3 * GRID3)] + 0.05 * g.standard_normal((GRID3 * GRID3, D_PCD)).astype(
        np.float32)
    yy, xx = np.mgrid[:GRID3, :GRID3]
    fg = ((yy - 28) ** 2 + (xx - 28) ** 2 < 22**2).reshape(-1)  # a disc: ~48 % foreground
    pcd[~fg] = 0
    feats = Features(rgb=torch.from_numpy(img.T.reshape(1, D_IMG, GRID, GRID).copy()),
                     xyz=torch.from_numpy(pcd.T.reshape(1, D_PCD, GRID3, GRID3).copy()),
                     foreground=torch.from_numpy(fg.reshape(1, GRID3, GRID3)))
    torch.manual_seed(seed)
    net = LSPN(D_IMG, D_PCD, "joint").eval()
    return torch.from_numpy(bank_img), torch.from_numpy(bank_pcd), feats, net


def detector(bank_img, bank_pcd, net) -> G2SF:
    det = G2SF(direction="joint", progress=False, calibration=0)
    det.banks = {"img": MemoryBank(bank_img), "pcd": MemoryBank(bank_pcd)}
    det.img_stats = (0.0, 1.0)
    det.mu = np.array([1.0, 1.0])
    det.lspn = net
    det.fitted = True
    return det


def peer(bank_img, bank_pcd, feats, net, mu=(1.0, 1.0)):
    """The reference's shape: full cdist searches, top-20, six LSPN passes, three blurred maps.
    ``bank_pcd`` holds the reference's all-zero background row (last)."""
    with torch.no_grad():
        img = feats.rgb[0].reshape(D_IMG, -1).T
        img = F.interpolate(img.T.reshape(1, D_IMG, GRID, GRID), size=GRID3, mode="nearest")
        img = img.reshape(D_IMG, -1).T.contiguous()
        pcd = feats.xyz[0].reshape(D_PCD, -1).T.contiguous()
        fg = feats.foreground[0].reshape(-1)
        d_img = torch.cdist(img, bank_img)
        di, ii = torch.topk(d_img, 20, dim=1, largest=False)
        del d_img
        d_pcd = torch.cdist(pcd, bank_pcd)
        dp, ip = torch.topk(d_pcd, 20, dim=1, largest=False)
        del d_pcd
        f = torch.cat([img, pcd], dim=1)
        sigma = net.sigma()
        scores = []
        for j in range(6):
            m = torch.cat([bank_img[ii[:, j]], bank_pcd[ip[:, j]]], dim=1)
            s = torch.stack([F.pairwise_distance(img, m[:, :D_IMG]), F.pairwise_distance(pcd, m[:, D_IMG:])], 1)
            s = s / torch.tensor(mu)
            w = net.scales(f, m)
            w[~fg] = 1.0
            scores.append((w * sigma * s).sum(1))
        fused = torch.stack(scores, 1).min(1).values
        maps = [gaussian_blur(upsample_bilinear(x.reshape(GRID3, GRID3), 224), 4.0)
                for x in (di[:, 0], dp[:, 0], fused)]
    return fused, maps


def inference(args) -> str:
    bank_img, bank_pcd, feats, net = make_case(args.scale)
    det = detector(bank_img, bank_pcd, net)
    # the reference keeps background rows (all zero) in its PCD bank: background cells match them
    peer_pcd = torch.cat([bank_pcd, torch.zeros(1, D_PCD)])
    # one-time per model: the per-bank projections, and the pruned search's setup (first query)
    (_, prep_s, prep_mem) = measure_once(lambda: (_prepare(det), det._result(feats, 0)))
    rows, results = [], {}
    for _ in range(args.repeat):
        for name, fn in (("peer", lambda: peer(bank_img, peer_pcd, feats, net)),
                         ("xmodal", lambda: det._result(feats, 0))):
            out, seconds, mem = measure_once(fn)
            best = results.get(name)
            if best is None or seconds < best[1]:
                results[name] = (out, seconds, mem if best is None else max(mem, best[2]))
    fused_peer = results["peer"][0][0].numpy()
    fused_x = results["xmodal"][0].extras["patch"].reshape(-1)
    rel = float(np.max(np.abs(fused_x - fused_peer)) / np.max(np.abs(fused_peer)))
    (_, tp, mp), (_, tx, mx) = results["peer"], results["xmodal"]
    rows.append([f"IMG {len(bank_img)} x 768, PCD {len(bank_pcd)} x 1152", fmt_seconds(tp), fmt_seconds(tx),
                 f"**{tp / tx:.1f}x**", fmt_bytes(mp), fmt_bytes(mx), f"{mx / max(mp, 1):.2f}x", f"{rel:.1e}"])
    table = markdown_table(["banks", "reference-shaped torch", "xmodal", "speed-up", "torch peak extra",
                            "xmodal peak extra", "memory ratio", "max rel. score diff"], rows)
    return (table + f"\n\nOne-time per model (first prediction after fit/load: per-bank projections and the "
            f"pruned search's setup, plus that prediction): "
            f"{fmt_seconds(prep_s)}, {fmt_bytes(det._fused.nbytes)} kept (peak extra {fmt_bytes(prep_mem)}).")


def _prepare(det):
    from xmodal.methods.g2sf.scoring import FusedHead

    det._fused = FusedHead(det.lspn, det.banks)
    return det._fused


def training(args) -> str:
    from xmodal.methods.g2sf.losses import LOSS_WEIGHTS, lspn_losses
    from xmodal.methods.g2sf.trainer import FusionDataset, Trainer

    g = np.random.default_rng(1)
    n, n_img, n_pcd = args.train_patches, 4000, 8000
    bank_img = torch.from_numpy(structured(g, n_img, D_IMG)[0])
    bank_pcd = torch.from_numpy(structured(g, n_pcd, D_PCD)[0])
    ii = g.integers(0, n_img, (n, 20)).astype(np.int32)
    ip = g.integers(0, n_pcd, (n, 20)).astype(np.int32)
    f = np.concatenate([bank_img.numpy()[ii[:, 0]], bank_pcd.numpy()[ip[:, 0]]], 1)
    f += 0.1 * g.standard_normal(f.shape).astype(np.float32)
    labels = g.random(n) < 0.05
    data = FusionDataset(8 << 30)
    data.store.append(f)
    data._labels, data._idx_img, data._idx_pcd = [labels], [ii], [ip]
    data._dist = [np.stack([np.linalg.norm(f[:, :D_IMG] - bank_img.numpy()[ii[:, 0]], axis=1),
                            np.linalg.norm(f[:, D_IMG:] - bank_pcd.numpy()[ip[:, 0]], axis=1)], 1)]
    data.finish()
    trainer = Trainer(data, bank_img, bank_pcd, loss_weights="paper", direction="per_modality", epochs=1,
                      batch_size=None, lr=1.5e-4, lr_scale=5e-3, seed=0, device="cpu")
    started = time.perf_counter()
    trainer.run()
    x_rate = len(trainer.train_rows) / (time.perf_counter() - started)

    # the plain torch loop: the training half as tensors, WeightedRandomSampler + DataLoader
    rows = trainer.train_rows
    ft, lt = torch.from_numpy(f[rows]), torch.from_numpy(labels[rows])
    it, pt = torch.from_numpy(ii[rows].astype(np.int64)), torch.from_numpy(ip[rows].astype(np.int64))
    weights = torch.where(lt, 1.0 / lt.sum(), 1.0 / (~lt).sum()).double()
    sampler = torch.utils.data.WeightedRandomSampler(weights, len(rows), replacement=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ft, lt, it, pt), batch_size=trainer.batch_size,
                                         sampler=sampler)
    torch.manual_seed(0)
    net = LSPN(D_IMG, D_PCD, "per_modality")
    opt = [torch.optim.Adam([p for k, p in net.named_parameters() if k != "g"], lr=1.5e-4, weight_decay=1.5e-4),
           torch.optim.Adam([net.g], lr=5e-3, weight_decay=1.5e-4)]
    mu = torch.as_tensor(trainer.mu, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for fb, lb, ib, pb in loader:
        protos = torch.cat([bank_img[ib[:, :11]], bank_pcd[pb[:, :11]]], -1)
        loss = lspn_losses(net, fb, protos, ~lb, mu, trainer.big_m, LOSS_WEIGHTS["paper"], gen)["total"]
        for o in opt:
            o.zero_grad()
        loss.backward()
        for o in opt:
            o.step()
    t_rate = len(rows) / (time.perf_counter() - started)
    data.close()
    return markdown_table(["fuser training (1 epoch, batch " + str(trainer.batch_size) + ")", "plain torch loop",
                           "xmodal Trainer", "ratio"],
                          [[f"{len(rows)} patches x 1920", f"{t_rate:.0f} patches/s", f"{x_rate:.0f} patches/s",
                            f"{x_rate / t_rate:.2f}x"]])


def detection(args) -> str:
    """G2SF (both loss-weight sets) vs PatchCore rgb+xyz, offline backbones, same synthetic data."""
    import tempfile

    import xmodal
    from xmodal.data import MVTec3D, synthetic
    from xmodal.data.synthetic import DEFECTS
    from xmodal.methods import PatchCore

    root = tempfile.mkdtemp(prefix="bench-g2sf-")
    synthetic.make_dataset(root, categories=["puck"], n_train=args.det_train, n_test=4, n_test_good=10,
                           image_size=128, seed=5, n_validation=6)
    test = MVTec3D(root, "puck", "test")
    defects = [e.defect for e in test.entries]
    small = {"backbones": "offline", "n_synthetic": args.det_synthetic, "epochs": args.det_epochs,
             "fuser_max_patches": args.det_patches, "progress": False}
    models = {"G2SF paper weights": G2SF(**small), "G2SF code weights": G2SF(**small, loss_weights="code"),
              "PatchCore rgb+xyz (sum)": PatchCore(modality="rgb+xyz", backbones="offline", progress=False)}
    rows = []
    for name, det in models.items():
        started = time.perf_counter()
        det.fit(MVTec3D(root, "puck", "train"))
        fit_s = time.perf_counter() - started
        rep = xmodal.evaluate(det, test, protocol="m3dm", progress_bar=False, keep_results=True)
        scores = np.array([r.score for r in rep["results"]])
        good = scores[[d == "good" for d in defects]]
        kinds = []
        for kind in ("rgb", "3d", "both"):
            bad = scores[[DEFECTS.get(d) == kind for d in defects]]
            pairs = (bad[:, None] > good[None, :]).mean() + 0.5 * (bad[:, None] == good[None, :]).mean()
            kinds.append(f"{float(pairs):.3f}")  # I-AUROC of this defect kind against the good parts
        rows.append([name, f"{rep['I-AUROC']:.3f}", *kinds, f"{rep['P-AUROC']:.3f}", f"{rep['AUPRO@30%']:.3f}",
                     f"{rep['AUPRO@1%']:.3f}", fmt_seconds(fit_s)])
    header = ["model", "I-AUROC", "RGB-only", "3D-only", "both", "P-AUROC", "AUPRO@30%", "AUPRO@1%", "fit"]
    return (f"Synthetic 'puck' ({args.det_train} training images, 10 good + 7 defects x 4 test images, 128 px), "
            f"m3dm protocol; G2SF: {args.det_synthetic} synthetic images, {args.det_epochs} epochs, at most "
            f"{args.det_patches} fuser patches.\n\n" + markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="bank sizes relative to the supplement's average")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds (the fastest is kept)")
    parser.add_argument("--train-patches", type=int, default=20000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--detection", action="store_true", help="only the detection comparison with PatchCore")
    parser.add_argument("--training-only", action="store_true", help="only the fuser training throughput")
    parser.add_argument("--det-train", type=int, default=10)
    parser.add_argument("--det-synthetic", type=int, default=24)
    parser.add_argument("--det-epochs", type=int, default=4)
    parser.add_argument("--det-patches", type=int, default=10000)
    args = parser.parse_args()
    print(machine_line())
    if args.detection:
        print(detection(args))
        return
    if args.training_only:
        print(training(args))
        return
    print(inference(args))
    if not args.skip_training:
        print()
        print(training(args))


if __name__ == "__main__":
    main()
