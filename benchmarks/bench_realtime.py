"""End-to-end images/s of every method on this machine: sequential and pipelined, quiet and loaded.

What a line camera sees: MVTec 3D-AD-sized samples (``--size`` 800: 800x800 RGB PNG + organized
float32 TIFF cloud) are read from disk and scored one at a time by a model fitted beforehand
(offline backbones, loaded with ``xmodal.load``; the fit is not timed). Per method:

- sequential: decode (PNG + TIFF) -> ``predict`` (its preprocessing included) -> next sample;
- pipelined: a second thread decodes sample i+1 and reduces it to what the detector reads
  (bicubic RGB resize with the method's square pad, nearest resize of the cloud, both to 224)
  while sample i is scored. The bench checks that the reduced sample gives the same score.

Each configuration runs in a fresh process (the OpenMP runtime reads its wait policy once, when
it loads), under two wait policies: xmodal's (``OMP_WAIT_POLICY=PASSIVE``, set on import) and
libgomp's default spinning (``GOMP_SPINCOUNT=300000``, what xmodal did before), each alone and
next to ``--busy`` CPU-bound processes (pure-Python loops, one per core by default; each stops
by itself after ``--busy-seconds``). Peak memory is the worker's resident high-water mark
(model load + scoring).

The GPU line is a model, not a measurement: it divides the method's measured backbone FLOPs per
image by an assumed sustained rate (``--gpu-tflops``, default 10 TFLOP/s fp16, a Jetson AGX
Orin-class figure at ~25 % of its dense tensor-core peak) and adds the measured CPU time
outside the backbones divided by ``--gpu-host-speedup`` (default 1: host work stays on the CPU).

``--engines torch openvino`` repeats every configuration with the neural parts on each engine
(``xmodal.load(model, engine=...)``); ``--spin-counts 10000 ...`` adds libgomp's spinning bounded
to that many iterations (``GOMP_SPINCOUNT``) to the wait policies compared.

    python benchmarks/bench_realtime.py [--size 800] [--images 16] [--methods patchcore cfm]
        [--engines torch openvino] [--spin-counts 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
POLICIES = {"xmodal (passive)": {}, "libgomp default (spin)": {"GOMP_SPINCOUNT": "300000"}}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Offline-backbone configurations of the registered methods (fit quickly; speed does not
# depend on how well they were trained).
METHOD_OPTIONS = {
    "patchcore": {"modality": "rgb+xyz"},
    "cfm": {"epochs": 1, "row_fraction": 0.05},
    "btf": {},
    "padim": {},
    "bridgenet": {"epochs": 1},
    "g2sf": {"n_synthetic": 2, "epochs": 1, "seed": 2},
    "fastflow": {"epochs": 1},
    "cflow": {"epochs": 1},
    "csflow": {"epochs": 1},
    "differnet": {"epochs": 1},
}


# --- worker (a fresh process per configuration) ---------------------------------------------
def _prepare(det, sample):
    """The sample reduced to what the detector reads: 224x224 RGB and cloud."""
    from xmodal.data import Sample
    from xmodal.data.preprocess import resize_organized, resize_rgb

    square = bool(det.config.get("square_pad", False))
    return Sample(rgb=resize_rgb(sample.rgb, 224, square=square), xyz=resize_organized(sample.xyz, 224))


def _backbone_cost(det, sample) -> tuple[float, float, float]:
    """(torch FLOPs of one predict, median ms of the feature extraction, median ms of predict)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        det.predict(sample)

    def median_ms(fn):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    with torch.no_grad():
        features_ms = median_ms(lambda: det._features([sample]))
    return float(counter.get_total_flops()), features_ms, median_ms(lambda: det.predict(sample))


def worker(args) -> None:
    import xmodal
    from xmodal.data import MVTec3D

    det = xmodal.load(args.model, engine=args.engine)
    reader = MVTec3D(args.data, "puck", "test")
    n = min(args.images, len(reader))
    first = reader[0]
    prepared_ok = abs(det.predict(_prepare(det, first)).score - det.predict(first).score) <= 1e-6 * max(
        1.0, abs(det.predict(first).score))
    for i in range(2):  # warm-up
        det.predict(reader[i])

    started = time.perf_counter()
    predict_seconds = 0.0
    for i in range(n):
        sample = reader[i]
        t0 = time.perf_counter()
        det.predict(sample)
        predict_seconds += time.perf_counter() - t0
    sequential = n / (time.perf_counter() - started)

    def load(i):
        return _prepare(det, reader[i])

    latencies = []
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        pending = pool.submit(load, 0)
        for i in range(n):
            sample = pending.result()
            if i + 1 < n:
                pending = pool.submit(load, i + 1)
            t0 = time.perf_counter()
            det.predict(sample)
            latencies.append(time.perf_counter() - t0)
        pipelined = n / (time.perf_counter() - started)
    flops, features_ms, prepared_ms = _backbone_cost(det, _prepare(det, first)) if args.flops else (None, 0, 0)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"sequential": sequential, "pipelined": pipelined, "predict_ms": 1e3 * predict_seconds / n,
                      "latency_median_ms": 1e3 * float(np.median(latencies)),
                      "latency_p95_ms": 1e3 * float(np.percentile(latencies, 95)), "peak": peak,
                      "prepared_same_score": bool(prepared_ok), "flops": flops,
                      "features_ms": features_ms, "prepared_predict_ms": prepared_ms, "threads": xmodal.thread_info()}))


# --- parent ------------------------------------------------------------------------------------
def _burn(seconds: float) -> subprocess.Popen:
    code = f"import time\nend = time.monotonic() + {seconds}\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _run_worker(model: str, data: str, images: int, env_extra: dict, flops: bool, engine: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(env_extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--data", data,
           "--images", str(images), "--engine", engine] + (["--flops"] if flops else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_engine(args, method: str, engine: str, model, root: str, busy: int, rows: list, gpu_rows: list,
                    notes: list) -> None:
    """The rows of one method on one engine: each wait policy quiet and next to ``busy`` processes."""
    from _common import fmt_bytes

    quiet = {}
    policies = dict(POLICIES)
    if args.no_default_spin:
        del policies["libgomp default (spin)"]
    policies.update({f"bounded spin ({n})": {"GOMP_SPINCOUNT": str(n)} for n in args.spin_counts})
    for policy, env in policies.items():
        for load in (0, busy):
            burners = [_burn(args.busy_seconds) for _ in range(load)]
            try:
                time.sleep(0.5 if load else 0)
                first_quiet = load == 0 and engine == "torch" and not any(row[0] == method for row in gpu_rows)
                r = _run_worker(str(model), root, args.images, env, flops=first_quiet, engine=engine)
            finally:
                for p in burners:
                    p.kill()
                    p.wait()
            if load == 0:
                quiet[policy] = r
            ratio = "" if load == 0 else f"{r['pipelined'] / quiet[policy]['pipelined']:.2f}x"
            rows.append([method, engine, policy, "quiet" if load == 0 else f"{load} busy", f"{r['sequential']:.1f}",
                         f"{r['pipelined']:.1f}", f"{r['latency_median_ms']:.1f} / {r['latency_p95_ms']:.1f}",
                         ratio, fmt_bytes(r["peak"])])
            print(" | ".join(rows[-1]), flush=True)
            if not r["prepared_same_score"]:
                notes.append(f"{method}: the reduced (pre-resized) sample did NOT give the same score")
            if r["flops"] is not None:
                host_ms = max(r["prepared_predict_ms"] - r["features_ms"], 0.0)
                cpu_rate = r["flops"] / (r["features_ms"] * 1e-3) / 1e9
                gpu_ms = r["flops"] / (args.gpu_tflops * 1e12) * 1e3 + host_ms / args.gpu_host_speedup
                gpu_rows.append([method, f"{r['flops'] / 1e9:.2f}", f"{r['features_ms']:.1f}", f"{cpu_rate:.0f}",
                                 f"{host_ms:.1f}", f"{gpu_ms:.1f}", f"{1e3 / gpu_ms:.0f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--images", type=int, default=16, help="test images scored per configuration")
    parser.add_argument("--train", type=int, default=6, help="training images of the fitted models")
    parser.add_argument("--methods", nargs="*", default=None, help="registry names (default: every method)")
    parser.add_argument("--busy", type=int, default=None, help="busy processes (default: one per usable CPU)")
    parser.add_argument("--busy-seconds", type=float, default=600.0)
    parser.add_argument("--spin-counts", type=int, nargs="*", default=[],
                        help="also measure libgomp's spinning bounded to these GOMP_SPINCOUNT values")
    parser.add_argument("--no-default-spin", action="store_true",
                        help="skip libgomp's default spinning (GOMP_SPINCOUNT=300000)")
    parser.add_argument("--gpu-tflops", type=float, default=10.0)
    parser.add_argument("--gpu-host-speedup", type=float, default=1.0)
    parser.add_argument("--engines", nargs="+", default=["torch"],
                        help="engines that run the neural parts (torch, onnxruntime, openvino)")
    parser.add_argument("--engine", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, HERE)
    import xmodal
    from _common import machine_line, markdown_table
    from xmodal.data import MVTec3D, synthetic
    from xmodal.methods import create, method_names

    busy = args.busy if args.busy is not None else xmodal.available_cpus()
    methods = args.methods or method_names()
    root = tempfile.mkdtemp(prefix="xmodal-realtime-")
    synthetic.make_dataset(root, categories=["puck"], n_train=args.train, n_test=max(1, args.images // 7 + 1),
                           n_test_good=args.images, image_size=args.size, seed=11, n_validation=2)
    rows, gpu_rows, notes = [], [], []
    for method in methods:
        try:
            det = create(method, backbones="offline", progress=False, calibration=0,
                         **METHOD_OPTIONS.get(method, {}))
            det.fit(MVTec3D(root, "puck", "train"))
        except (ValueError, TypeError, RuntimeError) as exc:  # a method this quick fit does not suit
            notes.append(f"{method}: not measured ({type(exc).__name__}: {exc})")
            continue
        model = det.save(os.path.join(root, f"model-{method}"))
        for engine in args.engines:
            _measure_engine(args, method, engine, model, root, busy, rows, gpu_rows, notes)
    print()
    print(machine_line())
    print(f"{args.size}x{args.size} synthetic samples ('puck'), {args.images} scored per configuration after 2 "
          f"warm-ups, offline backbones; busy = {busy} CPU-bound processes on the same cores")
    print(markdown_table(["method", "engine", "OpenMP wait", "load", "images/s sequential", "images/s pipelined",
                          "latency median / p95 (ms, pipelined)", "loaded / quiet", "peak memory"], rows))
    print()
    print(f"GPU estimate (a MODEL, not a measurement): backbone FLOPs at {args.gpu_tflops} TFLOP/s sustained + the "
          f"rest of the measured CPU time / {args.gpu_host_speedup}")
    print(markdown_table(["method", "GFLOP per image (torch ops)", "CPU features ms", "CPU GFLOP/s in features",
                          "CPU ms outside features", "modelled GPU ms per image", "modelled images/s"], gpu_rows))
    for note in notes:
        print("NOTE:", note)


if __name__ == "__main__":
    main()
