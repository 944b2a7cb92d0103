// Launch helpers shared by the CUDA backend's kernel files (one file per op family, as
// backend.h's sections): the block size of the element-wise kernels, the grid for a
// grid-stride loop, warp reductions and the 16-byte alignment test of the float4 forms.
// Included inside no namespace: it opens speed::cuda::{anonymous} itself, so every
// kernel file gets its own internal copy, as before the split.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace speed {
namespace cuda {
namespace {

constexpr int kThreads = 256;

inline int grid_for(size_t n, int threads = kThreads) {
  size_t b = (n + threads - 1) / threads;
  if (b > 65535u * 16u) b = 65535u * 16u;  // grid-stride loops cover the rest
  return static_cast<int>(b < 1 ? 1 : b);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The float4 forms (D % 4 == 0, mod_stride % 4 == 0, 16-byte aligned pointers) do the same
// math with 16-byte accesses (4 values per lane per load instead of 1).
inline bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace
}  // namespace cuda
}  // namespace speed

// for (i over [0, n)) across the whole grid, whatever its size
#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
