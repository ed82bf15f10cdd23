"""Functional API over the native kernels.

Every function takes numpy arrays or torch tensors (CPU, or CUDA when xmodal was built with
CUDA) and returns the same kind on the same device. Arguments are validated here; errors name
the argument, what was expected and what was received.
"""

from ._ops.coreset import coreset, greedy_coreset
from ._ops.knn import KnnResult, knn
from ._ops.auroc import auroc
from ._ops.ccl import connected_components
from ._ops.pro import aupro, pro_curve

__all__ = [
    "KnnResult",
    "coreset",
    "greedy_coreset",
    "knn",
    "aupro",
    "auroc",
    "connected_components",
    "pro_curve",
]
