// DBSCAN density clustering of 3D points (Ester et al. 1996), exact, on a voxel grid.
//
//   points      (N, 3) float32, C-contiguous, finite
//   eps         > 0: q is a neighbour of p when |p - q|^2 <= eps^2 (evaluated in float64 from
//               the float32 coordinates; p is its own neighbour)
//   min_points  >= 1: p is a core point when it has at least min_points neighbours
//   labels      (N,) int64 out: cluster id >= 0, or -1 for noise
//
// Clusters are the connected components of core points under the neighbour relation, numbered
// 0, 1, ... in the order of their lowest-index core point. A border point (not core, but a
// neighbour of a core point) takes the lowest cluster id among the clusters of its core
// neighbours. These are exactly the labels of sklearn.cluster.DBSCAN and of open3d's
// cluster_dbscan, which both expand clusters one after the other from the lowest unvisited
// index (open3d counts a neighbour only when the distance is < eps; ties at exactly eps are
// the only difference). The result does not depend on the number of threads.
//
// Method: cells of side eps/sqrt(3) (every pair in a cell is within eps), so a cell with at
// least min_points points is all core; other points count neighbours in the 5x5x5 surrounding
// cells and stop at min_points. Two cells are joined when one pair of their core points is
// within eps; a union-find over cells gives the clusters. Throws std::invalid_argument when
// eps is so small that the grid needs more than 64 bits of cell coordinates.
#pragma once

#include <cstdint>

namespace xmodal {

void dbscan_cpu(const float* points, int64_t num_points, double eps, int64_t min_points, int64_t* labels);

}  // namespace xmodal
