"""Functional API over the native kernels: the layer every other part of xmodal computes through.

Every function takes numpy arrays or torch tensors (CPU, or CUDA when xmodal was built with
CUDA) and returns the same kind on the same device. Arguments are validated here; errors name
the argument, what was expected and what was received. One module per op family (knn, coreset,
pointcloud, fpfh, mlp, mahalanobis, anisotropic (G2SF), auroc, pro, ccl, ransac, dbscan); the names
below are the public API, and the layers above import only these.
"""

from .anisotropic import anisotropic_min
from .auroc import auroc, auroc_nonzero
from .ccl import connected_components
from .coreset import coreset, greedy_coreset, jl_dimension, projection_matrix
from .dbscan import dbscan
from .fpfh import OrganizedFeatures, estimate_normals, fpfh, organized_fpfh
from .knn import KnnResult, knn
from .mahalanobis import GaussianStats, cholesky_factors, mahalanobis
from .mlp import CrossmodalDiscrepancy, LinearParams, crossmodal_discrepancy, fold_linear_batchnorm, fold_linears, mlp
from .pointcloud import Groups, farthest_point_sample, group_points, points_to_grid, three_nn_interpolate
from .pro import aupro, aupro_bootstrap, pro_curve
from .ransac import PlaneResult, ransac_plane

__all__ = [
    "CrossmodalDiscrepancy",
    "GaussianStats",
    "Groups",
    "KnnResult",
    "LinearParams",
    "OrganizedFeatures",
    "PlaneResult",
    "anisotropic_min",
    "aupro",
    "aupro_bootstrap",
    "auroc",
    "auroc_nonzero",
    "cholesky_factors",
    "connected_components",
    "coreset",
    "crossmodal_discrepancy",
    "dbscan",
    "estimate_normals",
    "farthest_point_sample",
    "fold_linear_batchnorm",
    "fold_linears",
    "fpfh",
    "greedy_coreset",
    "group_points",
    "jl_dimension",
    "knn",
    "mahalanobis",
    "mlp",
    "organized_fpfh",
    "points_to_grid",
    "pro_curve",
    "projection_matrix",
    "ransac_plane",
    "three_nn_interpolate",
]
