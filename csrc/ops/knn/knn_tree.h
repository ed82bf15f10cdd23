// Exact kNN for D <= 3 through a KD-tree (common/point_tree.h, common/point_knn.h): the
// contract of knn_cpu (ops/knn/knn.h) for a float32 bank, used by knn_cpu for low-dimensional
// point sets (point grouping), where it is one to two orders of magnitude faster than
// screening every bank row.
#pragma once

#include <cstdint>

namespace xmodal {

constexpr int64_t kKnnTreeMaxDim = 3;

void knn_tree_cpu(const float* queries, int64_t num_queries, const float* bank, int64_t bank_size, int64_t dim,
                  int64_t k, float* dist, int64_t* idx);

}  // namespace xmodal
