"""Per-image latency, throughput and accuracy of each method with each engine and precision.

One model per method is fitted (torch, fp32, offline backbones unless ``--paper-random``) on a
synthetic MVTec 3D-AD-style category of ``--size`` x ``--size`` samples; then, for every engine
(torch, onnxruntime, openvino when installed) and precision (fp32, bf16 where the engine has
it), the same model scores the same test samples (given as arrays, preprocessing included):

- setup: ``xmodal.load`` and the first ``predict`` (ONNX export of the neural parts, session or
  compile);
- latency: median and p95 of ``predict`` per image, the configurations interleaved sample by
  sample (a shared machine's load then falls on all of them alike), then the best of
  ``--rounds`` passes of ``predict_batch`` (``--batch``) in images/s, and the peak extra
  resident memory of scoring two samples;
- accuracy: I-AUROC and AUPRO@30% of the scored test set, and the change against torch fp32:
  the largest relative score difference and the Pearson correlation of the image scores.

    python benchmarks/bench_engines.py [--size 800] [--methods patchcore cfm | all | NAME ...] [--paper-random]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, markdown_table, measure_once, steady_state_malloc

# Offline backbones, each method's own inference architecture (input sizes, flow depth, heads,
# test-time transforms) with a short fit: the latency and the engine-vs-torch score change do
# not depend on how long it trained; the accuracy columns of the short fits do.
METHOD_OPTIONS = {
    "patchcore": {"modality": "rgb+xyz"},
    "cfm": {"epochs": 5},
    "btf": {},
    "padim": {},
    "g2sf": {"n_synthetic": 2, "epochs": 1, "seed": 2},
    "bridgenet": {"epochs": 1, "repeats": 2},
    "fastflow": {"epochs": 1},
    "cflow": {"epochs": 1},
    "csflow": {"epochs": 1},
    # 64 rotated copies per test image (the paper's) are 64 backbone + flow passes per predict:
    # minutes per method on a shared machine; 8 keep the networks and the per-pass engine ratios.
    "differnet": {"epochs": 1, "test_transforms": 8},
}
DEFAULT_METHODS = ["patchcore", "cfm"]  # the methods of the README's quiet table
PAPER_OPTIONS = {  # random-weight paper backbones: speed only, the accuracy is meaningless
    "patchcore": {"modality": "rgb", "backbones": "paper", "random_weights": True},
    "cfm": {"epochs": 1, "backbones": "paper", "random_weights": True, "calibration": 0},
}


def configurations() -> list[tuple[str, str]]:
    from xmodal import engines

    found = engines.available()
    configs = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")]
    if found["openvino"]:
        configs += [("openvino", "fp32"), ("openvino", "bf16")]
    return configs


def twins(model_dir: str, configs: list[tuple[str, str]], first) -> tuple[dict, dict]:
    """One loaded detector per (engine, precision), warmed up on ``first``: {config: detector},
    {config: setup seconds (load, ONNX export, session / compile, first predict)}."""
    import xmodal

    detectors, setup = {}, {}
    for engine, precision in configs:
        started = time.perf_counter()
        det = xmodal.load(model_dir, engine=engine, precision=precision)
        det.predict(first)
        setup[engine, precision] = time.perf_counter() - started
        detectors[engine, precision] = det
    return detectors, setup


def run_all(detectors: dict, test: list, batch: int, rounds: int) -> dict:
    """Latency per image and batch throughput of every configuration, interleaved (sample by
    sample, configuration by configuration) so that the load of a shared machine falls on all
    of them alike; the results of the first round feed the accuracy figures."""
    from xmodal.metrics import evaluate_maps

    times = {c: [] for c in detectors}
    results = {c: [] for c in detectors}
    with steady_state_malloc():
        for r in range(rounds):
            for sample in test:
                for config, det in detectors.items():
                    t0 = time.perf_counter()
                    result = det.predict(sample)
                    times[config].append(time.perf_counter() - t0)
                    if r == 0:
                        results[config].append(result)
        batch_times = {c: [] for c in detectors}
        for _ in range(rounds):
            for config, det in detectors.items():
                t0 = time.perf_counter()
                det.predict_batch(test, batch_size=batch)
                batch_times[config].append(time.perf_counter() - t0)
    out = {}
    labels = np.array([s.label for s in test])
    for config, det in detectors.items():
        masks = [det.target_mask(s) for s in test]
        scores = np.array([r.score for r in results[config]])
        report = evaluate_maps(scores, labels, [r.map for r in results[config]], masks)
        _, _, peak = measure_once(lambda det=det: [det.predict(s) for s in test[:2]])
        out[config] = {"median": float(np.median(times[config])), "p95": float(np.percentile(times[config], 95)),
                       "throughput": len(test) / min(batch_times[config]), "peak": peak, "scores": scores,
                       "I-AUROC": report["I-AUROC"], "AUPRO": report["AUPRO@30%"]}
    return out


def backbone_rows(configs: list[tuple[str, str]], rounds: int) -> list[list[str]]:
    """Forward time of the paper backbones alone (random weights, batch 1, 224 x 224) per
    engine and precision, interleaved; and the relative error of their features vs torch fp32."""
    import torch

    from xmodal.backbones import create
    from xmodal.engines import graphs, runtime

    rows = []
    for name, kwargs in (("dino_vitb8", {}), ("wide_resnet50_2", {}), ("efficientnet_lite0", {})):
        torch.manual_seed(0)
        module = create(name, weights=None, **kwargs).eval()
        kind = graphs.kind_of(module)
        x = graphs.example_inputs(module, kind)
        graph = graphs.export(module, name, x)
        runners = {}
        for engine, precision in configs:
            if engine == "torch":
                runners[engine, precision] = module if precision == "fp32" else runtime.Bf16Module(module, "cpu")
            elif engine == "onnxruntime":
                runners[engine, precision] = runtime.Runner(graph, runtime.onnxruntime_session(graph.data, graph),
                                                            module)
            else:
                runners[engine, precision] = runtime.Runner(
                    graph, runtime.openvino_session(graph.data, graph, precision), module)
        times = {c: [] for c in runners}
        outputs = {}
        with torch.no_grad(), steady_state_malloc():
            for c, run in runners.items():
                outputs[c] = run(*x)  # warm-up
            for _ in range(rounds):
                for c, run in runners.items():
                    t0 = time.perf_counter()
                    run(*x)
                    times[c].append(time.perf_counter() - t0)

        def flat(out):
            return torch.cat([v.flatten() for v in out.values()]) if isinstance(out, dict) else out.flatten()

        ref = flat(outputs["torch", "fp32"])
        base = float(np.median(times["torch", "fp32"]))
        for c in runners:
            err = float((flat(outputs[c]) - ref).norm() / ref.norm())
            median = float(np.median(times[c]))
            rows.append([name, *c, f"{median * 1e3:.0f} ms", f"{base / median:.2f}x", f"{err:.1e}"])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def selected_methods(requested: list[str], options: dict, parser: argparse.ArgumentParser) -> list[str]:
    """``--methods`` resolved (``all``: every registered method); every one must have options here, so
    that a newly registered method is not silently left out of ``all``."""
    from xmodal.methods import method_names

    methods = method_names() if "all" in requested else requested
    missing = [m for m in methods if m not in options]
    if missing:
        which = "PAPER_OPTIONS (--paper-random)" if options is PAPER_OPTIONS else "METHOD_OPTIONS"
        parser.error(f"--methods: no {which} for {', '.join(missing)}")
    return methods


def method_rows(method: str, options: dict, label: str, train, test: list, root: str,
                configs: list[tuple[str, str]], args) -> list[list[str]]:
    """Fit ``method`` (torch, fp32), save it, and score ``test`` with every configuration: one table
    row per configuration."""
    import xmodal

    started = time.perf_counter()
    det = xmodal.methods.create(method, progress=False, **options)
    det.fit(train)
    print(f"{method}: fitted in {time.perf_counter() - started:.0f} s with {options}", flush=True)
    model_dir = det.save(os.path.join(root, f"model-{method}"))
    detectors, setup = twins(str(model_dir), configs, test[0])
    measured = run_all(detectors, test, args.batch, args.rounds)
    reference = measured["torch", "fp32"]
    rows = []
    for (engine, precision), r in measured.items():
        rel = np.max(np.abs(r["scores"] - reference["scores"]) / np.abs(reference["scores"]))
        corr = np.corrcoef(r["scores"], reference["scores"])[0, 1]
        rows.append([method + label, engine, precision, f"{setup[engine, precision]:.1f} s",
                     f"{r['median'] * 1e3:.0f} ms", f"{r['p95'] * 1e3:.0f} ms", f"{r['throughput']:.1f}",
                     f"{reference['median'] / r['median']:.2f}x", f"{r['peak'] / 2**20:.0f} MiB",
                     f"{r['I-AUROC']:.3f}", f"{r['AUPRO']:.3f}", f"{rel:.1e}", f"{corr:.6f}"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800, help="side of the synthetic samples (MVTec 3D-AD: 800)")
    parser.add_argument("--train", type=int, default=6, help="training samples")
    parser.add_argument("--test", type=int, default=2, help="test samples per defect type (plus as many good)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=[*sorted(METHOD_OPTIONS), "all"],
                        help="registry names, or all (every registered method)")
    parser.add_argument("--batch", type=int, default=4, help="predict_batch size for the throughput")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the test set per configuration")
    parser.add_argument("--backbones-only", action="store_true",
                        help="time the backbones alone (DINO ViT-B/8, WideResNet-50, EfficientNet-Lite0)")
    parser.add_argument("--paper-random", action="store_true",
                        help="the paper backbones with random weights (speed only)")
    args = parser.parse_args()

    from xmodal.data import MVTec3D, synthetic
    from xmodal.engines import bf16_native

    print(machine_line())
    print(f"bf16 native on this CPU: {bf16_native()}")
    if args.backbones_only:
        rows = backbone_rows(configurations(), max(3, args.rounds))
        print(markdown_table(["backbone", "engine", "precision", "median (batch 1)", "speed vs torch fp32",
                              "rel. feature error"], rows))
        return
    options = PAPER_OPTIONS if args.paper_random else METHOD_OPTIONS
    methods = selected_methods(args.methods, options, parser)
    label = " (paper, random)" if args.paper_random else ""
    with tempfile.TemporaryDirectory() as root:
        synthetic.make_dataset(root, categories=["puck"], n_train=args.train, n_test=args.test,
                               n_test_good=max(2, args.test * 3), image_size=args.size, seed=0, n_validation=2)
        train = MVTec3D(root, "puck", "train")
        test = list(MVTec3D(root, "puck", "test"))
        rows, failures = [], []
        configs = configurations()
        for method in methods:
            try:
                rows += method_rows(method, options[method], label, train, test, root, configs, args)
            except Exception as exc:  # one method's failure is a finding, not the end of the run
                traceback.print_exc()
                failures.append(f"{method}: {type(exc).__name__}: {exc}")
        print()
        print(markdown_table(["method", "engine", "precision", "setup", "median", "p95", "img/s (batch)",
                              "speed vs torch fp32", "peak memory", "I-AUROC", "AUPRO@30%",
                              "max rel. score change", "score corr."], rows))
        print(f"\n{len(test)} test samples of {args.size}x{args.size} given as arrays; {machine_line()}")
        for failure in failures:
            print(f"FAILED {failure}")


if __name__ == "__main__":
    main()
