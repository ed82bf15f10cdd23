#include <algorithm>
#include <cmath>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "common/parallel.h"
#include "ops/mlp/mlp.h"

namespace xmodal {

void check_mlp_chain(const std::vector<LinearLayer>& layers, int64_t in, int64_t out, const char* name) {
  XMODAL_CHECK(!layers.empty(), name, " must have at least one Linear layer");
  for (size_t i = 0; i < layers.size(); ++i) {
    XMODAL_CHECK(layers[i].in >= 1 && layers[i].out >= 1, name, " layer ", i, " has an empty weight");
    if (i > 0) {
      XMODAL_CHECK(layers[i].in == layers[i - 1].out, name, " layer ", i, " takes ", layers[i].in,
                   " features but layer ", i - 1, " produces ", layers[i - 1].out);
    }
  }
  XMODAL_CHECK(in < 0 || layers.front().in == in, name, " takes ", layers.front().in, " features; got ", in);
  XMODAL_CHECK(out < 0 || layers.back().out == out, name, " produces ", layers.back().out, " features; expected ", out);
}

namespace {

constexpr int64_t kRowBlock = 128;
constexpr int64_t kMaxRowBlock = 512;

int64_t widest_output(const std::vector<LinearLayer>& layers) {
  int64_t width = 0;
  for (const LinearLayer& layer : layers) width = std::max(width, layer.out);
  return width;
}

// Rows per block. Every block reads (and sgemm packs) each weight matrix again, so large weights
// get taller blocks: 128 rows up to ~2M weights (CFM's 768..1152 layers), up to 512 for
// BridgeNet's 3072 x 3072 (measured 15-25 % faster than 128 there). Scratch is rows x width.
int64_t rows_per_block(const std::vector<LinearLayer>& layers) {
  int64_t weights = 0;
  for (const LinearLayer& layer : layers) weights = std::max(weights, layer.in * layer.out);
  const int64_t rows = (weights / 16384 + 63) / 64 * 64;
  return std::clamp(rows, kRowBlock, kMaxRowBlock);
}

// One loop per activation so each vectorises without a per-element switch.
void activate_row(float* row, int64_t width, Activation act, float negative_slope) {
  switch (act) {
    case Activation::gelu:
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] = gelu(row[j]);
      break;
    case Activation::relu:
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] = row[j] > 0.0f ? row[j] : 0.0f;
      break;
    case Activation::leaky_relu:
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] = leaky_relu(row[j], negative_slope);
      break;
    case Activation::sigmoid:
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] = sigmoid(row[j]);
      break;
    case Activation::identity:
      break;
  }
}

// out = act(bias + in · Wᵀ) on one block of rows while it is in cache.
void linear_block(const float* in, int64_t rows, const LinearLayer& layer, float* out) {
  blas::sgemm_nt(rows, layer.out, layer.in, 1.0f, in, layer.in, layer.weight, layer.in, 0.0f, out, layer.out);
  const int64_t width = layer.out;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = out + r * width;
    if (layer.bias != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] += layer.bias[j];
    }
    activate_row(row, width, layer.activation, layer.negative_slope);
  }
}

// Runs one block through every layer, ping-ponging between two scratch buffers; the last layer
// writes to `out` when given. Returns where the block's output is.
const float* run_block(const float* in, int64_t rows, const std::vector<LinearLayer>& layers, float* scratch_a,
                       float* scratch_b, float* out) {
  const float* current = in;
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool last = i + 1 == layers.size();
    float* target = (last && out != nullptr) ? out : (i % 2 == 0 ? scratch_a : scratch_b);
    linear_block(current, rows, layers[i], target);
    current = target;
  }
  return current;
}

// || p/max(|p|, eps) - t/max(|t|, eps) || in float64, as torch.nn.functional.normalize.
float normalized_distance(const float* p, const float* t, int64_t dim) {
  double pp = 0.0, tt = 0.0;
#pragma omp simd reduction(+ : pp, tt)
  for (int64_t d = 0; d < dim; ++d) {
    pp += static_cast<double>(p[d]) * p[d];
    tt += static_cast<double>(t[d]) * t[d];
  }
  const double ip = 1.0 / std::max(std::sqrt(pp), 1e-12), it = 1.0 / std::max(std::sqrt(tt), 1e-12);
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < dim; ++d) {
    const double diff = p[d] * ip - t[d] * it;
    sum += diff * diff;
  }
  return static_cast<float>(std::sqrt(sum));
}

void gather_rows(const float* source, int64_t dim, const int64_t* rows, int64_t count, float* out) {
  for (int64_t r = 0; r < count; ++r) std::copy_n(source + rows[r] * dim, dim, out + r * dim);
}

}  // namespace

void mlp_forward_cpu(const float* x, int64_t rows, const std::vector<LinearLayer>& layers, float* y) {
  check_mlp_chain(layers, -1, -1, "mlp");
  const int64_t in = layers.front().in, out = layers.back().out, width = widest_output(layers);
  const int64_t block = rows_per_block(layers);
  const int64_t blocks = (rows + block - 1) / block;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> scratch_a(static_cast<size_t>(block * width)), scratch_b(scratch_a.size());
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b)
      errors.run([&] {
        const int64_t r0 = b * block, count = std::min(block, rows - r0);
        run_block(x + r0 * in, count, layers, scratch_a.data(), scratch_b.data(), y + r0 * out);
      });
  }
  errors.rethrow();
}

void crossmodal_discrepancy_cpu(const float* f2d, const float* f3d, int64_t rows, const uint8_t* mask,
                                const std::vector<LinearLayer>& mlp_2d3d, const std::vector<LinearLayer>& mlp_3d2d,
                                float* d_2d, float* d_3d) {
  check_mlp_chain(mlp_2d3d, -1, -1, "mlp_2d3d");
  const int64_t dim_2d = mlp_2d3d.front().in, dim_3d = mlp_2d3d.back().out;
  check_mlp_chain(mlp_3d2d, dim_3d, dim_2d, "mlp_3d2d");

  std::vector<int64_t> foreground;
  foreground.reserve(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    if (mask == nullptr || mask[i] != 0) foreground.push_back(i);
  }
  std::fill_n(d_2d, rows, 0.0f);
  std::fill_n(d_3d, rows, 0.0f);

  const int64_t width = std::max(widest_output(mlp_2d3d), widest_output(mlp_3d2d));
  const int64_t count_all = static_cast<int64_t>(foreground.size());
  const int64_t blocks = (count_all + kRowBlock - 1) / kRowBlock;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> scratch_a(static_cast<size_t>(kRowBlock * width)), scratch_b(scratch_a.size());
    std::vector<float> gathered(static_cast<size_t>(kRowBlock * std::max(dim_2d, dim_3d)));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b)
      errors.run([&] {
        const int64_t* block_rows = foreground.data() + b * kRowBlock;
        const int64_t count = std::min(kRowBlock, count_all - b * kRowBlock);
        // 2D -> 3D: predict the 3D feature from the 2D one, compare with the real 3D feature.
        gather_rows(f2d, dim_2d, block_rows, count, gathered.data());
        const float* predicted =
            run_block(gathered.data(), count, mlp_2d3d, scratch_a.data(), scratch_b.data(), nullptr);
        for (int64_t r = 0; r < count; ++r)
          d_3d[block_rows[r]] = normalized_distance(predicted + r * dim_3d, f3d + block_rows[r] * dim_3d, dim_3d);
        // 3D -> 2D.
        gather_rows(f3d, dim_3d, block_rows, count, gathered.data());
        predicted = run_block(gathered.data(), count, mlp_3d2d, scratch_a.data(), scratch_b.data(), nullptr);
        for (int64_t r = 0; r < count; ++r)
          d_2d[block_rows[r]] = normalized_distance(predicted + r * dim_2d, f2d + block_rows[r] * dim_2d, dim_2d);
      });
  }
  errors.rethrow();
}

}  // namespace xmodal
