"""The study's Figure 1 for this machine: accuracy against inference time, one point per method
(matplotlib, the optional extra ``xmodal[plot]``)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def accuracy_vs_time(points: list[dict], path: str | Path, title: str) -> Path | None:
    """Writes the plot to ``path`` (PNG); None when matplotlib is not installed.

    Args:
        points: one dict per method with ``method``, ``ms_median`` and the mean ``I-AUROC`` and
            ``AUPRO@30%`` (methods without a finished job are left out).
        path: the PNG to write (atomically).
        title: the figure's title (the machine).
    """
    if not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: no display needed
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    points = [p for p in points if p.get("ms_median") is not None]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for ax, metric in zip(axes, ("I-AUROC", "AUPRO@30%"), strict=True):
        for p in points:
            value = p.get(metric)
            if value is None or math.isnan(value):
                continue
            ax.scatter(p["ms_median"], value, s=60)
            ax.annotate(p["method"], (p["ms_median"], value), textcoords="offset points", xytext=(6, 4))
        ax.set_xscale("log")
        ax.margins(x=0.3, y=0.15)  # room for the labels of the outermost points
        ax.set_xlabel("inference time per image, median (ms, log scale)")
        ax.set_ylabel(f"{metric} (mean over categories)")
        ax.grid(True, which="both", alpha=0.3)
    figure.suptitle(textwrap.fill(title, 140), fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return path
