"""bench_metrics: AUPRO / PRO curve, pixel AUROC and connected components, xmodal vs peers.

Everything runs in one process on the same inputs: float32 anomaly maps (uniform noise, lifted
by a random amount inside the defects, which is the hard case for xmodal: scores of normal and
anomalous pixels interleave everywhere) and boolean masks with 1-3 elliptic defects in 60 % of
the images. Sizes: 250 maps of 224 x 224 (a CFM-style test set) and 100 maps of 800 x 800
(MVTec 3D-AD at full resolution).

Peers (each is skipped with the reason printed, and "n/a" in the table, when it cannot run):
  * the numpy implementations of both official algorithms (xmodal.reference: MVTec AD's exact
    curve, MVTec 3D-AD's sampled one), which is how the papers' code computes AUPRO;
  * anomalib 2.7 AUPRO on the CPU (anomalib.metrics.aupro._AUPRO, the metric behind AUPRO
    without its batch-field wrapper; it integrates one limit, 30 %, per computation);
  * ADEval 1.1 auroc_aupr_aupro (binned, approximate; 30 % only; it also computes AUROC and
    AUPR). ADEval calls np.trapz, which numpy 2.4 removed: the script aliases it to
    np.trapezoid, the same function under its new name;
  * sklearn roc_auc_score for the pixel AUROC; scipy.ndimage.label and cv2.connectedComponents
    (8-connectivity, one call per image) for the labelling.

Run it where the peers are installed, with this xmodal on the path, e.g.:
    /work/peers/bin/pip install --no-deps --target /tmp/xm . scipy-openblas32
    PYTHONPATH=/tmp/xm /work/peers/bin/python benchmarks/bench_metrics.py --write-readme
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import xmodal
from xmodal import reference

LIMITS = (0.3, 0.1, 0.05, 0.01)
SIZES = {"224": (250, 224, 224), "800": (100, 800, 800)}


def make_data(n: int, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, h, w), dtype=np.float32)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if rng.random() >= 0.6:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.01, 0.08) * h, rng.uniform(0.01, 0.08) * w
            y0, y1 = int(max(0, cy - ry)), int(min(h, cy + ry + 1))
            x0, x1 = int(max(0, cx - rx)), int(min(w, cx + rx + 1))
            yy, xx = np.mgrid[y0:y1, x0:x1]
            masks[i, y0:y1, x0:x1] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        maps[i][masks[i]] += np.float32(rng.uniform(0.1, 1.0))
    return maps, masks


def run(fn, repeat: int):
    """xmodal: peak memory from one call, time = median of `repeat` calls after a warm-up."""
    result, _, peak = _common.measure_once(fn)
    seconds = _common.median_time(fn, repeat=repeat, warmup=1)
    return result, seconds, peak


# --- peers ---------------------------------------------------------------------------------


def numpy_exact(maps, masks):
    fpr, pro = reference.pro_curve_exact(maps, masks)
    return {limit: reference.trapezoid(fpr, pro, x_max=limit) / limit for limit in LIMITS}


def anomalib_aupro():
    import torch
    from anomalib.metrics.aupro import _AUPRO

    def fn(maps, masks):
        metric = _AUPRO(fpr_limit=0.3)
        metric.update(torch.from_numpy(maps), torch.from_numpy(masks))
        return {0.3: float(metric.compute())}

    return fn


def adeval_aupro():
    import adeval

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # removed in numpy 2.4; the same function under its new name  # noqa: NPY201

    def fn(maps, masks):
        _, _, aupro = adeval.auroc_aupr_aupro(maps, masks.astype(np.uint8))
        return {0.3: float(aupro)}

    return fn


def sklearn_auroc():
    from sklearn.metrics import roc_auc_score

    return lambda maps, masks: roc_auc_score(masks.ravel(), maps.ravel())


def scipy_label():
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=int)
    return lambda masks: [ndimage.label(m, structure=structure)[1] for m in masks]


def cv2_label():
    import cv2

    return lambda masks: [cv2.connectedComponents(m.view(np.uint8), connectivity=8)[0] - 1 for m in masks]


def peer(factory):
    """The peer's function, or the reason it cannot run."""
    try:
        return factory(), None
    except Exception as exc:  # an import or setup failure: report it, keep benchmarking
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


# --- table ---------------------------------------------------------------------------------


def add_row(rows, size, task, name, seconds, peak, pixels, base, value, note=""):
    ratio = "1.0" if base is None else ("n/a" if seconds != seconds else f"{seconds / base:.1f}x")
    per_pixel = "n/a" if peak != peak else f"{peak / pixels:.1f}"
    rows.append([size, task, name, _common.fmt_seconds(seconds), ratio, _common.fmt_bytes(peak), per_pixel,
                 value, note])


def bench_size(label, n, h, w, repeat, skip, rows, notes):
    maps, masks = make_data(n, h, w)
    pixels = maps.size
    print(f"\n== {n} x {h} x {w} ({pixels / 1e6:.1f} M pixels, {masks.mean() * 100:.2f} % anomalous)", flush=True)

    def fmt(v):
        return "" if v is None else f"{v:.6f}"

    def task(title, ours, peers):
        result, seconds, peak = run(ours, repeat)
        mine = result[0.3] if isinstance(result, dict) else (float(result) if np.isscalar(result) else None)
        add_row(rows, label, title, f"**xmodal** ({xmodal.get_num_threads()} threads)", seconds, peak, pixels, None,
                fmt(mine))
        print(f"{title:34s} xmodal {seconds:8.3f} s  {peak / pixels:5.1f} B/px", flush=True)
        threads = xmodal.get_num_threads()
        if threads > 1:  # the numpy / sklearn / scipy peers run on one core
            xmodal.set_num_threads(1)
            _, single, single_peak = run(ours, repeat)
            xmodal.set_num_threads(threads)
            add_row(rows, label, title, "xmodal, 1 thread", single, single_peak, pixels, seconds, "")
            print(f"{title:34s} xmodal 1 thread {single:8.3f} s", flush=True)
        for name, fn, reason in peers:
            if fn is None or name in skip:
                why = reason or "skipped (--skip)"
                add_row(rows, label, title, name, float("nan"), float("nan"), pixels, seconds, "", "n/a")
                notes.append(f"{label} / {title} / {name}: {why}")
                print(f"{title:34s} {name}: n/a ({why})", flush=True)
                continue
            try:
                value, t, p = _common.measure_once(fn)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}".splitlines()[0]
                add_row(rows, label, title, name, float("nan"), float("nan"), pixels, seconds, "", "n/a")
                notes.append(f"{label} / {title} / {name}: failed: {why}")
                print(f"{title:34s} {name}: failed ({why})", flush=True)
                traceback.print_exc()
                continue
            theirs = value[0.3] if isinstance(value, dict) else (float(value) if np.isscalar(value) else None)
            diff = "" if theirs is None or mine is None else f"Δ {abs(theirs - mine):.1e}"
            add_row(rows, label, title, name, t, p, pixels, seconds, fmt(theirs), diff)
            print(f"{title:34s} {name:26s} {t:8.3f} s  {p / pixels:5.1f} B/px  ({t / seconds:.1f}x) {diff}",
                  flush=True)

    anomalib_fn, anomalib_why = peer(anomalib_aupro)
    adeval_fn, adeval_why = peer(adeval_aupro)
    sklearn_fn, sklearn_why = peer(sklearn_auroc)
    scipy_fn, scipy_why = peer(scipy_label)
    cv2_fn, cv2_why = peer(cv2_label)

    task("AUPRO exact (4 limits)", lambda: xmodal.ops.aupro(maps, masks, LIMITS), [
        ("numpy official (MVTec AD)", lambda: numpy_exact(maps, masks), None),
        ("anomalib 2.7 AUPRO (30 % only)", anomalib_fn and (lambda: anomalib_fn(maps, masks)), anomalib_why),
        ("ADEval 1.1 (binned, 30 % only)", adeval_fn and (lambda: adeval_fn(maps, masks)), adeval_why),
    ])
    task("AUPRO sampled, 100 thr. (4 limits)", lambda: xmodal.ops.aupro(maps, masks, LIMITS, num_thresholds=100), [
        ("numpy official (MVTec 3D-AD)", lambda: reference.aupro(maps, masks, LIMITS, num_thresholds=100), None),
    ])
    task("PRO curve, exact (all points)", lambda: xmodal.ops.pro_curve(maps, masks), [
        ("numpy official (MVTec AD)", lambda: reference.pro_curve_exact(maps, masks), None),
    ])
    task("pixel AUROC", lambda: xmodal.ops.auroc(maps, masks), [
        ("sklearn roc_auc_score", sklearn_fn and (lambda: sklearn_fn(maps, masks)), sklearn_why),
    ])
    task("8-connected labelling", lambda: xmodal.ops.connected_components(masks), [
        ("scipy.ndimage.label (loop)", scipy_fn and (lambda: scipy_fn(masks)), scipy_why),
        ("cv2.connectedComponents (loop)", cv2_fn and (lambda: cv2_fn(masks)), cv2_why),
    ])
    maps = masks = None  # freed before the next size (the lambdas above have run)
    gc.collect()


def write_readme(text: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
    with open(path) as f:
        content = f.read()
    start = content.find("## bench_metrics")
    if start >= 0:
        end = content.find("\n## ", start + 1)
        content = content[:start] + text + (content[end:] if end >= 0 else "\n")
    else:
        content = content.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeat", type=int, default=9, help="timed xmodal runs (median)")
    parser.add_argument("--skip", nargs="*", default=[], help="peer names to skip")
    parser.add_argument("--write-readme", action="store_true", help="replace the table in benchmarks/README.md")
    args = parser.parse_args()
    rows, notes = [], []
    for label in args.sizes:
        n, h, w = SIZES[label]
        bench_size(f"{n}x{h}²", n, h, w, args.repeat, set(args.skip), rows, notes)
    header = ["set", "task", "implementation", "time", "time / xmodal", "peak extra mem", "bytes/pixel",
              "value (@30 %)", "note"]
    text = "\n".join([
        "## bench_metrics",
        "",
        "`python benchmarks/bench_metrics.py` (peers from the `/work/peers` environment). Uniform-noise maps "
        "lifted inside the defects (normal and anomalous scores interleave: the hard case), boolean masks. "
        "xmodal time: median of the runs after a warm-up, with all threads (the ratios) and with one "
        "thread (the numpy, sklearn and scipy peers use one core; anomalib's torch uses all); peers: one "
        "run. Peak extra memory: resident-set "
        "high-water mark above the level before the call, outputs included (the labelling returns 4 bytes "
        "of int32 labels per pixel; the scipy and cv2 loops keep only the counts) (glibc's mmap threshold "
        "is pinned so freed buffers leave the resident set). Δ: absolute difference from xmodal's value.",
        "",
        _common.machine_line() + ". The machine is shared with other jobs: times are noisy, ratios "
        "come from the same process and inputs.",
        "",
        _common.markdown_table(header, rows),
    ] + ([""] + [f"- {note}" for note in notes] if notes else []))
    print("\n" + text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
