"""Functional API over the native kernels: the layer every other part of xmodal computes through.

Every function takes numpy arrays or torch tensors (CPU, or CUDA when xmodal was built with
CUDA) and returns the same kind on the same device. Arguments are validated here; errors name
the argument, what was expected and what was received. One module per op family (knn, coreset,
pointcloud, mlp, auroc, pro, ccl, ransac, dbscan); the names below are the public API, and the
layers above import only these.
"""

from .auroc import auroc, auroc_nonzero
from .ccl import connected_components
from .coreset import coreset, greedy_coreset, jl_dimension, projection_matrix
from .dbscan import dbscan
from .knn import KnnResult, knn
from .mlp import CrossmodalDiscrepancy, crossmodal_discrepancy, mlp
from .pointcloud import Groups, farthest_point_sample, group_points, points_to_grid, three_nn_interpolate
from .pro import aupro, aupro_bootstrap, pro_curve
from .ransac import PlaneResult, ransac_plane

__all__ = [
    "CrossmodalDiscrepancy",
    "Groups",
    "KnnResult",
    "PlaneResult",
    "aupro",
    "aupro_bootstrap",
    "auroc",
    "auroc_nonzero",
    "connected_components",
    "coreset",
    "crossmodal_discrepancy",
    "dbscan",
    "farthest_point_sample",
    "greedy_coreset",
    "group_points",
    "jl_dimension",
    "knn",
    "mlp",
    "points_to_grid",
    "pro_curve",
    "projection_matrix",
    "ransac_plane",
    "three_nn_interpolate",
]
