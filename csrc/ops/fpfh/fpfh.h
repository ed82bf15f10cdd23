// Normals and FPFH (Fast Point Feature Histograms, Rusu et al. 2009) of a 3D point cloud, with
// open3d's conventions (estimate_normals, compute_fpfh_feature), exact against the float64
// numpy reference xmodal.reference.fpfh / estimate_normals.
//
//   points     (N, 3) float32, C-contiguous, finite (the Python layer rejects NaN/inf); N may be 0
//   normals    (N, 3) float32: unit normals (estimate_normals' output, or the caller's; used as
//              given, not renormalised)
//   features   (N, 33) float32 out
//
// Neighbourhood of a point p (`Neighbourhood`): the min(max_nn, N) nearest points of the cloud,
// p itself included, ordered by squared distance in the arithmetic of common/point_math.h
// (float32 differences, exact float64 squares), ties to the lower index; with a finite radius,
// only those with squared distance < radius^2 (strict, as open3d's KDTreeSearchParamHybrid:
// kNN of max_nn, then the radius cut). radius = +inf is open3d's KDTreeSearchParamKNN(max_nn).
// The first entry is p itself, or a coincident point with a lower index.
//
// Normals (estimate_normals): the eigenvector of the smallest eigenvalue of the neighbourhood's
// covariance (float64, about its mean; closed-form solver of ops/fpfh/eigen3.h), or (0, 0, 1)
// when the neighbourhood has fewer than 3 points or all of them coincide (open3d's rules).
// With viewpoint.orient, a normal with n . (viewpoint - p) < 0 is flipped (open3d's
// orient_normals_towards_camera_location; the camera sits at the origin of organized clouds);
// otherwise its sign is whatever the solver gives.
//
// SPFH(p), 33 float64 values: for every neighbour q after the first entry, open3d's pair
// features (theta, alpha, phi) of (p, n_p) and (q, n_q) (ops/fpfh/fpfh_math.h) add
// 100 / (count - 1) to one of 11 bins of each block: theta over [-pi, pi] (bins 0..10), alpha
// over [-1, 1] (11..21), phi over [-1, 1] (22..32); bin = floor(11 * (f - lo) / (hi - lo))
// clamped to [0, 10]. Each block sums to 100. Coincident points add to the middle bins (zero
// features), as in open3d.
//
// FPFH(p) = SPFH(p) + 100 * S_block / sum(S_block) per 11-bin block, where
// S = sum over neighbours q after the first entry with d^2(p, q) > 0 of SPFH(q) / d^2(p, q)
// (open3d weighs by the squared distance; the FPFH paper writes 1 / distance). A block whose
// weighted sum is 0 adds nothing. A point with no neighbour (count <= 1: an isolated point
// under a radius, or N == 1) gets all zeros. Each block of a point with neighbours thus sums
// to 100 or 200. Values are computed in float64 and rounded once to float32.
//
// Differences from open3d 0.20 (besides float32 inputs): neighbour distances use the kernels'
// float32-difference arithmetic (relative 1e-7 from open3d's float64 points), ties in distance
// go to the lower index, the source point of a pair is chosen by comparing |n . dp| instead of
// acos(|n . dp|) (the same order without acos' rounding), and the smallest eigenvector is
// computed by a more robust closed form (open3d's FastEigen3x3 can lose accuracy when two
// eigenvalues are close). Normal signs from an unoriented estimate differ from open3d's.
//
// CPU: an exact bucketed KD-tree search (ops/fpfh/neighbours_cpu.cpp) fills an
// (N, min(max_nn, N)) int32 table of neighbour rows, used by the SPFH and the FPFH passes;
// OpenMP over points.
// CUDA: the same per-point math (fpfh_math.h) as one thread per point on device pointers;
// the neighbour table is built by the CPU search (the points are copied to the host) and
// uploaded, so both paths use identical neighbourhoods.
#pragma once

#include <cstdint>

namespace xmodal {

constexpr int kFpfhBins = 11;
constexpr int kFpfhFeatures = 3 * kFpfhBins;

struct Neighbourhood {
  int64_t max_nn;  // >= 1
  double radius;   // > 0; +inf for plain kNN
};

struct Viewpoint {
  bool orient;
  double x, y, z;
};

void estimate_normals_cpu(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                          float* normals);

void fpfh_cpu(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
              float* features);

// Both at once: normals (N, 3) out, estimated over normal_neighbourhood as estimate_normals_cpu
// does, then the FPFH over `neighbourhood` with them; one neighbour search serves both.
void fpfh_with_normals_cpu(const float* points, int64_t num_points, Neighbourhood neighbourhood,
                           Neighbourhood normal_neighbourhood, Viewpoint viewpoint, float* normals, float* features);

// Device pointers, queued on `stream` (the neighbour search synchronises with it first: it
// reads the points on the host).
void estimate_normals_cuda(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                           float* normals, void* stream);

void fpfh_cuda(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
               float* features, void* stream);

void fpfh_with_normals_cuda(const float* points, int64_t num_points, Neighbourhood neighbourhood,
                            Neighbourhood normal_neighbourhood, Viewpoint viewpoint, float* normals, float* features,
                            void* stream);

}  // namespace xmodal
