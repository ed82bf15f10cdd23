// kNN, greedy coreset and AUPRO on raw arrays through xmodal's C++ kernels library (no Python,
// no torch). The inputs come from an integer hash whose floats are exact in any language, so
// tests/test_cpp_example.py recomputes everything with the Python API and compares the lines
// printed here.
#include <xmodal/ops/coreset/coreset.h>
#include <xmodal/ops/knn/knn.h>
#include <xmodal/ops/pro/pro.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

namespace {

// A float in [0, 1) with 24 significant bits: ((i * 2654435761 + salt * 40503) mod 2^32) / 2^32.
float hashed(uint32_t i, uint32_t salt) {
  const uint32_t h = i * 2654435761u + salt * 40503u;
  return static_cast<float>(h >> 8) / 16777216.0f;
}

std::vector<float> hashed_array(size_t size, uint32_t salt) {
  std::vector<float> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = hashed(static_cast<uint32_t>(i), salt);
  return out;
}

}  // namespace

int main() {
  try {
    const int64_t n = 500, d = 40, q = 20, k = 5;
    const std::vector<float> bank = hashed_array(n * d, 1), queries = hashed_array(q * d, 2);

    std::vector<float> dist(q * k);
    std::vector<int64_t> idx(q * k);
    xmodal::knn_cpu(queries.data(), q, bank.data(), xmodal::BankType::f32, n, d, k, dist.data(), idx.data());
    for (int64_t r = 0; r < q; ++r) {
      std::printf("knn %lld:", static_cast<long long>(r));
      for (int64_t j = 0; j < k; ++j)
        std::printf(" %lld %.9g", static_cast<long long>(idx[r * k + j]), dist[r * k + j]);
      std::printf("\n");
    }

    std::vector<int64_t> chosen(16);
    xmodal::greedy_coreset_cpu(bank.data(), n, d, static_cast<int64_t>(chosen.size()), 0, chosen.data());
    std::printf("coreset:");
    for (int64_t c : chosen) std::printf(" %lld", static_cast<long long>(c));
    std::printf("\n");

    // Four 32 x 32 score maps; two of them have defects (rectangles) in their masks.
    const int64_t images = 4, h = 32, w = 32;
    const std::vector<float> maps = hashed_array(images * h * w, 3);
    std::vector<uint8_t> masks(images * h * w, 0);
    for (int64_t y = 4; y < 12; ++y)
      for (int64_t x = 6; x < 20; ++x) masks[(1 * h + y) * w + x] = 1;
    for (int64_t y = 10; y < 30; ++y)
      for (int64_t x = 2; x < 9; ++x) masks[(3 * h + y) * w + x] = 1;
    const std::vector<xmodal::MapBatch> batches = {{maps.data(), masks.data(), images, h, w}};
    const double limits[] = {0.3, 0.1, 0.05, 0.01};
    double aupro[4];
    xmodal::aupro_cpu(batches, xmodal::ScoreType::f32, 0, limits, 4, aupro);
    for (int j = 0; j < 4; ++j) std::printf("aupro %g: %.17g\n", limits[j], aupro[j]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xmodal_example: %s\n", e.what());
    return 1;
  }
  return 0;
}
