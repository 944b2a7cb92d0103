// Gated residual x += gate * h, forward and backward (backend.h "gated residual").
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

__global__ void gated_res_fwd4_k(float4* x, const float* __restrict__ gate, int mod_stride,
                                 const float4* __restrict__ h, int N, int L, int D4) {
  size_t total = (size_t)N * L * D4;
  GRID_STRIDE(i, total) {
    int d = (int)(i % D4);
    int n = (int)(i / ((size_t)L * D4));
    float4 g = reinterpret_cast<const float4*>(gate + (size_t)n * mod_stride)[d], v = h[i], o = x[i];
    o.x += g.x * v.x; o.y += g.y * v.y; o.z += g.z * v.z; o.w += g.w * v.w;
    x[i] = o;
  }
}

__global__ void gated_res_fwd_k(float* x, const float* __restrict__ gate, int mod_stride,
                                const float* __restrict__ h, int N, int L, int D) {
  size_t total = (size_t)N * L * D;
  GRID_STRIDE(i, total) {
    int d = (int)(i % D);
    int n = (int)(i / ((size_t)L * D));
    x[i] += gate[(size_t)n * mod_stride + d] * h[i];
  }
}

// dh = gate * dx (=) and dgate[n, d] = sum_l dx * h, in one pass over dx and h.
__global__ void gated_res_bwd_k(const float* __restrict__ dx, const float* __restrict__ gate,
                                int mod_stride, const float* __restrict__ h, float* __restrict__ dh,
                                float* __restrict__ dgate, int L, int D) {
  __shared__ float part[8][33];
  int n = blockIdx.y;
  int d = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (d < D) {
    float g = gate[(size_t)n * mod_stride + d];
    for (int l = threadIdx.y; l < L; l += 8) {
      size_t i = ((size_t)n * L + l) * D + d;
      float v = dx[i];
      dh[i] = g * v;
      acc += v * h[i];
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    float s = 0.f;
    for (int k = 0; k < 8; ++k) s += part[k][threadIdx.x];
    dgate[(size_t)n * mod_stride + d] = s;
  }
}

}  // namespace

void gated_residual_forward(float* x, const float* gate, int mod_stride, const float* h, int N,
                            int L, int D, cudaStream_t s) {
  size_t total = (size_t)N * L * D;
  if (!total) return;
  if (D % 4 == 0 && mod_stride % 4 == 0 && al16(x) && al16(gate) && al16(h)) {
    gated_res_fwd4_k<<<grid_for(total / 4), kThreads, 0, s>>>(
        reinterpret_cast<float4*>(x), gate, mod_stride, reinterpret_cast<const float4*>(h), N, L, D / 4);
    SPEED_CUDA_LAUNCH_CHECK("gated_residual_forward (float4)");
    return;
  }
  gated_res_fwd_k<<<grid_for(total), kThreads, 0, s>>>(x, gate, mod_stride, h, N, L, D);
  SPEED_CUDA_LAUNCH_CHECK("gated_residual_forward");
}

void gated_residual_backward(const float* dx, const float* gate, int mod_stride, const float* h,
                             float* dh, float* dgate, int N, int L, int D, cudaStream_t s) {
  if (!N || !D) return;
  gated_res_bwd_k<<<dim3((D + 31) / 32, N), dim3(32, 8), 0, s>>>(dx, gate, mod_stride, h, dh,
                                                                dgate, L, D);
  SPEED_CUDA_LAUNCH_CHECK("gated_residual_backward");
}

}  // namespace cuda
}  // namespace speed
