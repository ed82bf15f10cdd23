"""xmodal: fast multimodal (RGB + 3D point cloud) industrial anomaly detection.

Native C++/CUDA kernels (exact kNN, greedy coreset, point-cloud sampling, AUPRO/AUROC, fused
MLP scoring) under the methods of the field (PatchCore, M3DM, CFM, G2SF, BridgeNet) and its
evaluation protocol. numpy or torch arrays in, the same kind out.
"""

from ._backend import build_info, cuda_available, get_num_threads, set_num_threads
from . import data, methods, metrics
from .evaluation import evaluate
from .memory_bank import MemoryBank
from .methods import load
from .ops import coreset, greedy_coreset, knn

__version__ = build_info()["version"]

__all__ = [
    "MemoryBank",
    "__version__",
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
]
