#include <vector>

#include "common/check.h"
#include "common/point_knn.h"
#include "common/point_tree.h"
#include "ops/knn/knn_tree.h"

namespace xmodal {
namespace {

constexpr int kLeafSize = 16;

// (rows, dim) -> (rows, 3) with zero padding; the padded axes add exactly 0 to every distance.
std::vector<float> padded_to_3d(const float* data, int64_t rows, int64_t dim) {
  std::vector<float> out(static_cast<size_t>(rows * 3), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < dim; ++d) out[static_cast<size_t>(r * 3 + d)] = data[r * dim + d];
  return out;
}

}  // namespace

void knn_tree_cpu(const float* queries, int64_t num_queries, const float* bank, int64_t bank_size, int64_t dim,
                  int64_t k, float* dist, int64_t* idx) {
  XMODAL_CHECK(dim >= 1 && dim <= kKnnTreeMaxDim, "knn_tree: D must be in [1, 3]; got ", dim);
  XMODAL_CHECK(k >= 1 && k <= bank_size, "k must be in [1, N=", bank_size, "]; got ", k);
  XMODAL_CHECK(bank_size < (int64_t{1} << 31), "knn_tree: at most 2^31 - 1 bank rows; got ", bank_size);
  if (num_queries == 0) return;
  std::vector<float> bank_3d, queries_3d;
  if (dim < 3) {
    bank_3d = padded_to_3d(bank, bank_size, dim);
    queries_3d = padded_to_3d(queries, num_queries, dim);
    bank = bank_3d.data();
    queries = queries_3d.data();
  }
  PointTree tree;
  tree.build(bank, bank_size, nullptr, kLeafSize);

  search_all<KnnMetric>(tree, bank, queries, num_queries, k, [&](int64_t q, const auto* found) {
    for (int64_t j = 0; j < k; ++j) {
      dist[q * k + j] = found[j].rank;
      idx[q * k + j] = found[j].index;
    }
  });
}

}  // namespace xmodal
