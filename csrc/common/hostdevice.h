// Per-element math shared by the CPU and CUDA kernels is written once, as inline functions
// marked XMODAL_HD, so the CPU tests exercise exactly the arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define XMODAL_HD __host__ __device__ __forceinline__
#else
#define XMODAL_HD inline
#endif
