"""What bounds each speed target of issue 18: FLOPs per image at this machine's measured GEMM rates.

For every target configuration (offline backbones: PatchCore rgb+xyz, PaDiM, CFM; paper
backbones with random weights: PatchCore WideResNet-50, CFM DINO ViT-B/8 + Point-MAE) one model
is fitted on a small synthetic category and one 800 x 800 sample, given as arrays, is scored:

- FLOPs per image: torch's own count of one ``predict`` (``torch.utils.flop_counter``: the
  backbones and any torch head) plus the multiply-adds of xmodal's native kernels, which torch
  cannot see, counted from the model's shapes: the k-NN distance GEMM against each memory bank
  (2 Q N D per modality, N = the bank a ``--category-images`` category gives: 250 images x rows
  per image x ``coreset_ratio``, as MVTec 3D-AD's 200-300 training images would), PaDiM's
  Mahalanobis triangular solves (D^2 per position), CFM's two mapping networks on the sample's
  foreground pixels of the 224 x 224 grid (2 rows sum(in x out));
- the machine's rates: torch ``mm`` on 2048^3 in fp32 (sgemm) and bf16 (AVX512-BF16 where the
  CPU has it), median of 5, all usable threads;
- the bound: FLOPs / rate = the fastest a perfect implementation doing the same arithmetic could
  score one image on this CPU (convolutions and attention run below GEMM peak, so the real
  bound is lower): all in fp32, and with the networks in bf16 (the kernels keep fp32); then the
  measured ``predict`` median (torch fp32, preprocessing included) with this fit's tiny bank and
  with the extra k-NN of the category's bank added at the fp32 GEMM peak.

    python benchmarks/bench_bound.py [--size 800] [--configs patchcore padim cfm patchcore-wrn cfm-paper]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, markdown_table, median_time

# name: (method, options, target in images/s, how the issue states it)
CONFIGS = {
    "patchcore": ("patchcore", {"modality": "rgb+xyz"}, 50.0, ">= 50 img/s"),
    "padim": ("padim", {}, 50.0, ">= 50 img/s"),
    "cfm": ("cfm", {"epochs": 1, "row_fraction": 0.05}, 30.0, ">= 30 img/s"),
    "patchcore-wrn": ("patchcore", {"modality": "rgb", "backbones": "paper", "random_weights": True}, 15.0,
                      ">= 15 img/s"),
    "cfm-paper": ("cfm", {"epochs": 1, "backbones": "paper", "random_weights": True}, 1 / 1.5,
                  "<= 1.5 s per sample"),
}


def gemm_rate(dtype, n: int = 2048) -> float:
    """Sustained FLOP/s of torch.mm on n x n x n in ``dtype``."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = median_time(lambda: torch.mm(a, b), repeat=5, warmup=2)
    return 2.0 * n**3 / seconds


def native_flops(det, result, category_images: int) -> dict:
    """FLOPs of xmodal's native kernels in one predict (torch's counter does not see them):
    {"now": with this fit's model, "category": with PatchCore's banks at the size a
    ``category_images``-image category gives (training rows per image x ``coreset_ratio``; the
    tiny synthetic fit's banks say nothing about a deployment), "network": True when the kernel
    is a network an engine may run in bf16 (CFM's mapping MLPs), False for fp32 kernels (k-NN,
    Mahalanobis), "what": the shapes}."""
    arrays = det._model_arrays()
    if det.method in ("patchcore", "btf"):
        now = category = 0.0
        parts = []
        for key, bank in arrays.items():
            if key.startswith("bank."):
                modality = key.split(".", 1)[1]
                rows = int(det.info["backbone_spec"]["grids"][modality]) ** 2
                per_image = det.info["training_rows"][modality] / det.info["train_images"]
                bank_rows = max(bank.shape[0], round(category_images * per_image * (det.config["coreset_ratio"] or 1)))
                now += 2.0 * rows * bank.shape[0] * bank.shape[1]
                category += 2.0 * rows * bank_rows * bank.shape[1]
                parts.append(f"k-NN {modality} {rows} x {bank.shape[0]} (category: {bank_rows}) x {bank.shape[1]}")
        return {"now": now, "category": category, "network": False, "what": ", ".join(parts)}
    if det.method == "padim":
        factors = arrays["factors"]  # (positions, D (D + 1) / 2): packed Cholesky factors
        positions, packed = factors.shape
        dim = int((np.sqrt(8 * packed + 1) - 1) / 2)
        # one triangular solve per position: a multiply-add per factor entry
        flops = 2.0 * positions * packed
        return {"now": flops, "category": flops, "network": False,
                "what": f"Mahalanobis {positions} positions x D={dim}"}
    if det.method == "cfm":
        rows = int(np.count_nonzero(result.extras["foreground"]))  # CFM maps foreground rows only
        per_row = sum(2.0 * m.in_features * m.out_features for head in det._heads().values()
                      for m in head.modules() if hasattr(m, "in_features"))
        return {"now": rows * per_row, "category": rows * per_row, "network": True,
                "what": f"mapping MLPs on {rows} foreground rows of {int(det.map_size) ** 2}"}
    return {"now": 0.0, "category": 0.0, "network": False, "what": ""}


def measure(name: str, root: str, category_images: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    import xmodal
    from xmodal.data import MVTec3D

    method, options, target, stated = CONFIGS[name]
    det = xmodal.methods.create(method, progress=False, calibration=0, **options)
    det.fit(MVTec3D(root, "puck", "train"))
    sample = MVTec3D(root, "puck", "test")[0]
    result = det.predict(sample)  # also the warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        det.predict(sample)
    torch_flops = float(counter.get_total_flops())
    native = native_flops(det, result, category_images)
    seconds = median_time(lambda: det.predict(sample), repeat=5, warmup=1)
    return {"name": name, "target": target, "stated": stated, "torch": torch_flops, "native": native,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--train", type=int, default=3)
    parser.add_argument("--category-images", type=int, default=250,
                        help="training images of the category PatchCore's bank size is projected to")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()

    import torch

    import xmodal  # noqa: F401  (thread settings first)
    from xmodal.data import synthetic

    print(machine_line())
    rates = {"fp32": gemm_rate(torch.float32), "bf16": gemm_rate(torch.bfloat16)}
    print(f"torch.mm 2048^3: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        synthetic.make_dataset(root, categories=["puck"], n_train=args.train, n_test=1, n_test_good=1,
                               image_size=args.size, seed=0)
        for name in args.configs:
            r = measure(name, root, args.category_images)
            native, fp32, bf16 = r["native"], rates["fp32"], rates["bf16"]
            networks = r["torch"] + (native["category"] if native["network"] else 0.0)
            kernels = 0.0 if native["network"] else native["category"]
            bound32 = (networks + kernels) / fp32
            bound16 = networks / bf16 + kernels / fp32  # the kernels stay fp32 whatever the engine
            # the measured predict with the category's bank: the extra k-NN at the GEMM peak (optimistic)
            projected = r["seconds"] + (native["category"] - native["now"]) / fp32
            reachable = "yes" if 1.0 / bound16 >= r["target"] else "no: above the bound with bf16 networks"
            rows.append([name, r["stated"], f"{networks / 1e9:.2f}",
                         f"{native['now'] / 1e9 if not native['network'] else 0:.2f} -> {kernels / 1e9:.2f}",
                         f"{bound32 * 1e3:.1f} ms ({1 / bound32:.1f} img/s)",
                         f"{bound16 * 1e3:.1f} ms ({1 / bound16:.1f} img/s)",
                         f"{r['seconds'] * 1e3:.1f} ms ({1 / r['seconds']:.1f} img/s)",
                         f"{projected * 1e3:.1f} ms ({1 / projected:.1f} img/s)", reachable])
            print(" | ".join(rows[-1]), f"[native: {native['what']}]", flush=True)
    print(markdown_table(["config", "target", "GFLOP networks (torch + CFM heads)",
                          f"GFLOP fp32 kernels (this fit -> {args.category_images}-image category)",
                          "bound: all fp32", "bound: bf16 networks, fp32 kernels",
                          "measured predict (torch fp32, this fit)", "measured + category k-NN at peak",
                          "target reachable by FLOPs"], rows))

if __name__ == "__main__":
    main()
