// The unfused epilogues of Linear (backend.h "Linear"), run when cuBLASLt offers no fused
// epilogue: GELU (tanh form, as cuBLASLt's GELU_AUX_BIAS) forward, its backward fused with the
// bf16 copy of the result, and the bias gradient as a fixed-order column sum.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

// GELU, tanh form (DiT's MLP: GELU(approximate="tanh"); cuBLASLt's epilogue uses the same form).
__device__ __forceinline__ float gelu_f(float x) {
  const float c = 0.7978845608028654f;  // sqrt(2/pi)
  float u = c * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float c = 0.7978845608028654f;
  float u = c * (x + 0.044715f * x * x * x);
  float th = tanhf(u);
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * c * (1.0f + 3.0f * 0.044715f * x * x);
}

__global__ void gelu_forward_k(const float* __restrict__ pre, float* __restrict__ y, size_t n) {
  GRID_STRIDE(i, n) y[i] = gelu_f(pre[i]);
}
__global__ void gelu_backward_k(float* dy, const float* __restrict__ pre, __nv_bfloat16* dyb, size_t n) {
  GRID_STRIDE(i, n) {
    float g = dy[i] * gelu_grad_f(pre[i]);
    dy[i] = g;
    if (dyb) dyb[i] = __float2bfloat16_rn(g);
  }
}

// db[c] = sum_r dy[r, c]: block (32, 8) covers 32 columns; 8 row lanes, fixed
// order, so the result does not depend on timing.
__global__ void column_sum_k(const float* __restrict__ dy, float* __restrict__ db, int M, int N) {
  __shared__ float part[8][33];
  int c = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < N)
    for (int r = threadIdx.y; r < M; r += 8) acc += dy[(size_t)r * N + c];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < N) {
    float s = 0.f;
    for (int k = 0; k < 8; ++k) s += part[k][threadIdx.x];
    db[c] = s;
  }
}

}  // namespace

void gelu_forward(const float* pre, float* y, size_t n, cudaStream_t s) {
  if (!n) return;
  gelu_forward_k<<<grid_for(n), kThreads, 0, s>>>(pre, y, n);
  SPEED_CUDA_LAUNCH_CHECK("gelu_forward");
}

void gelu_backward_inplace(float* dy, const float* pre, void* dyb, size_t n, cudaStream_t s) {
  if (!n) return;
  gelu_backward_k<<<grid_for(n), kThreads, 0, s>>>(dy, pre, static_cast<__nv_bfloat16*>(dyb), n);
  SPEED_CUDA_LAUNCH_CHECK("gelu_backward");
}

void column_sum(const float* dy, float* db, int M, int N, cudaStream_t s) {
  if (N <= 0) return;
  column_sum_k<<<(N + 31) / 32, dim3(32, 8), 0, s>>>(dy, db, M, N);
  SPEED_CUDA_LAUNCH_CHECK("column_sum");
}

}  // namespace cuda
}  // namespace speed
