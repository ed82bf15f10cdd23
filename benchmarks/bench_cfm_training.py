"""CFM training speed: each speed-up of issue 18 item 4 measured alone and combined, with accuracy.

CFM's mapping networks train per pixel on every foreground row of every training image, for
50 epochs (paper: batch of 4 images, Adam 1e-3). This fits CFM with the offline backbones on
the same synthetic category once per training setting and reports, for each:

- training time and foreground rows processed per second (forward + backward of both networks),
- the number of optimisation steps (the row share keeps it; early stopping cuts epochs),
- I-AUROC and AUPRO@30 % on the same test set (7 defect types + good parts),
- the extrapolation to a 250-image category (``--category-images``): extraction time per image
  measured here x 250, plus training at the measured rows/s on 250 x (rows per image) x epochs
  x row share (early stopping: at the epochs it ran here).

The settings: ``paper`` (every row, float32, 50 epochs), ``bf16`` (bfloat16 autocast in the
networks), ``rows 1/k`` (each step draws 1/k of its images' rows: same steps, fewer rows),
``patience`` (early stopping on the loss of 5 % held-out images), and their combinations. The
fused MLP kernel is an inference kernel (no backward): training keeps torch's autograd.

    python benchmarks/bench_cfm_training.py [--train 12] [--epochs 50] [--size 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from _common import fmt_seconds, machine_line, markdown_table

SETTINGS = {
    "paper (all rows, fp32)": {},
    "bf16": {"train_precision": "bf16"},
    "rows 1/8": {"row_fraction": 1 / 8},
    "rows 1/8 + bf16": {"row_fraction": 1 / 8, "train_precision": "bf16"},
    "rows 1/8 + patience 5": {"row_fraction": 1 / 8, "patience": 5},
    "rows 1/16 + bf16": {"row_fraction": 1 / 16, "train_precision": "bf16"},
    "default": None,  # the constructor's defaults, whatever they are
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=12, help="training images")
    parser.add_argument("--test", type=int, default=2, help="test images per defect type")
    parser.add_argument("--good", type=int, default=6, help="good test images")
    parser.add_argument("--size", type=int, default=200, help="synthetic image side")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--category", default="puck")
    parser.add_argument("--category-images", type=int, default=250)
    parser.add_argument("--only", nargs="*", help="settings to run (names as in the table)")
    args = parser.parse_args()

    import xmodal
    from xmodal.data import MVTec3D, synthetic
    from xmodal.methods import CFM

    root = tempfile.mkdtemp(prefix="xmodal-cfm-train-")
    synthetic.make_dataset(root, categories=[args.category], n_train=args.train, n_test=args.test,
                           n_test_good=args.good, image_size=args.size, seed=5, n_validation=2)
    train = MVTec3D(root, args.category, "train")
    test = MVTec3D(root, args.category, "test")
    rows = []
    for name, options in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        options = {} if options is None else {"row_fraction": 1.0, "train_precision": "fp32", "patience": None,
                                                **options}
        if name == "default":
            options = {}
        det = CFM(backbones="offline", epochs=args.epochs, progress=False, calibration=0, **options)
        started = time.perf_counter()
        det.fit(train)
        fit_seconds = time.perf_counter() - started
        report = xmodal.evaluate(det, test, progress_bar=False)
        info = det.info
        per_image_rows = info["training_rows"] / args.train
        share = det.config["row_fraction"]
        epochs_run = info["epochs_run"]
        steps = epochs_run * ((args.train + det.config["batch_size"] - 1) // det.config["batch_size"])
        category_training = (args.category_images * per_image_rows * share * epochs_run
                             / info["training_rows_per_second"])
        category_total = category_training + info["extraction_seconds"] / args.train * args.category_images
        rows.append([name, fmt_seconds(info["training_seconds"]), f"{info['training_rows_per_second']:,}",
                     f"{epochs_run} / {steps}", f"{report['I-AUROC']:.3f}", f"{report['AUPRO@30%']:.3f}",
                     fmt_seconds(fit_seconds), f"{category_total / 60:.1f} min"])
        print(" | ".join(rows[-1]), flush=True)
    header = ["setting", "training", "rows/s", "epochs / steps", "I-AUROC", "AUPRO@30%", "fit total",
              f"{args.category_images}-image category (extrapolated)"]
    print()
    print(machine_line())
    print(f"{args.train} training images of '{args.category}' at {args.size}² ({per_image_rows:,.0f} foreground rows "
          f"per image on the 224 grid), {args.epochs} epochs max, batch 4 images; test: 7 defects x {args.test} + "
          f"{args.good} good")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
