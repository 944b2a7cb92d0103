// CUDA kernels of the VAE ops (backend.h, "VAE ops"): the im2col gather that
// feeds conv2d's cuBLASLt GEMM (float32 or bf16 operand), the per-channel bias
// add, GroupNorm (+ SiLU), nearest x2 upsampling, batched transpose, the
// diagonal-Gaussian sample, and the row softmax of the GEMM-based attention
// for head dims the fused attention kernels do not serve (the VAE's
// single-head attention has head_dim = C = 512). And the CNN classifier's
// training ops (backend.h, "CNN classifier training ops"): col2im (the adjoint
// of im2col, for conv2d_backward's dx), the bias gradient, ReLU. CUDA runtime
// only (no cuBLAS), so this file is compiled on machines without cuBLASLt too.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// col [K, cols] (row-major) for output pixels [p0, p0 + cols) of one sample xs [Ci, H, W]
template <typename O>
__global__ void im2col_k(const float* __restrict__ xs, O* __restrict__ col, int Ci, int H, int W, int kh, int kw,
                         int stride, int pad_t, int pad_l, int Wo, long long p0, int cols) {
  const size_t total = (size_t)Ci * kh * kw * cols;
  GRID_STRIDE(i, total) {
    const int j = (int)(i % cols);
    const int k = (int)(i / cols);
    const int kx = k % kw, ky = (k / kw) % kh, ci = k / (kw * kh);
    const long long p = p0 + j;
    const int oy = (int)(p / Wo), ox = (int)(p % Wo);
    const int iy = oy * stride - pad_t + ky, ix = ox * stride - pad_l + kx;
    float v = 0.f;
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = xs[((size_t)ci * H + iy) * W + ix];
    store(col + i, v);
  }
}

// y[n, co, p] += b[co] for p < HW (one sample block of Co rows of HW)
__global__ void bias_add_k(float* __restrict__ y, const float* __restrict__ b, int N, int Co, long long HW) {
  const size_t total = (size_t)N * Co * HW;
  GRID_STRIDE(i, total) {
    const int co = (int)((i / HW) % Co);
    y[i] += b[co];
  }
}

// dxs [Ci, H, W] (+=) of one sample: each input position gathers the dcol [K, cols] values
// that im2col_k read from it, for output pixels [p0, p0 + cols). A gather (one thread per
// input value, a fixed loop order), so no atomics and the same result every run.
__global__ void col2im_k(const float* __restrict__ dcol, float* __restrict__ dxs, int Ci, int H, int W, int kh,
                         int kw, int stride, int pad_t, int pad_l, int Wo, long long p0, int cols) {
  const size_t total = (size_t)Ci * H * W;
  GRID_STRIDE(i, total) {
    const int ix = (int)(i % W), iy = (int)((i / W) % H), ci = (int)(i / ((size_t)H * W));
    float acc = 0.f;
    for (int ky = 0; ky < kh; ++ky) {
      const int ty = iy + pad_t - ky;  // = oy * stride
      if (ty < 0 || ty % stride) continue;
      const int oy = ty / stride;
      for (int kx = 0; kx < kw; ++kx) {
        const int tx = ix + pad_l - kx;  // = ox * stride
        if (tx < 0 || tx % stride) continue;
        const int ox = tx / stride;
        if (ox >= Wo) continue;
        const long long j = (long long)oy * Wo + ox - p0;
        if (j < 0 || j >= cols) continue;
        acc += dcol[((size_t)(ci * kh + ky) * kw + kx) * cols + j];
      }
    }
    dxs[i] += acc;
  }
}

// db[co] = the sum of dy [N, Co, HW] over samples and pixels: one block per channel,
// float64 partial sums in a fixed stride order, a fixed-shape tree.
constexpr int kBgThreads = 256;
__global__ void bias_grad_k(const float* __restrict__ dy, float* __restrict__ db, int N, int Co, long long HW) {
  const int co = blockIdx.x;
  __shared__ double red[kBgThreads];
  double acc = 0;
  const long long total = (long long)N * HW;
  for (long long i = threadIdx.x; i < total; i += kBgThreads) {
    const long long n = i / HW, p = i % HW;
    acc += (double)dy[((size_t)n * Co + co) * HW + p];
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kBgThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[co] = (float)red[0];
}

__global__ void relu_forward_k(const float* x, float* y, size_t n) {
  GRID_STRIDE(i, n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}
__global__ void relu_backward_k(const float* y, const float* dy, float* dx, size_t n) {
  GRID_STRIDE(i, n) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

// One block per (n, g): float64 partial sums per thread in a fixed stride
// order, a fixed-shape tree in shared memory, so the result does not depend on timing.
constexpr int kGnThreads = 512;
__global__ void group_norm_k(const float* __restrict__ x, const float* __restrict__ gamma,
                             const float* __restrict__ beta, float* y, int C, int HW, int groups, float eps,
                             bool silu) {
  const int ng = blockIdx.x, n = ng / groups, g = ng % groups, cpg = C / groups;
  const size_t gsz = (size_t)cpg * HW;
  const size_t base = ((size_t)n * C + (size_t)g * cpg) * HW;
  const float* xg = x + base;
  __shared__ double red[kGnThreads];
  __shared__ double s_mean, s_rstd;
  double acc = 0;
  for (size_t i = threadIdx.x; i < gsz; i += kGnThreads) acc += (double)xg[i];
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kGnThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) s_mean = red[0] / (double)gsz;
  __syncthreads();
  const double mean = s_mean;
  acc = 0;
  for (size_t i = threadIdx.x; i < gsz; i += kGnThreads) {
    const double d = (double)xg[i] - mean;
    acc += d * d;
  }
  __syncthreads();
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kGnThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) s_rstd = 1.0 / sqrt(red[0] / (double)gsz + (double)eps);
  __syncthreads();
  const double rstd = s_rstd;
  float* yg = y + base;
  for (size_t i = threadIdx.x; i < gsz; i += kGnThreads) {
    const int ch = g * cpg + (int)(i / HW);
    const double ga = gamma ? (double)gamma[ch] : 1.0, be = beta ? (double)beta[ch] : 0.0;
    float v = (float)(((double)xg[i] - mean) * rstd * ga + be);
    if (silu) v = v / (1.f + expf(-v));
    yg[i] = v;
  }
}

__global__ void upsample2x_k(const float* __restrict__ x, float* __restrict__ y, size_t planes, int H, int W) {
  const size_t total = planes * 4 * (size_t)H * W;
  GRID_STRIDE(i, total) {
    const int W2 = 2 * W;
    const int ox = (int)(i % W2);
    const size_t r = i / W2;  // output row index over all planes
    const int oy = (int)(r % (2 * H));
    const size_t plane = r / (2 * H);
    y[i] = x[(plane * H + oy / 2) * W + ox / 2];
  }
}

// y [B, C, R] = x [B, R, C]^T per batch, 32x32 tiles through shared memory
__global__ void transpose_k(const float* __restrict__ x, float* __restrict__ y, int R, int C) {
  __shared__ float t[32][33];
  const size_t off = (size_t)blockIdx.z * R * C;
  const int r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int r = r0 + k, c = c0 + threadIdx.x;
    if (r < R && c < C) t[k][threadIdx.x] = x[off + (size_t)r * C + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int c = c0 + k, r = r0 + threadIdx.x;
    if (r < R && c < C) y[off + (size_t)c * R + r] = t[threadIdx.x][k];
  }
}

__global__ void gaussian_k(const float* __restrict__ m, const float* __restrict__ eps, float* __restrict__ z,
                           int N, size_t per) {
  const size_t total = (size_t)N * per;
  GRID_STRIDE(i, total) {
    const size_t n = i / per, r = i % per;
    const float* mn = m + n * 2 * per;
    if (!eps) {
      z[i] = mn[r];
    } else {
      const float lv = fminf(20.f, fmaxf(-30.f, mn[per + r]));
      z[i] = mn[r] + expf(0.5f * lv) * eps[i];
    }
  }
}

// Rows of S [rows, L] (scores before scaling): P = softmax(scale S) in place
// (float32, or also a bf16 copy in pb), lse[row] = log-sum-exp of scale S.
constexpr int kSmThreads = 256;
__global__ void softmax_rows_k(float* __restrict__ S, __nv_bfloat16* __restrict__ pb, float* __restrict__ lse,
                               int L, float scale) {
  float* s = S + (size_t)blockIdx.x * L;
  __shared__ float red[kSmThreads];
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < L; j += kSmThreads) mx = fmaxf(mx, s[j] * scale);
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int o = kSmThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + o]);
    __syncthreads();
  }
  mx = red[0];
  __syncthreads();
  float sum = 0.f;
  for (int j = threadIdx.x; j < L; j += kSmThreads) sum += expf(s[j] * scale - mx);
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int o = kSmThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  sum = red[0];
  const float inv = 1.f / sum;
  for (int j = threadIdx.x; j < L; j += kSmThreads) {
    const float p = expf(s[j] * scale - mx) * inv;
    s[j] = p;
    if (pb) pb[(size_t)blockIdx.x * L + j] = __float2bfloat16_rn(p);
  }
  if (threadIdx.x == 0 && lse) lse[blockIdx.x] = mx + logf(sum);
}

}  // namespace

void im2col(const float* xs, void* col, bool bf16, const Conv2dShape& sh, long long p0, int cols, cudaStream_t s) {
  const size_t total = (size_t)sh.Ci * sh.kh * sh.kw * cols;
  if (!total) return;
  if (bf16)
    im2col_k<__nv_bfloat16><<<grid_for(total), kThreads, 0, s>>>(xs, static_cast<__nv_bfloat16*>(col), sh.Ci, sh.H,
                                                                  sh.W, sh.kh, sh.kw, sh.stride, sh.pad_t, sh.pad_l,
                                                                  sh.Wo(), p0, cols);
  else
    im2col_k<float><<<grid_for(total), kThreads, 0, s>>>(xs, static_cast<float*>(col), sh.Ci, sh.H, sh.W, sh.kh,
                                                        sh.kw, sh.stride, sh.pad_t, sh.pad_l, sh.Wo(), p0, cols);
  SPEED_CUDA_LAUNCH_CHECK("im2col");
}

void col2im(const float* dcol, float* dxs, const Conv2dShape& sh, long long p0, int cols, cudaStream_t s) {
  const size_t total = (size_t)sh.Ci * sh.H * sh.W;
  if (!total || cols <= 0) return;
  col2im_k<<<grid_for(total), kThreads, 0, s>>>(dcol, dxs, sh.Ci, sh.H, sh.W, sh.kh, sh.kw, sh.stride, sh.pad_t,
                                                sh.pad_l, sh.Wo(), p0, cols);
  SPEED_CUDA_LAUNCH_CHECK("col2im");
}

void conv_bias_grad(const float* dy, float* db, int N, int Co, long long HW, cudaStream_t s) {
  if (Co <= 0) return;
  bias_grad_k<<<Co, kBgThreads, 0, s>>>(dy, db, N, Co, HW);
  SPEED_CUDA_LAUNCH_CHECK("conv bias grad");
}

void relu_forward(const float* x, float* y, size_t n, cudaStream_t s) {
  if (!n) return;
  relu_forward_k<<<grid_for(n), kThreads, 0, s>>>(x, y, n);
  SPEED_CUDA_LAUNCH_CHECK("relu_forward");
}

void relu_backward(const float* y, const float* dy, float* dx, size_t n, cudaStream_t s) {
  if (!n) return;
  relu_backward_k<<<grid_for(n), kThreads, 0, s>>>(y, dy, dx, n);
  SPEED_CUDA_LAUNCH_CHECK("relu_backward");
}

void conv_bias_add(float* y, const float* b, int N, int Co, long long HW, cudaStream_t s) {
  const size_t total = (size_t)N * Co * HW;
  if (!total || !b) return;
  bias_add_k<<<grid_for(total), kThreads, 0, s>>>(y, b, N, Co, HW);
  SPEED_CUDA_LAUNCH_CHECK("conv bias add");
}

void group_norm(const float* x, const float* gamma, const float* beta, float* y, int N, int C, int HW, int groups,
                double eps, bool silu, cudaStream_t s) {
  if (N <= 0) return;
  group_norm_k<<<N * groups, kGnThreads, 0, s>>>(x, gamma, beta, y, C, HW, groups, (float)eps, silu);
  SPEED_CUDA_LAUNCH_CHECK("group_norm");
}

void upsample_nearest2x(const float* x, float* y, int N, int C, int H, int W, cudaStream_t s) {
  const size_t planes = (size_t)N * C, total = planes * 4 * (size_t)H * W;
  if (!total) return;
  upsample2x_k<<<grid_for(total), kThreads, 0, s>>>(x, y, planes, H, W);
  SPEED_CUDA_LAUNCH_CHECK("upsample_nearest2x");
}

void transpose_batched(const float* x, float* y, int B, int R, int C, cudaStream_t s) {
  if (B <= 0) return;
  dim3 grid((C + 31) / 32, (R + 31) / 32, B), block(32, 8);
  transpose_k<<<grid, block, 0, s>>>(x, y, R, C);
  SPEED_CUDA_LAUNCH_CHECK("transpose_batched");
}

void gaussian_sample(const float* m, const float* eps, float* z, int N, int C, int HW, cudaStream_t s) {
  const size_t per = (size_t)C * HW;
  if (!N || !per) return;
  gaussian_k<<<grid_for(N * per), kThreads, 0, s>>>(m, eps, z, N, per);
  SPEED_CUDA_LAUNCH_CHECK("gaussian_sample");
}

void softmax_rows_scaled(float* S, void* pb, float* lse, int rows, int L, float scale, cudaStream_t s) {
  if (rows <= 0) return;
  softmax_rows_k<<<rows, kSmThreads, 0, s>>>(S, static_cast<__nv_bfloat16*>(pb), lse, L, scale);
  SPEED_CUDA_LAUNCH_CHECK("softmax_rows_scaled");
}

}  // namespace cuda
}  // namespace speed
