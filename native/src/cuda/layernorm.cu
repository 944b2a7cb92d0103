// LayerNorm (no affine) + adaLN modulate, forward and backward (backend.h "LayerNorm + adaLN
// modulation"): one warp per row, float32 statistics; float4 forms where D and the pointers allow.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

// ---- LayerNorm + adaLN modulate: one warp per row, float32 statistics ----------
// Two passes over the row (mean, then centred variance) for accuracy equal to
// the CPU's; the row stays in L1 between passes.
__global__ void ln_mod_fwd_k(const float* __restrict__ x, const float* __restrict__ shift,
                             const float* __restrict__ scale, int mod_stride, float* __restrict__ y,
                             float* __restrict__ mean_out, float* __restrict__ rstd_out, int N, int L,
                             int D, float eps) {
  int warps = blockDim.x / 32;
  size_t row = (size_t)blockIdx.x * warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= (size_t)N * L) return;
  int n = (int)(row / L);
  const float* xr = x + row * D;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += xr[d];
  float mean = warp_sum(s) / D;
  float s2 = 0.f;
  for (int d = lane; d < D; d += 32) {
    float c = xr[d] - mean;
    s2 += c * c;
  }
  float var = warp_sum(s2) / D;
  float rstd = rsqrtf(var + eps);
  const float* sh = shift + (size_t)n * mod_stride;
  const float* sc = scale + (size_t)n * mod_stride;
  float* yr = y + row * D;
  for (int d = lane; d < D; d += 32) yr[d] = (xr[d] - mean) * rstd * (1.0f + sc[d]) + sh[d];
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// float4 forms (D % 4 == 0, mod_stride % 4 == 0, 16-byte aligned pointers): the same
// math, 16-byte accesses (4 values per lane per load instead of 1).

__global__ void ln_mod_fwd4_k(const float4* __restrict__ x, const float* __restrict__ shift,
                              const float* __restrict__ scale, int mod_stride, float4* __restrict__ y,
                              float* __restrict__ mean_out, float* __restrict__ rstd_out, int N, int L,
                              int D4, float eps) {
  int warps = blockDim.x / 32;
  size_t row = (size_t)blockIdx.x * warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= (size_t)N * L) return;
  int n = (int)(row / L);
  const float D = 4.0f * D4;
  const float4* xr = x + row * D4;
  float s = 0.f;
  for (int d = lane; d < D4; d += 32) {
    float4 v = xr[d];
    s += (v.x + v.y) + (v.z + v.w);
  }
  float mean = warp_sum(s) / D;
  float s2 = 0.f;
  for (int d = lane; d < D4; d += 32) {
    float4 v = xr[d];
    float a = v.x - mean, b = v.y - mean, c = v.z - mean, e = v.w - mean;
    s2 += (a * a + b * b) + (c * c + e * e);
  }
  float var = warp_sum(s2) / D;
  float rstd = rsqrtf(var + eps);
  const float4* sh = reinterpret_cast<const float4*>(shift + (size_t)n * mod_stride);
  const float4* sc = reinterpret_cast<const float4*>(scale + (size_t)n * mod_stride);
  float4* yr = y + row * D4;
  for (int d = lane; d < D4; d += 32) {
    float4 v = xr[d], h = sh[d], k = sc[d], o;
    o.x = (v.x - mean) * rstd * (1.0f + k.x) + h.x;
    o.y = (v.y - mean) * rstd * (1.0f + k.y) + h.y;
    o.z = (v.z - mean) * rstd * (1.0f + k.z) + h.z;
    o.w = (v.w - mean) * rstd * (1.0f + k.w) + h.w;
    yr[d] = o;
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

__global__ void ln_mod_bwd_dx4_k(const float4* __restrict__ dy, const float4* __restrict__ x,
                                 const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                 const float* __restrict__ scale, int mod_stride, float4* dx, int N,
                                 int L, int D4, bool accum) {
  int warps = blockDim.x / 32;
  size_t row = (size_t)blockIdx.x * warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= (size_t)N * L) return;
  int n = (int)(row / L);
  const float D = 4.0f * D4;
  const float4* xr = x + row * D4;
  const float4* dyr = dy + row * D4;
  const float4* sc = reinterpret_cast<const float4*>(scale + (size_t)n * mod_stride);
  float mean = mean_in[row], rstd = rstd_in[row];
  float a = 0.f, b = 0.f;
  for (int d = lane; d < D4; d += 32) {
    float4 g = dyr[d], v = xr[d], k = sc[d];
    g.x *= 1.0f + k.x; g.y *= 1.0f + k.y; g.z *= 1.0f + k.z; g.w *= 1.0f + k.w;
    a += (g.x + g.y) + (g.z + g.w);
    b += (g.x * (v.x - mean) + g.y * (v.y - mean)) + (g.z * (v.z - mean) + g.w * (v.w - mean));
  }
  a = warp_sum(a) / D;
  b = warp_sum(b) * rstd / D;
  float4* dxr = dx + row * D4;
  for (int d = lane; d < D4; d += 32) {
    float4 g = dyr[d], v = xr[d], k = sc[d], o;
    o.x = rstd * (g.x * (1.0f + k.x) - a - (v.x - mean) * rstd * b);
    o.y = rstd * (g.y * (1.0f + k.y) - a - (v.y - mean) * rstd * b);
    o.z = rstd * (g.z * (1.0f + k.z) - a - (v.z - mean) * rstd * b);
    o.w = rstd * (g.w * (1.0f + k.w) - a - (v.w - mean) * rstd * b);
    if (accum) {
      float4 p = dxr[d];
      o.x += p.x; o.y += p.y; o.z += p.z; o.w += p.w;
    }
    dxr[d] = o;
  }
}

__global__ void ln_mod_bwd_dx_k(const float* __restrict__ dy, const float* __restrict__ x,
                                const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                const float* __restrict__ scale, int mod_stride, float* dx, int N, int L,
                                int D, bool accum) {
  int warps = blockDim.x / 32;
  size_t row = (size_t)blockIdx.x * warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= (size_t)N * L) return;
  int n = (int)(row / L);
  const float* xr = x + row * D;
  const float* dyr = dy + row * D;
  const float* sc = scale + (size_t)n * mod_stride;
  float mean = mean_in[row], rstd = rstd_in[row];
  float a = 0.f, b = 0.f;
  for (int d = lane; d < D; d += 32) {
    float g = dyr[d] * (1.0f + sc[d]);
    float xh = (xr[d] - mean) * rstd;
    a += g;
    b += g * xh;
  }
  a = warp_sum(a) / D;
  b = warp_sum(b) / D;
  float* dxr = dx + row * D;
  for (int d = lane; d < D; d += 32) {
    float g = dyr[d] * (1.0f + sc[d]);
    float xh = (xr[d] - mean) * rstd;
    float v = rstd * (g - a - xh * b);
    dxr[d] = accum ? dxr[d] + v : v;
  }
}

// dshift[n, d] = sum_l dy; dscale[n, d] = sum_l dy * xhat. Grid (ceil(D/32), N),
// block (32, 8); fixed summation order.
__global__ void ln_mod_bwd_dmod_k(const float* __restrict__ dy, const float* __restrict__ x,
                                  const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                  int mod_stride, float* dshift, float* dscale, int L, int D) {
  __shared__ float ps[8][33], pc[8][33];
  int n = blockIdx.y;
  int d = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f, c = 0.f;
  if (d < D) {
    for (int l = threadIdx.y; l < L; l += 8) {
      size_t row = (size_t)n * L + l;
      float g = dy[row * D + d];
      float xh = (x[row * D + d] - mean_in[row]) * rstd_in[row];
      s += g;
      c += g * xh;
    }
  }
  ps[threadIdx.y][threadIdx.x] = s;
  pc[threadIdx.y][threadIdx.x] = c;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    float ss = 0.f, cc = 0.f;
    for (int k = 0; k < 8; ++k) {
      ss += ps[k][threadIdx.x];
      cc += pc[k][threadIdx.x];
    }
    dshift[(size_t)n * mod_stride + d] = ss;
    dscale[(size_t)n * mod_stride + d] = cc;
  }
}

}  // namespace

void ln_modulate_forward(const float* x, const float* shift, const float* scale, int mod_stride,
                         float* y, float* mean, float* rstd, int N, int L, int D, float eps,
                         cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  const int warps = 8;
  if (D % 4 == 0 && mod_stride % 4 == 0 && al16(x) && al16(y) && al16(shift) && al16(scale)) {
    ln_mod_fwd4_k<<<(unsigned)((rows + warps - 1) / warps), warps * 32, 0, s>>>(
        reinterpret_cast<const float4*>(x), shift, scale, mod_stride, reinterpret_cast<float4*>(y),
        mean, rstd, N, L, D / 4, eps);
    SPEED_CUDA_LAUNCH_CHECK("ln_modulate_forward (float4)");
    return;
  }
  ln_mod_fwd_k<<<(unsigned)((rows + warps - 1) / warps), warps * 32, 0, s>>>(
      x, shift, scale, mod_stride, y, mean, rstd, N, L, D, eps);
  SPEED_CUDA_LAUNCH_CHECK("ln_modulate_forward");
}

void ln_modulate_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                          const float* scale, int mod_stride, float* dx, float* dshift,
                          float* dscale, int N, int L, int D, bool accum_dx, cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  const int warps = 8;
  if (dx && D % 4 == 0 && mod_stride % 4 == 0 && al16(dy) && al16(x) && al16(dx) && al16(scale)) {
    ln_mod_bwd_dx4_k<<<(unsigned)((rows + warps - 1) / warps), warps * 32, 0, s>>>(
        reinterpret_cast<const float4*>(dy), reinterpret_cast<const float4*>(x), mean, rstd, scale,
        mod_stride, reinterpret_cast<float4*>(dx), N, L, D / 4, accum_dx);
    SPEED_CUDA_LAUNCH_CHECK("ln_modulate_backward(dx, float4)");
  } else if (dx) {
    ln_mod_bwd_dx_k<<<(unsigned)((rows + warps - 1) / warps), warps * 32, 0, s>>>(
        dy, x, mean, rstd, scale, mod_stride, dx, N, L, D, accum_dx);
    SPEED_CUDA_LAUNCH_CHECK("ln_modulate_backward(dx)");
  }
  ln_mod_bwd_dmod_k<<<dim3((D + 31) / 32, N), dim3(32, 8), 0, s>>>(dy, x, mean, rstd, mod_stride,
                                                                  dshift, dscale, L, D);
  SPEED_CUDA_LAUNCH_CHECK("ln_modulate_backward(dshift, dscale)");
}

}  // namespace cuda
}  // namespace speed
