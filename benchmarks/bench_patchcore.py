"""PatchCore: xmodal vs anomalib 2.7 ``Patchcore`` (fit time, peak memory, per-sample inference).

Both run RGB PatchCore with the same WideResNet-50-2 (layer2 + layer3, 3x3 aggregation, 1536-d,
28x28 patches at 224x224) with the *same random weights* (xmodal's seeded initialisation loaded
into anomalib's timm feature extractor), on the same synthetic training set (``puck``, 224x224,
default 200 images), on the CPU, coreset ratio 0.1 with anomalib's sparse random projection,
image score re-weighted with 9 neighbours (anomalib's defaults). anomalib runs its torch model
(``PatchcoreModel``: training-mode forward into ``embedding_store``, then ``vstack`` and
``KCenterGreedy`` exactly as ``subsample_embedding`` does) without the Lightning trainer, so
no framework overhead is counted against it. Inputs are the same normalised 224x224 tensors
(anomalib's default pre-processor resizes to 256; 224 keeps the 28x28 grid of the paper).
Both models are built and run once on one batch before anything is timed.

anomalib's greedy coreset costs ~0.2 s per selected row on this machine (15,680 rows for 200
images, i.e. most of an hour): by default it runs the first ``--peer-steps`` selections and the
rest is extrapolated linearly (every step is one full pass over the projected features, so
the cost per step is constant). Its peak memory is measured on the same run (the per-step
temporaries do not grow). ``--full-peer`` runs the whole selection.

Inference is timed with glibc's steady-state allocator thresholds (``steady_state_malloc``): the
fixed thresholds the memory measurements need unmap every freed conv buffer, which doubles a
batch-1 CNN forward on both sides and hides the difference between them.

Cross-check: anomalib is then given xmodal's memory bank, and both score the same test images;
image scores agree to float32 rounding (anomalib's expanded-form distances).

``--large N --max-memory BYTES`` also fits xmodal on N lazily generated images with the
streaming coreset and reports the peak resident memory of the whole process (target: 1,000
images within 8 GiB). ``--study`` measures the accuracy effect of the streaming coreset.
``--ours-only`` fits and times xmodal alone (for a machine without anomalib).

Run in the peer venv (torch, timm, anomalib 2.7) with xmodal installed into a target dir:

    /work/peers/bin/pip install --no-deps --target /tmp/xm . scipy-openblas32
    PYTHONPATH=/tmp/xm /work/peers/bin/python benchmarks/bench_patchcore.py [--train 200] [--large 1000]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence

import numpy as np

from _common import (
    fmt_bytes,
    fmt_seconds,
    machine_line,
    markdown_table,
    measure_once,
    peak_extra_memory,
    status_kib,
    steady_state_malloc,
)

CATEGORY = "puck"
SIZE = 224


class LazySynthetic(Sequence):
    """Synthetic samples generated when indexed (nothing held in memory)."""

    def __init__(self, n: int, split: str = "train", defect: str = "good"):
        self.n, self.split, self.defect = n, split, defect

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        from xmodal.data import synthetic

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        return synthetic.make_sample(CATEGORY, self.defect, image_size=SIZE, split=self.split, index=i)[0]


def image_tensor(samples):
    """The (B, 3, 224, 224) ImageNet-normalised input both implementations see."""
    import torch

    from xmodal.data.preprocess import resize_rgb

    x = np.stack([resize_rgb(s.rgb, SIZE).astype(np.float32) / 255.0 for s in samples])
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    return (x - mean) / std


def xmodal_detector(seed: int, **kw):
    from xmodal.methods import PatchCore

    return PatchCore(modality="rgb", backbone="wide_resnet50_2", random_weights=True, seed=seed, progress=False,
                     batch_size=8, **kw)


def anomalib_model(xmodal_backbone):
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False, num_neighbors=9)
    target = model.feature_extractor.feature_extractor
    ours = {k: v for k, v in xmodal_backbone.state_dict().items() if k in target.state_dict()}
    missing = set(target.state_dict()) - set(ours)
    if missing:
        raise RuntimeError(f"weights not transferred: {sorted(missing)[:5]}")
    target.load_state_dict(ours, strict=True)
    model.train()
    model.feature_extractor.eval()  # frozen backbone, as anomalib's own extractor is
    return model


def anomalib_fit(model, samples, ratio: float, steps: int | None, batch: int = 8) -> dict:
    """anomalib's fit: embeddings of every batch, vstack, KCenterGreedy (``steps`` selections)."""
    import torch
    from anomalib.models.components.sampling import KCenterGreedy

    t0 = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(samples), batch):
            model(image_tensor(samples[first : first + batch]))
    t1 = time.perf_counter()
    memory_bank = torch.vstack(model.embedding_store)
    model.embedding_store.clear()
    sampler = KCenterGreedy(embedding=memory_bank, sampling_ratio=ratio)
    full = sampler.coreset_size
    t2 = time.perf_counter()
    sampler.model.fit(memory_bank)  # the projection, timed on its own for the extrapolation
    sampler.model.transform(memory_bank)
    t3 = time.perf_counter()
    run = full if steps is None else min(steps, full)
    sampler.coreset_size = run
    sampler.select_coreset_idxs()  # projection again + (run - 1) selections
    t4 = time.perf_counter()
    projection = t3 - t2
    per_step = max(t4 - t3 - projection, 0.0) / max(run - 1, 1)
    coreset = t2 - t1 + projection + per_step * (full - 1)
    return {"extraction": t1 - t0, "coreset": coreset, "total": t1 - t0 + coreset, "steps_run": run,
            "steps_full": full, "per_step": per_step, "projection": projection, "rows": memory_bank.shape[0],
            "dim": sampler.features.shape[1]}


def _train_and_test(args):
    from xmodal.data import synthetic

    train = [synthetic.make_sample(CATEGORY, "good", image_size=SIZE, split="train", index=i)[0]
             for i in range(args.train)]
    tests = [synthetic.make_sample(CATEGORY, d, image_size=SIZE, index=i)[0]
             for i in range(args.test // 2) for d in ("good", "stain")]
    return train, tests


def _fitted_xmodal(args, train):
    """(detector, fit seconds, fit peak extra bytes); the backbone is built and warmed up first."""
    det = xmodal_detector(args.seed)
    det.fit(train[:8])  # builds the backbone; the timed fit below reuses it
    _, seconds, peak = measure_once(lambda: det.fit(train))
    print(f"xmodal fit {seconds:.1f} s, peak {fmt_bytes(peak)}: {det.info}", flush=True)
    return det, seconds, peak


def section_ours(args) -> list[str]:
    """xmodal alone (no anomalib installed): fit and per-sample inference, as in the full section."""
    import torch

    train, tests = _train_and_test(args)
    det, xm_fit, xm_peak = _fitted_xmodal(args, train)
    with torch.no_grad(), steady_state_malloc():
        for _ in range(2):  # warm-up
            det.predict(tests[0])
        times = []
        for s in tests:
            t = time.perf_counter()
            det.predict(s)
            times.append(time.perf_counter() - t)
    search = det.memory_banks["rgb"].search_stats
    rows = [[f"fit ({args.train} images)", fmt_seconds(xm_fit)], ["fit peak extra memory", fmt_bytes(xm_peak)],
            ["inference per sample (batch 1, median)", fmt_seconds(float(np.median(times)))]]
    return [markdown_table(["", "xmodal PatchCore"], rows), "",
            f"- Bank {det.info['bank_rows']['rgb']:,} x 1536; {search['fallback']} of {search['queries']:,} patches "
            "fell back to the full scan."]


def section_fit_and_inference(args) -> list[str]:
    import torch

    from xmodal.backbones import create

    lines = []
    train, tests = _train_and_test(args)
    # Both models are built and warmed up (one batch) before anything is timed.
    det, xm_fit, xm_peak = _fitted_xmodal(args, train)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # the detector's seeded random initialisation
        backbone = create("wide_resnet50_2", weights=None)
    model = anomalib_model(backbone)
    with torch.no_grad():
        model(image_tensor(train[:8]))
        model.embedding_store.clear()
    with torch.no_grad():  # the two feature pipelines agree before anything is timed
        model.eval()
        ours = det.extractor([train[0]], modalities=("rgb",)).rgb
        emb = model.generate_embedding({k: model.feature_pooler(v) for k, v in
                                        model.feature_extractor(image_tensor([train[0]])).items()})
        feature_diff = float((ours - emb).abs().max())
        model.train()
        model.feature_extractor.eval()
    print(f"max |feature difference| {feature_diff:.2e}", flush=True)

    steps = None if args.full_peer else args.peer_steps
    holder = {}
    _, an_peak = peak_extra_memory(lambda: holder.update(anomalib_fit(model, train, 0.1, steps)))
    an = holder
    print(f"anomalib fit {an}", flush=True)

    # inference: anomalib gets xmodal's bank (same features, same size) so both score the same
    model.memory_bank = det.banks["rgb"].clone()
    model.eval()
    with torch.no_grad(), steady_state_malloc():
        for _ in range(2):  # warm-up
            det.predict(tests[0])
            model(image_tensor([tests[0]]))
        xm_times, an_times, diffs = [], [], []
        for s in tests:
            t = time.perf_counter()
            ours = det.predict(s)
            xm_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = model(image_tensor([s]))
            an_times.append(time.perf_counter() - t)
            diffs.append(abs(ours.score - float(theirs.pred_score[0])) / max(abs(float(theirs.pred_score[0])), 1e-12))
    xm_inf, an_inf = float(np.median(xm_times)), float(np.median(an_times))
    search = det.memory_banks["rgb"].search_stats

    label = "anomalib 2.7 Patchcore" + ("" if an["steps_run"] == an["steps_full"] else
                                        f" (coreset extrapolated from {an['steps_run']:,} of "
                                        f"{an['steps_full']:,} steps)")
    rows = [
        ["fit (200 images)" if args.train == 200 else f"fit ({args.train} images)",
         fmt_seconds(an["total"]), fmt_seconds(xm_fit), f"{an['total'] / xm_fit:.1f}x", ">= 5x"],
        ["  of which feature extraction", fmt_seconds(an["extraction"]), fmt_seconds(det.info["extraction_seconds"]),
         f"{an['extraction'] / det.info['extraction_seconds']:.1f}x", ""],
        ["  of which coreset", fmt_seconds(an["coreset"]), fmt_seconds(det.info["coreset_seconds"]),
         f"{an['coreset'] / det.info['coreset_seconds']:.0f}x", ""],
        ["fit peak extra memory", fmt_bytes(an_peak), fmt_bytes(xm_peak), f"{xm_peak / an_peak:.2f}x", "<= 0.3x"],
        ["inference per sample (batch 1, median)", fmt_seconds(an_inf), fmt_seconds(xm_inf),
         f"{an_inf / xm_inf:.1f}x", ">= 2x"],
    ]
    lines.append(markdown_table(["", label, "xmodal PatchCore", "ratio", "target"], rows))
    lines.append("")
    lines.append(f"- Training rows {an['rows']:,} x 1536 -> bank {det.info['bank_rows']['rgb']:,}; anomalib's "
                 f"projection {an['dim']} dims ({fmt_seconds(an['projection'])}), {fmt_seconds(an['per_step'])} per "
                 f"coreset step; xmodal: same projection, exact greedy selection with triangle-inequality pruning.")
    lines.append(f"- Same input, same weights: max |feature difference| {feature_diff:.1e}. With xmodal's bank "
                 f"loaded into anomalib, image scores differ by at most {max(diffs):.1e} (relative) over "
                 f"{len(tests)} test images.")
    lines.append(f"- xmodal inference: exact 1-NN through the PCA lower-bound search "
                 f"({search['fallback']} of {search['queries']:,} patches fell back to the full scan).")
    return lines


def section_large(args) -> list[str]:
    budget = args.max_memory
    det = xmodal_detector(args.seed, max_memory=budget)
    baseline = status_kib("VmRSS") * 1024
    _, seconds, peak = measure_once(lambda: det.fit(LazySynthetic(args.large)))
    absolute = status_kib("VmHWM") * 1024
    print(f"large fit {seconds:.1f} s peak extra {fmt_bytes(peak)} absolute {fmt_bytes(absolute)}: {det.info}",
          flush=True)
    rows = [[f"{args.large:,}", fmt_bytes(budget), det.info["fit_mode"], f"{det.info['chunks']['rgb']}",
             f"{det.info['training_rows']['rgb']:,} -> {det.info['bank_rows']['rgb']:,}", fmt_seconds(seconds),
             fmt_bytes(peak), fmt_bytes(max(absolute, baseline)), "8.0 GiB"]]
    return [markdown_table(["training images", "max_memory", "mode", "chunks", "rows -> bank", "fit time",
                            "peak extra RSS", "process peak RSS", "target"], rows),
            "", "Images are generated on the fly inside the timed fit (about 40 ms each); the fit reads them "
                "batch by batch from a Sequence, as it reads ``MVTec3D(root, category, 'train')``."]


def section_study(args) -> list[str]:
    """Accuracy effect of the streaming coreset: same features, one-shot vs chunked selection."""
    import torch
    from sklearn.metrics import roc_auc_score

    from xmodal import knn
    from xmodal.data import synthetic
    from xmodal.ops import jl_dimension

    train = [synthetic.make_sample(CATEGORY, "good", image_size=SIZE, split="train", index=i)[0]
             for i in range(args.study_train)]
    defects = ("stain", "discoloration", "crack", "contamination")
    tests = [synthetic.make_sample(CATEGORY, "good", image_size=SIZE, index=i)[0] for i in range(12)]
    tests += [synthetic.make_sample(CATEGORY, d, image_size=SIZE, index=i)[0] for d in defects for i in range(3)]
    labels = np.array([s.label for s in tests])
    gt = np.stack([np.asarray(torch.nn.functional.interpolate(torch.from_numpy(s.mask()[None, None].astype(np.float32)),
                                                               size=(224, 224), mode="nearest")[0, 0] > 0.5)
                   for s in tests])
    one_shot = xmodal_detector(args.seed).fit(train)
    feats = one_shot.extractor(train[:: max(1, len(train) // 20)], modalities=("rgb",)).rgb
    probe = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).contiguous()  # training rows to cover
    proj = jl_dimension(len(train) * 784)
    per_image_bytes = 784 * ((1536 + proj) * 4 + 16)
    bank_bytes = math.ceil(0.1 * len(train) * 784) * (1536 + proj) * 4
    rows, reference_scores = [], None
    for label, chunk in [("one-shot", None), ("chunks of 50 images", 50), ("chunks of 20 images", 20),
                         ("chunks of 5 images", 5)]:
        if chunk is None:
            det = one_shot
        else:
            det = xmodal_detector(args.seed, max_memory=bank_bytes + chunk * per_image_bytes).fit(train)
        results = det.predict_batch(tests)
        scores = np.array([r.score for r in results])
        maps = np.stack([r.map for r in results])
        cover = knn(probe, det.banks["rgb"], 1).dist[:, 0].numpy()
        if reference_scores is None:
            reference_scores = scores
        rows.append([label, str(det.info.get("chunks", {}).get("rgb", 1)), f"{det.info['bank_rows']['rgb']:,}",
                     fmt_seconds(det.info["coreset_seconds"]), f"{cover.mean():.3f} / {cover.max():.3f}",
                     f"{roc_auc_score(labels, scores):.4f}", f"{roc_auc_score(gt.reshape(-1), maps.reshape(-1)):.4f}",
                     f"{np.abs(scores / reference_scores - 1).max():.3f}"])
    return [markdown_table(["selection", "chunks", "bank rows", "selection time after extraction",
                            "training-row distance to bank (mean / max)",
                            "I-AUROC", "P-AUROC", "max rel. image-score change"], rows),
            "", f"{len(train)} training images, test set: 12 good + 3 each of {', '.join(defects)} "
            "(RGB-visible defects; "
                "the backbone is random-weight WideResNet-50, so absolute AUROCs say little about real weights). "
                "Coverage: distance of every patch of 20 of the training images to its nearest bank row. "
                "Streaming selects each chunk's coreset while features are extracted, so its selection "
                "time counts only the final merge."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--peer-steps", type=int, default=300)
    parser.add_argument("--full-peer", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large", type=int, default=0, help="also fit this many images with max_memory")
    parser.add_argument("--max-memory", type=int, default=2 << 30)
    parser.add_argument("--study", action="store_true", help="accuracy of the streaming coreset")
    parser.add_argument("--study-train", type=int, default=100)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--ours-only", action="store_true", help="fit and inference of xmodal alone (no anomalib)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    out = [machine_line() + f"; torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    if args.ours_only:
        out += ["", *section_ours(args)]
    elif not args.skip_peer:
        import anomalib

        out[0] += f"; anomalib {anomalib.__version__}"
        out += ["", *section_fit_and_inference(args)]
    if args.large:
        out += ["", *section_large(args)]
    if args.study:
        out += ["", *section_study(args)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
