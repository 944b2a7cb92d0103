// Element-wise kernels (backend.h "elementwise"): fill, the float32 -> bf16 operand copy that
// feeds the bf16 GEMMs, SiLU, add, and the broadcast row add.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

__global__ void fill_k(float* x, float v, size_t n) { GRID_STRIDE(i, n) x[i] = v; }

__global__ void f32_to_bf16_k(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, size_t n) {
  // Two elements per thread when both fit (bf16x2 stores).
  size_t n2 = n / 2;
  GRID_STRIDE(i, n2) {
    float2 v = reinterpret_cast<const float2*>(x)[i];
    reinterpret_cast<__nv_bfloat162*>(y)[i] = __floats2bfloat162_rn(v.x, v.y);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0 && (n & 1)) y[n - 1] = __float2bfloat16_rn(x[n - 1]);
}
__global__ void f32_to_bf16_scalar_k(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, size_t n) {
  GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void silu_forward_k(const float* __restrict__ x, float* __restrict__ y, size_t n) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    y[i] = v / (1.0f + expf(-v));
  }
}
__global__ void silu_backward_k(const float* __restrict__ x, const float* __restrict__ dy, float* dx,
                                size_t n, bool accum) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    float sg = 1.0f / (1.0f + expf(-v));
    float g = dy[i] * sg * (1.0f + v * (1.0f - sg));
    dx[i] = accum ? dx[i] + g : g;
  }
}
__global__ void add_k(const float* a, const float* b, float* y, size_t n) {
  GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}
__global__ void add_rows_k(float* x, const float* __restrict__ row, size_t rows, size_t n) {
  size_t total = rows * n;
  GRID_STRIDE(i, total) x[i] += row[i % n];
}

}  // namespace

void fill(float* x, float v, size_t n, cudaStream_t s) {
  if (!n) return;
  fill_k<<<grid_for(n), kThreads, 0, s>>>(x, v, n);
  SPEED_CUDA_LAUNCH_CHECK("fill");
}

void f32_to_bf16(const float* x, void* y, size_t n, cudaStream_t s) {
  if (!n) return;
  if ((reinterpret_cast<uintptr_t>(x) % 8 == 0) && (reinterpret_cast<uintptr_t>(y) % 4 == 0))
    f32_to_bf16_k<<<grid_for((n + 1) / 2), kThreads, 0, s>>>(x, static_cast<__nv_bfloat16*>(y), n);
  else
    f32_to_bf16_scalar_k<<<grid_for(n), kThreads, 0, s>>>(x, static_cast<__nv_bfloat16*>(y), n);
  SPEED_CUDA_LAUNCH_CHECK("f32_to_bf16");
}

void silu_forward(const float* x, float* y, size_t n, cudaStream_t s) {
  if (!n) return;
  silu_forward_k<<<grid_for(n), kThreads, 0, s>>>(x, y, n);
  SPEED_CUDA_LAUNCH_CHECK("silu_forward");
}

void silu_backward(const float* x, const float* dy, float* dx, size_t n, bool accum, cudaStream_t s) {
  if (!n) return;
  silu_backward_k<<<grid_for(n), kThreads, 0, s>>>(x, dy, dx, n, accum);
  SPEED_CUDA_LAUNCH_CHECK("silu_backward");
}

void add(const float* a, const float* b, float* y, size_t n, cudaStream_t s) {
  if (!n) return;
  add_k<<<grid_for(n), kThreads, 0, s>>>(a, b, y, n);
  SPEED_CUDA_LAUNCH_CHECK("add");
}

void add_rows(float* x, const float* row, size_t rows, size_t n, cudaStream_t s) {
  if (!rows || !n) return;
  add_rows_k<<<grid_for(rows * n), kThreads, 0, s>>>(x, row, rows, n);
  SPEED_CUDA_LAUNCH_CHECK("add_rows");
}

}  // namespace cuda
}  // namespace speed
