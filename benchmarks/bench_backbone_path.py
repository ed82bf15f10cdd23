"""The path around the backbone (issue 18 item 6): PatchCore's fit-time feature extraction vs
anomalib 2.7's, and ``predict_batch`` vs ``predict`` per image.

(a) Fit extraction, same WideResNet-50-2 (layer2 + layer3, xmodal's seeded random weights loaded
    into anomalib's timm extractor), same N synthetic 224x224 images, batch 8:
    - anomalib: its input tensor from the uint8 images (resize + ToTensor + Normalize, as
      ``bench_patchcore.image_tensor``) and ``PatchcoreModel`` in training mode (backbone,
      3x3 average pool, upsample + concatenate, rows appended to ``embedding_store``), then
      the ``vstack`` its coreset starts with;
    - xmodal: ``PatchCore.fit``'s extraction phase (``info["extraction_seconds"]``: samples ->
      features -> rows streamed into the memory-bank builder, projection for the coreset and
      statistics included), and the same without the builder (features + rows only).
    Rounds alternate between the two (the machine is shared); the best round of each is kept.
(b) ``predict`` one image at a time vs ``predict_batch`` (batch 8), images/s, PatchCore RGB with
    the same backbone on ``--small`` (128) pixel inputs.

Run in a venv with anomalib (see bench_patchcore.py); torchvision's CPU ops are stubbed when its
extension cannot load (a CUDA torchvision wheel next to a CPU torch): nothing here uses them.

    python benchmarks/bench_backbone_path.py [--train 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time


def _stub_torchvision_ops() -> None:
    import torch

    try:
        import torchvision  # noqa: F401

        return
    except (RuntimeError, OSError):
        pass
    lib = torch.library.Library("torchvision", "DEF")  # kept alive below
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _stub_torchvision_ops.lib = lib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-only", action="store_true")
    args = parser.parse_args()

    import torch

    import xmodal
    from _common import machine_line, markdown_table
    from bench_patchcore import anomalib_model, image_tensor, xmodal_detector
    from xmodal.backbones import create
    from xmodal.data import synthetic

    train = [synthetic.make_sample("puck", "good", image_size=224, split="train", index=i)[0]
             for i in range(args.train)]
    det = xmodal_detector(args.seed, calibration=0)
    det.fit(train[:8])  # builds and warms up the backbone
    model = None
    if not args.ours_only:
        _stub_torchvision_ops()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            backbone = create("wide_resnet50_2", weights=None)
        model = anomalib_model(backbone)
        with torch.no_grad():
            model(image_tensor(train[:8]))
        model.embedding_store.clear()

    def anomalib_extract():
        t0 = time.perf_counter()
        with torch.no_grad():
            for first in range(0, len(train), 8):
                model(image_tensor(train[first : first + 8]))
            bank = torch.vstack(model.embedding_store)
        model.embedding_store.clear()
        del bank
        return time.perf_counter() - t0

    def xmodal_fit_extract():
        det.fit(train)
        return det.info["extraction_seconds"]

    def xmodal_features_only():
        t0 = time.perf_counter()
        with torch.no_grad():
            for first in range(0, len(train), 8):
                batch = train[first : first + 8]
                feats = det._features(batch)
                for i in range(len(batch)):
                    det._rows(feats, "rgb", i)[0].cpu()
        return time.perf_counter() - t0

    timings = {"anomalib": [], "xmodal fit extraction": [], "xmodal features + rows": []}
    for _ in range(args.rounds):
        if model is not None:
            timings["anomalib"].append(anomalib_extract())
        timings["xmodal fit extraction"].append(xmodal_fit_extract())
        timings["xmodal features + rows"].append(xmodal_features_only())
    best = {k: min(v) for k, v in timings.items() if v}
    rows = []
    for name, seconds in best.items():
        ratio = f"{best['anomalib'] / seconds:.2f}x" if "anomalib" in best and name != "anomalib" else ""
        rows.append([name, f"{seconds:.2f} s", f"{args.train / seconds:.1f}", ratio])
        print(" | ".join(rows[-1]), flush=True)

    small = [synthetic.make_sample("puck", d, image_size=args.small, index=i)[0]
             for i in range(8) for d in ("good", "stain")]
    det_small = xmodal_detector(args.seed, calibration=0)
    det_small.fit([synthetic.make_sample("puck", "good", image_size=args.small, split="train", index=i)[0]
                   for i in range(8)])
    det_small.predict_batch(small[:8])
    one, batched = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        single = [det_small.predict(s) for s in small]
        one.append(len(small) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        many = det_small.predict_batch(small, batch_size=8)
        batched.append(len(small) / (time.perf_counter() - t0))
    same = max(abs(a.score - b.score) for a, b in zip(single, many, strict=True))
    print()
    print(machine_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; xmodal {xmodal.__version__}; "
          f"best of {args.rounds} alternating rounds; the machine was shared with other jobs")
    print(f"(a) fit feature extraction, {args.train} synthetic 224x224 images, WideResNet-50-2 layer2+3, batch 8")
    print(markdown_table(["", "time", "images/s", "anomalib / this"], rows))
    print()
    print(f"(b) PatchCore RGB on {args.small}x{args.small} inputs, {len(small)} images")
    print(markdown_table(["", "images/s (best round)"], [["predict (one at a time)", f"{max(one):.1f}"],
                                                          ["predict_batch (8)", f"{max(batched):.1f}"]]))
    print(f"largest score difference between the two: {same:.2e}")


if __name__ == "__main__":
    main()
