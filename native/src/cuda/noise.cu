// Gaussian noise (backend.h "noise"): the Philox stream of speed/philox.h, evaluated per
// 4-number block as the CPU does, so the GPU draws the same numbers for the same (seed, offset).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"
#include "speed/philox.h"

namespace speed {
namespace cuda {
namespace {

// One thread per Philox block (4 normals): the stream of philox.h, bit for bit.
__global__ void normal_k(float* __restrict__ x, size_t n, uint64_t seed, uint64_t offset) {
  size_t blocks = (n + 3) / 4;
  GRID_STRIDE(b, blocks) {
    double z[4];
    philox_normal4(seed, offset + b, z);
    size_t i0 = b * 4;
    for (int j = 0; j < 4; ++j)
      if (i0 + j < n) x[i0 + j] = (float)z[j];
  }
}

}  // namespace

void normal(float* x, size_t n, uint64_t seed, uint64_t offset, cudaStream_t s) {
  if (!n) return;
  normal_k<<<grid_for((n + 3) / 4), kThreads, 0, s>>>(x, n, seed, offset);
  SPEED_CUDA_LAUNCH_CHECK("normal");
}

}  // namespace cuda
}  // namespace speed
