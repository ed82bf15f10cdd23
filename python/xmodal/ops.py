"""Functional API over the native kernels.

Every function takes numpy arrays or torch tensors (CPU, or CUDA when xmodal was built with
CUDA) and returns the same kind on the same device. Arguments are validated here; errors name
the argument, what was expected and what was received.
"""

from ._ops.coreset import coreset, greedy_coreset
from ._ops.dbscan import dbscan
from ._ops.knn import KnnResult, knn
from ._ops.mlp import CrossmodalDiscrepancy, crossmodal_discrepancy, mlp
from ._ops.ransac import PlaneResult, ransac_plane
from ._ops.pointcloud import Groups, farthest_point_sample, group_points, points_to_grid, three_nn_interpolate
from ._ops.auroc import auroc
from ._ops.ccl import connected_components
from ._ops.pro import aupro, pro_curve
from ._ops.mahalanobis import GaussianStats, cholesky_factors, mahalanobis
from ._ops.mlp import LinearParams, fold_linear_batchnorm, fold_linears

__all__ = [
    "CrossmodalDiscrepancy",
    "GaussianStats",
    "Groups",
    "KnnResult",
    "LinearParams",
    "PlaneResult",
    "aupro",
    "auroc",
    "cholesky_factors",
    "connected_components",
    "coreset",
    "crossmodal_discrepancy",
    "dbscan",
    "farthest_point_sample",
    "fold_linear_batchnorm",
    "fold_linears",
    "greedy_coreset",
    "group_points",
    "knn",
    "mahalanobis",
    "mlp",
    "points_to_grid",
    "pro_curve",
    "ransac_plane",
    "three_nn_interpolate",
]
