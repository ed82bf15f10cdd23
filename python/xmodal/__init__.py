"""xmodal: fast multimodal (RGB + 3D point cloud) industrial anomaly detection.

- ``xmodal.ops``: native C++/CUDA kernels (exact kNN, greedy coreset, point-cloud sampling and
  grouping, RANSAC plane and DBSCAN background removal, fused MLP and CFM scoring, AUROC,
  PRO/AUPRO, connected components); ``knn``, ``coreset`` and ``greedy_coreset`` also here.
- ``xmodal.MemoryBank``: coreset memory banks with exact k-NN queries, streamed builds, save/load.
- ``xmodal.methods``: CFM, PatchCore (RGB, 3D, or both with M3DM-style banks and fusion), G²SF,
  BridgeNet, BTF, PaDiM, FastFlow, CFlow, CS-Flow and DifferNet, behind one Detector interface,
  calibrated to give verdicts; ``xmodal.load`` reads a saved (or exported) detector.
- ``xmodal.metrics`` / ``xmodal.evaluate``: the evaluation protocol (I-AUROC, P-AUROC, AUPRO at
  30/10/5/1 % FPR; exact, M3DM, CFM and BridgeNet variants) and paper-style reports;
  ``xmodal.benchmark``: every method on every category, accuracy and efficiency tables.
- ``xmodal.data``: MVTec 3D-AD / Eyecandies readers, preprocessing, a synthetic generator.

numpy or torch arrays in, the same kind out. torch is needed only by the methods (and
backbones): ``import xmodal``, the kernels, the memory bank and the metrics work without it.
"""

# First, before anything loads the OpenMP runtime (it reads its settings once): idle threads
# wait passively unless the user chose otherwise (xmodal._threads says why).
from . import _threads

_threads.configure_environment()

from . import data, metrics  # noqa: E402
from ._backend import build_info, cuda_available, get_num_threads, set_num_threads  # noqa: E402
from ._threads import available_cpus, thread_info  # noqa: E402
from .memory_bank import MemoryBank  # noqa: E402
from .ops import coreset, greedy_coreset, knn  # noqa: E402

__version__ = build_info()["version"]

# The methods need torch; they load on first use so that `import xmodal` (kernels, metrics,
# data) works without it.
_LAZY = {"methods": ("methods", None), "load": ("methods", "load"), "evaluate": ("evaluation", "evaluate")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "MemoryBank",
    "__version__",
    "available_cpus",
    "build_info",
    "coreset",
    "cuda_available",
    "data",
    "evaluate",
    "get_num_threads",
    "greedy_coreset",
    "knn",
    "load",
    "methods",
    "metrics",
    "set_num_threads",
    "thread_info",
]
