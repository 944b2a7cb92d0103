// The CUDA backend's element-wise, normalisation, embedding, noise, loss,
// optimizer and sampling kernels. Each kernel mirrors one op of
// native/include/speed/backend.h; each launch is checked. Only the CUDA
// runtime is needed here (no cuBLAS): this file is also compiled on machines
// without cuBLASLt so that it cannot rot.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "speed/philox.h"

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

// GELU, tanh form (reference §4; cuBLASLt's epilogue uses the same form).
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

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

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

// One thread per element of the token tensor; `inverse` scatters back.
__global__ void patchify_k(const float* __restrict__ src, float* __restrict__ dst, int N, int C, int H,
                           int W, int p, int ppc, bool inverse) {
  int G_w = W / p, G_h = H / p;
  size_t per_tok = (size_t)C * p * p;
  size_t total = (size_t)N * G_h * G_w * per_tok;
  GRID_STRIDE(i, total) {
    size_t j = i % per_tok;
    size_t tok = i / per_tok;
    int gx = (int)(tok % G_w);
    int gy = (int)((tok / G_w) % G_h);
    int n = (int)(tok / ((size_t)G_w * G_h));
    int c, py, px;
    if (ppc) {
      c = (int)(j % C);
      int pp = (int)(j / C);
      py = pp / p;
      px = pp % p;
    } else {
      c = (int)(j / (p * p));
      int pp = (int)(j % (p * p));
      py = pp / p;
      px = pp % p;
    }
    size_t img = (((size_t)n * C + c) * H + (gy * p + py)) * W + (gx * p + px);
    if (inverse)
      dst[img] = src[i];
    else
      dst[i] = src[img];
  }
}

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
inline bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

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

#define SPEED_UNROLL _Pragma("unroll")
#include "norm_onepass.cuh"
#undef SPEED_UNROLL


// Float64 inside (t f reaches ~1000 rad), as the CPU computes it.
__global__ void timestep_emb_k(const int32_t* __restrict__ t, float* __restrict__ out, int N, int dim,
                               double max_period) {
  int half = dim / 2;
  size_t total = (size_t)N * dim;
  GRID_STRIDE(i, total) {
    int j = (int)(i % dim);
    int n = (int)(i / dim);
    double v = 0.0;
    if (j < 2 * half) {
      int k = j < half ? j : j - half;
      double f = exp(-log(max_period) * (double)k / (double)half);
      double a = (double)t[n] * f;
      v = j < half ? cos(a) : sin(a);
    }
    out[i] = (float)v;
  }
}

__global__ void embedding_fwd_k(const float* __restrict__ table, const int32_t* __restrict__ idx,
                                float* __restrict__ out, int N, int D) {
  size_t total = (size_t)N * D;
  GRID_STRIDE(i, total) {
    int d = (int)(i % D);
    int n = (int)(i / D);
    out[i] = table[(size_t)idx[n] * D + d];
  }
}
// One thread per column: adds the samples in order (deterministic, no atomics).
__global__ void embedding_bwd_k(const float* __restrict__ dout, const int32_t* __restrict__ idx,
                                float* __restrict__ dtable, int N, int D) {
  int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  for (int n = 0; n < N; ++n) dtable[(size_t)idx[n] * D + d] += dout[(size_t)n * D + d];
}

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

__global__ void q_sample_k(const float* __restrict__ x0, const float* __restrict__ eps,
                           const int32_t* __restrict__ t, const float* __restrict__ sa,
                           const float* __restrict__ s1a, float* __restrict__ xt, int N,
                           size_t per_sample) {
  size_t total = (size_t)N * per_sample;
  GRID_STRIDE(i, total) {
    int ti = t[i / per_sample];
    xt[i] = sa[ti] * x0[i] + s1a[ti] * eps[i];
  }
}

// ---- IDDPM hybrid loss (reference §2): one block per sample ---------------------
__device__ __forceinline__ double approx_cdf(double x) {
  const double c = 0.79788456080286535588;  // sqrt(2/pi)
  return 0.5 * (1.0 + tanh(c * (x + 0.044715 * x * x * x)));
}
__device__ __forceinline__ double approx_pdf(double x) {  // d approx_cdf / dx
  const double c = 0.79788456080286535588;
  double th = tanh(c * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

struct LossTab {
  const float *sqrt_recip, *sqrt_recipm1, *coef1, *coef2, *log_beta, *post_log_var;
};

__global__ void iddpm_loss_k(const float* __restrict__ out, const float* __restrict__ x0,
                             const float* __restrict__ xt, const float* __restrict__ eps,
                             const int32_t* __restrict__ tarr, const float* __restrict__ weight,
                             LossTab tab, double vb_scale, int learn_sigma, float* loss, float* mse,
                             float* vb, float* dout, int N, int C, int HW) {
  const double ln2 = 0.69314718055994530942;
  int n = blockIdx.x;
  int t = tarr[n];
  double w = weight[n];
  double sr = tab.sqrt_recip[t], srm1 = tab.sqrt_recipm1[t], c1 = tab.coef1[t], c2 = tab.coef2[t];
  double lb = tab.log_beta[t], plv = tab.post_log_var[t];
  size_t per = (size_t)C * HW;
  int Cout = learn_sigma ? 2 * C : C;
  const float* on = out + (size_t)n * Cout * HW;
  float* dn = dout + (size_t)n * Cout * HW;
  size_t base = (size_t)n * per;
  double inv_count = 1.0 / (double)per;
  double inv_N = 1.0 / (double)N;
  double s_mse = 0.0, s_vb = 0.0;
  for (size_t e = threadIdx.x; e < per; e += blockDim.x) {
    double eh = on[e];
    double ep = eps[base + e];
    double diff = eh - ep;
    s_mse += diff * diff;
    dn[e] = (float)(w * 2.0 * diff * inv_count * inv_N);
    if (learn_sigma) {
      double v = on[per + e];
      double x = x0[base + e], xtv = xt[base + e];
      double frac = 0.5 * (v + 1.0);
      double lv = frac * lb + (1.0 - frac) * plv;
      double dlv_dv = 0.5 * (lb - plv);
      double x0h = sr * xtv - srm1 * eh;  // eps_hat held constant (stop-gradient)
      double mu = c1 * x0h + c2 * xtv;
      double term, dterm_dlv;
      if (t > 0) {
        double mt = c1 * x + c2 * xtv;
        double d = mt - mu;
        double elv = exp(-lv);
        term = 0.5 * (-1.0 + lv - plv + exp(plv - lv) + d * d * elv) / ln2;
        dterm_dlv = 0.5 * (1.0 - exp(plv - lv) - d * d * elv) / ln2;
      } else {
        double ls = 0.5 * lv;  // log scale
        double inv_stdv = exp(-ls);
        double cx = x - mu;
        double plus_in = inv_stdv * (cx + 1.0 / 255.0);
        double min_in = inv_stdv * (cx - 1.0 / 255.0);
        double cdf_plus = approx_cdf(plus_in), cdf_min = approx_cdf(min_in);
        // d(plus_in)/d(ls) = -plus_in, likewise for min_in.
        double lp, dlp_dls;
        if (x < -0.999) {
          double a = cdf_plus;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12 ? approx_pdf(plus_in) * (-plus_in) / a : 0.0;
        } else if (x > 0.999) {
          double a = 1.0 - cdf_min;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12 ? -approx_pdf(min_in) * (-min_in) / a : 0.0;
        } else {
          double a = cdf_plus - cdf_min;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12
                        ? (approx_pdf(plus_in) * (-plus_in) - approx_pdf(min_in) * (-min_in)) / a
                        : 0.0;
        }
        term = -lp / ln2;
        dterm_dlv = -dlp_dls * 0.5 / ln2;
      }
      s_vb += term;
      dn[per + e] = (float)(vb_scale * dterm_dlv * dlv_dv * inv_count * inv_N);
    }
  }
  // block reduction (double)
  __shared__ double sm[32], sv[32];
  int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
  s_mse = warp_sum_d(s_mse);
  s_vb = warp_sum_d(s_vb);
  if (lane == 0) {
    sm[wid] = s_mse;
    sv[wid] = s_vb;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double a = 0.0, b = 0.0;
    for (int k = 0; k < (int)(blockDim.x / 32); ++k) {
      a += sm[k];
      b += sv[k];
    }
    double m = w * a * inv_count;
    double vbv = learn_sigma ? b * inv_count : 0.0;
    mse[n] = (float)m;
    vb[n] = (float)vbv;
    loss[n] = (float)(m + vb_scale * vbv);
  }
}

// ---- optimizer: norm reduction -> finalize -> fused AdamW + clip + EMA ----------
constexpr int kNormBlocks = 1024;

__global__ void sumsq_k(const float* __restrict__ g, size_t n, double* partial) {
  double acc = 0.0;
  // float4 body when aligned (16-byte loads, 4 independent products per load), then the
  // tail; the CPU sums in its own order, so only rounding differs. Fixed grid: deterministic.
  size_t n4 = (reinterpret_cast<uintptr_t>(g) & 15u) == 0 ? n / 4 : 0;
  const float4* g4 = reinterpret_cast<const float4*>(g);
  GRID_STRIDE(i, n4) {
    float4 f = g4[i];
    acc += ((double)f.x * f.x + (double)f.y * f.y) + ((double)f.z * f.z + (double)f.w * f.w);
  }
  GRID_STRIDE(i, n - 4 * n4) {
    double v = g[4 * n4 + i];
    acc += v * v;
  }
  __shared__ double sh[32];
  acc = warp_sum_d(acc);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int k = 0; k < (int)(blockDim.x / 32); ++k) s += sh[k];
    partial[blockIdx.x] = s;
  }
}

__global__ void optim_finalize_k(const double* partial, int nparts, const float* losses, int N,
                                 double max_grad_norm, OptimDeviceResult* res) {
  __shared__ double sh[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += partial[i];
  acc = warp_sum_d(acc);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int k = 0; k < (int)(blockDim.x / 32); ++k) s += sh[k];
    double norm = sqrt(s);
    int skip = isfinite(norm) ? 0 : 1;
    for (int i = 0; i < N; ++i)
      if (!isfinite(losses[i])) skip = 1;
    double clip = 1.0;
    if (max_grad_norm > 0.0) clip = fmin(1.0, max_grad_norm / (norm + 1e-6));
    res->norm = norm;
    res->clip = clip;
    res->skip = skip;
  }
}

struct AdamArgs {
  double lr_bc1, beta1, beta2, eps, decay, inv_bc2, ema_decay;
  int use_ema;
};

// Per-element math in float64 (the CPU backend's formula, term for term); the
// kernel is bound by its 36 bytes per parameter, not by the arithmetic.
__device__ __forceinline__ void adam_one(float& p, float g, float& m, float& v, float& e,
                                         const AdamArgs& a, double clip) {
  const double gi = (double)g * clip;
  const double mi = a.beta1 * (double)m + (1.0 - a.beta1) * gi;
  const double vi = a.beta2 * (double)v + (1.0 - a.beta2) * gi * gi;
  const double pi = (double)p * a.decay - a.lr_bc1 * mi / (sqrt(vi * a.inv_bc2) + a.eps);
  m = (float)mi;
  v = (float)vi;
  p = (float)pi;
  if (a.use_ema) e = (float)(a.ema_decay * (double)e + (1.0 - a.ema_decay) * (double)p);
}

__device__ __forceinline__ bool finite4(float4 x) {
  return isfinite(x.x) && isfinite(x.y) && isfinite(x.z) && isfinite(x.w);
}

// Check pass (between finalize and the update): would the update store a non-finite
// parameter, moment or EMA value (a huge lr, an overflowing v, a damaged state)? The
// same adam_one on copies, nothing stored; any such value sets res->skip = 2, read
// by the update kernels launched after it on the same stream, so that no weight is
// touched. Costs one more read of p, g, m, v (and EMA): 20 of the step's 60 bytes
// per parameter. Each block ORs its threads' verdicts and one thread stores the flag.
__global__ void adamw_check4_k(const float4* __restrict__ p, const float4* __restrict__ g,
                               const float4* __restrict__ m, const float4* __restrict__ v,
                               const float4* __restrict__ ema, size_t n4, AdamArgs a,
                               OptimDeviceResult* res) {
  // Skipped already for a non-finite loss or gradient (skip == 1, set before this
  // launch). Never compare with 0 here: other blocks may be storing 2 meanwhile, and
  // every thread of a block must reach __syncthreads_or.
  if (res->skip == 1) return;
  const double clip = res->clip;
  int bad = 0;
  GRID_STRIDE(i, n4) {
    float4 pp = p[i], gg = g[i], mm = m[i], vv = v[i], ee = make_float4(0.f, 0.f, 0.f, 0.f);
    if (a.use_ema) ee = ema[i];
    adam_one(pp.x, gg.x, mm.x, vv.x, ee.x, a, clip);
    adam_one(pp.y, gg.y, mm.y, vv.y, ee.y, a, clip);
    adam_one(pp.z, gg.z, mm.z, vv.z, ee.z, a, clip);
    adam_one(pp.w, gg.w, mm.w, vv.w, ee.w, a, clip);
    if (!(finite4(pp) && finite4(mm) && finite4(vv) && finite4(ee))) bad = 1;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) res->skip = 2;
}

__global__ void adamw_check_k(const float* __restrict__ p, const float* __restrict__ g,
                              const float* __restrict__ m, const float* __restrict__ v,
                              const float* __restrict__ ema, size_t n, AdamArgs a,
                              OptimDeviceResult* res) {
  if (res->skip == 1) return;  // as adamw_check4_k
  const double clip = res->clip;
  int bad = 0;
  GRID_STRIDE(i, n) {
    float pp = p[i], mm = m[i], vv = v[i], ee = a.use_ema ? ema[i] : 0.f;
    adam_one(pp, g[i], mm, vv, ee, a, clip);
    if (!(isfinite(pp) && isfinite(mm) && isfinite(vv) && isfinite(ee))) bad = 1;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) res->skip = 2;
}

// float4 form: all five pointers 16-byte aligned; the first n4*4 elements (the launcher
// runs adamw_k on the tail).
__global__ void adamw4_k(float4* __restrict__ p, const float4* __restrict__ g, float4* __restrict__ m,
                         float4* __restrict__ v, float4* __restrict__ ema, size_t n4, AdamArgs a,
                         const OptimDeviceResult* __restrict__ res) {
  if (res->skip) return;
  const double clip = res->clip;
  GRID_STRIDE(i, n4) {
    float4 pp = p[i], gg = g[i], mm = m[i], vv = v[i], ee = make_float4(0.f, 0.f, 0.f, 0.f);
    if (a.use_ema) ee = ema[i];
    adam_one(pp.x, gg.x, mm.x, vv.x, ee.x, a, clip);
    adam_one(pp.y, gg.y, mm.y, vv.y, ee.y, a, clip);
    adam_one(pp.z, gg.z, mm.z, vv.z, ee.z, a, clip);
    adam_one(pp.w, gg.w, mm.w, vv.w, ee.w, a, clip);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
    if (a.use_ema) ema[i] = ee;
  }
}

// The tail (or unaligned buffers): adam_one per element, as the check pass.
__global__ void adamw_k(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                        float* __restrict__ v, float* __restrict__ ema, size_t n, AdamArgs a,
                        const OptimDeviceResult* __restrict__ res) {
  if (res->skip) return;  // a non-finite loss, gradient or update never reaches the weights
  const double clip = res->clip;
  GRID_STRIDE(i, n) {
    float pp = p[i], mm = m[i], vv = v[i], ee = a.use_ema ? ema[i] : 0.f;
    adam_one(pp, g[i], mm, vv, ee, a, clip);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
    if (a.use_ema) ema[i] = ee;
  }
}

// ---- one reverse sampling step (reference §5) -------------------------------------
struct StepArgs {
  int mode, add_noise, clip_x0, cfg, learn_sigma, guided_ch;
  double a, b, coef1, coef2, log_beta, plv, sqrt_abar_prev, eps_coef, sigma, guidance;
};

__global__ void sample_step_k(const float* __restrict__ out, float* __restrict__ x,
                              const float* __restrict__ noise, int N, int C, int HW, StepArgs s) {
  size_t per = (size_t)C * HW;
  int Cout = s.learn_sigma ? 2 * C : C;
  size_t total = (size_t)N * per;
  GRID_STRIDE(i, total) {
    int n = (int)(i / per);
    size_t e = i % per;
    const float* oc = out + (size_t)n * Cout * HW;
    double eps = oc[e];
    if (s.cfg && (int)(e / HW) < s.guided_ch) {
      double eu = out[(size_t)(N + n) * Cout * HW + e];
      eps = eu + s.guidance * (eps - eu);
    }
    double xv = x[i];
    double x0 = s.a * xv - s.b * eps;
    if (s.clip_x0) {
      x0 = fmin(1.0, fmax(-1.0, x0));
      // IDDPM's DDIM re-derives eps from the clipped x0_hat (as the CPU backend)
      if (s.mode == 1 && s.b != 0.0) eps = (s.a * xv - x0) / s.b;
    }
    double r;
    if (s.mode == 0) {
      double mu = s.coef1 * x0 + s.coef2 * xv;
      double lv = s.plv;
      if (s.learn_sigma) {
        double frac = 0.5 * ((double)oc[per + e] + 1.0);
        lv = frac * s.log_beta + (1.0 - frac) * s.plv;
      }
      r = mu;
      if (s.add_noise) r += exp(0.5 * lv) * (double)noise[i];
    } else {
      r = s.sqrt_abar_prev * x0 + s.eps_coef * eps;
      if (s.add_noise) r += s.sigma * (double)noise[i];
    }
    x[i] = (float)r;
  }
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------
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

void patchify(const float* src, float* dst, int N, int C, int H, int W, int p, PatchLayout layout,
              bool inverse, float*, cudaStream_t s) {
  size_t total = (size_t)N * C * H * W;
  if (!total) return;
  patchify_k<<<grid_for(total), kThreads, 0, s>>>(src, dst, N, C, H, W, p,
                                                  layout == PatchLayout::PPC ? 1 : 0, inverse);
  SPEED_CUDA_LAUNCH_CHECK(inverse ? "unpatchify" : "patchify");
}

// Rows per block of the one-pass backward kernels (norm_onepass.cuh says how they are chosen).
int norm_onepass_rows(int N, int L, int D) { return norm_onepass_rows_policy(N, L, D); }

size_t norm_onepass_scratch_floats(int N, int L, int D, int tr, int K) {
  if (N <= 0 || L <= 0 || D <= 0 || tr <= 0) return 0;
  if (((D + 3) / 4 + 31) / 32 * 32 > kMaxThreads1p) return 0;  // too wide even for float4
  return (size_t)N * ((L + tr - 1) / tr) * K * D;
}

void ln_modulate_forward(const float* x, const float* shift, const float* scale, int mod_stride,
                         float* y, float* mean, float* rstd, int N, int L, int D, float eps,
                         bool rowreg, cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  const int warps = 8;
  if (D % 4 == 0 && mod_stride % 4 == 0 && al16(x) && al16(y) && al16(shift) && al16(scale)) {
    const int D4 = D / 4, vpl = (D4 + 31) / 32;
    if (rowreg && vpl >= 1 && vpl <= kMaxVplReg) {  // (D = 0 keeps the default kernel)
      const unsigned grid = (unsigned)((rows + warps - 1) / warps);
      const float4* x4 = reinterpret_cast<const float4*>(x);
      float4* y4 = reinterpret_cast<float4*>(y);
      switch (vpl) {
#define SPEED_LN_FWD_REG(V)                                                                       \
  case V:                                                                                         \
    ln_mod_fwd_reg_k<V><<<grid, warps * 32, 0, s>>>(x4, shift, scale, mod_stride, y4, mean, rstd, \
                                                    N, L, D4, eps);                               \
    break;
        SPEED_LN_FWD_REG(1) SPEED_LN_FWD_REG(2) SPEED_LN_FWD_REG(3) SPEED_LN_FWD_REG(4)
        SPEED_LN_FWD_REG(5) SPEED_LN_FWD_REG(6) SPEED_LN_FWD_REG(7) SPEED_LN_FWD_REG(8)
        SPEED_LN_FWD_REG(9) SPEED_LN_FWD_REG(10) SPEED_LN_FWD_REG(11) SPEED_LN_FWD_REG(12)
#undef SPEED_LN_FWD_REG
      }
      SPEED_CUDA_LAUNCH_CHECK("ln_modulate_forward (float4, row in registers)");
      return;
    }
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
                          float* dscale, int N, int L, int D, bool accum_dx, int tr, float* part,
                          cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  if (part && tr > 0 && D > 0 && N <= 65535) {  // one pass (SPEED_CUDA_NORM_ONEPASS=1)
    const bool v4 = D % 4 == 0 && mod_stride % 4 == 0 && al16(dy) && al16(x) && al16(dx) &&
                    al16(scale) && al16(part);
    const int threads = ((v4 ? D / 4 : D) + 31) / 32 * 32;
    if (threads <= kMaxThreads1p) {
      const int P = (L + tr - 1) / tr;
      const dim3 grid(P, N);
      if (v4)
        ln_mod_bwd_1p_k<4><<<grid, threads, 0, s>>>(dy, x, mean, rstd, scale, mod_stride, dx, part,
                                                    L, D, tr, accum_dx);
      else
        ln_mod_bwd_1p_k<1><<<grid, threads, 0, s>>>(dy, x, mean, rstd, scale, mod_stride, dx, part,
                                                    L, D, tr, accum_dx);
      SPEED_CUDA_LAUNCH_CHECK(v4 ? "ln_modulate_backward (one pass, float4)"
                                 : "ln_modulate_backward (one pass)");
      colpart_sum_k<<<dim3((D + 127) / 128, N), 128, 0, s>>>(part, P, 2, D, dshift, dscale,
                                                            mod_stride);
      SPEED_CUDA_LAUNCH_CHECK("ln_modulate_backward (dshift, dscale from partials)");
      return;
    }
  }
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
                             float* dh, float* dgate, int N, int L, int D, int tr, float* part,
                             cudaStream_t s) {
  if (!N || !D) return;
  if (part && tr > 0 && L > 0 && D > 0 && N <= 65535) {  // one pass (SPEED_CUDA_NORM_ONEPASS=1)
    const bool v4 = D % 4 == 0 && mod_stride % 4 == 0 && al16(dx) && al16(gate) && al16(h) &&
                    al16(dh) && al16(part);
    const int threads = ((v4 ? D / 4 : D) + 31) / 32 * 32;
    if (threads <= kMaxThreads1p) {
      const int P = (L + tr - 1) / tr;
      const dim3 grid(P, N);
      if (v4)
        gated_res_bwd_1p_k<4><<<grid, threads, 0, s>>>(dx, gate, mod_stride, h, dh, part, L, D, tr);
      else
        gated_res_bwd_1p_k<1><<<grid, threads, 0, s>>>(dx, gate, mod_stride, h, dh, part, L, D, tr);
      SPEED_CUDA_LAUNCH_CHECK(v4 ? "gated_residual_backward (one pass, float4)"
                                 : "gated_residual_backward (one pass)");
      colpart_sum_k<<<dim3((D + 127) / 128, N), 128, 0, s>>>(part, P, 1, D, dgate, nullptr,
                                                            mod_stride);
      SPEED_CUDA_LAUNCH_CHECK("gated_residual_backward (dgate from partials)");
      return;
    }
  }
  gated_res_bwd_k<<<dim3((D + 31) / 32, N), dim3(32, 8), 0, s>>>(dx, gate, mod_stride, h, dh,
                                                                dgate, L, D);
  SPEED_CUDA_LAUNCH_CHECK("gated_residual_backward");
}

void timestep_embedding(const int32_t* t, float* out, int N, int dim, double max_period,
                        cudaStream_t s) {
  size_t total = (size_t)N * dim;
  if (!total) return;
  timestep_emb_k<<<grid_for(total), kThreads, 0, s>>>(t, out, N, dim, max_period);
  SPEED_CUDA_LAUNCH_CHECK("timestep_embedding");
}

void embedding_forward(const float* table, const int32_t* idx, float* out, int N, int D,
                       cudaStream_t s) {
  size_t total = (size_t)N * D;
  if (!total) return;
  embedding_fwd_k<<<grid_for(total), kThreads, 0, s>>>(table, idx, out, N, D);
  SPEED_CUDA_LAUNCH_CHECK("embedding_forward");
}

void embedding_backward(const float* dout, const int32_t* idx, float* dtable, int N, int D,
                        int rows, cudaStream_t s) {
  fill(dtable, 0.0f, (size_t)rows * D, s);
  if (!N || !D) return;
  embedding_bwd_k<<<(D + 127) / 128, 128, 0, s>>>(dout, idx, dtable, N, D);
  SPEED_CUDA_LAUNCH_CHECK("embedding_backward");
}

void normal(float* x, size_t n, uint64_t seed, uint64_t offset, cudaStream_t s) {
  if (!n) return;
  normal_k<<<grid_for((n + 3) / 4), kThreads, 0, s>>>(x, n, seed, offset);
  SPEED_CUDA_LAUNCH_CHECK("normal");
}

void q_sample(const float* x0, const float* eps, const int32_t* t,
              const DiffusionTablesView<float>& tab, float* xt, int N, size_t per_sample,
              cudaStream_t s) {
  size_t total = (size_t)N * per_sample;
  if (!total) return;
  q_sample_k<<<grid_for(total), kThreads, 0, s>>>(x0, eps, t, tab.sqrt_abar, tab.sqrt_1m_abar, xt,
                                                  N, per_sample);
  SPEED_CUDA_LAUNCH_CHECK("q_sample");
}

void iddpm_loss(const float* model_out, const float* x0, const float* xt, const float* eps,
                const int32_t* t, const float* weight, const DiffusionTablesView<float>& tab,
                double vb_scale, bool learn_sigma, float* loss, float* mse, float* vb, float* dout,
                int N, int C, int HW, cudaStream_t s) {
  if (N <= 0) return;
  LossTab lt{tab.sqrt_recip_abar, tab.sqrt_recipm1_abar, tab.coef1, tab.coef2, tab.log_beta,
             tab.post_log_var};
  iddpm_loss_k<<<N, 256, 0, s>>>(model_out, x0, xt, eps, t, weight, lt, vb_scale,
                                 learn_sigma ? 1 : 0, loss, mse, vb, dout, N, C, HW);
  SPEED_CUDA_LAUNCH_CHECK("iddpm_loss");
}

size_t optimizer_scratch_doubles() { return kNormBlocks; }

void optimizer_step(float* params, const float* grads, float* m, float* v, float* ema, size_t n,
                    const OptimHyper& hp, const float* losses, int N, double* scratch,
                    OptimDeviceResult* result, cudaStream_t s) {
  sumsq_k<<<kNormBlocks, kThreads, 0, s>>>(grads, n, scratch);
  SPEED_CUDA_LAUNCH_CHECK("optimizer_step(norm)");
  optim_finalize_k<<<1, kThreads, 0, s>>>(scratch, kNormBlocks, losses, N, hp.max_grad_norm, result);
  SPEED_CUDA_LAUNCH_CHECK("optimizer_step(finalize)");
  if (!n) return;
  AdamArgs a;
  const double step = (double)hp.step;
  a.lr_bc1 = hp.lr / (1.0 - std::pow(hp.beta1, step));
  a.inv_bc2 = 1.0 / (1.0 - std::pow(hp.beta2, step));
  a.beta1 = hp.beta1;
  a.beta2 = hp.beta2;
  a.eps = hp.eps;
  a.decay = 1.0 - hp.lr * hp.weight_decay;
  a.ema_decay = hp.ema_decay;
  a.use_ema = (ema != nullptr && hp.ema_decay >= 0.0) ? 1 : 0;
  const bool vec4 = al16(params) && al16(grads) && al16(m) && al16(v) && (!a.use_ema || al16(ema)) && n >= 4;
  {  // check pass: sets result->skip = 2 when the update would store a non-finite value
    const size_t n4 = vec4 ? n / 4 : 0, done = 4 * n4;
    if (n4) {
      adamw_check4_k<<<grid_for(n4), kThreads, 0, s>>>(
          reinterpret_cast<const float4*>(params), reinterpret_cast<const float4*>(grads),
          reinterpret_cast<const float4*>(m), reinterpret_cast<const float4*>(v),
          reinterpret_cast<const float4*>(a.use_ema ? ema : params), n4, a, result);
      SPEED_CUDA_LAUNCH_CHECK("optimizer_step(check, float4)");
    }
    if (done < n) {
      adamw_check_k<<<grid_for(n - done), kThreads, 0, s>>>(params + done, grads + done, m + done, v + done,
                                                             a.use_ema ? ema + done : ema, n - done, a, result);
      SPEED_CUDA_LAUNCH_CHECK("optimizer_step(check)");
    }
  }
  size_t done = 0;
  if (vec4) {
    const size_t n4 = n / 4;
    adamw4_k<<<grid_for(n4), kThreads, 0, s>>>(
        reinterpret_cast<float4*>(params), reinterpret_cast<const float4*>(grads),
        reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v),
        reinterpret_cast<float4*>(a.use_ema ? ema : params), n4, a, result);
    SPEED_CUDA_LAUNCH_CHECK("optimizer_step(adamw, float4)");
    done = 4 * n4;
  }
  if (done < n) {
    adamw_k<<<grid_for(n - done), kThreads, 0, s>>>(params + done, grads + done, m + done, v + done,
                                                     a.use_ema ? ema + done : ema, n - done, a, result);
    SPEED_CUDA_LAUNCH_CHECK("optimizer_step(adamw)");
  }
}

void sample_step(const float* model_out, float* x, const float* noise, int N, int C, int HW,
                 bool learn_sigma, const SampleStepCoefs& c, cudaStream_t s) {
  size_t total = (size_t)N * C * HW;
  if (!total) return;
  StepArgs a;
  a.mode = c.mode;
  a.add_noise = c.add_noise;
  a.clip_x0 = c.clip_x0;
  a.cfg = c.cfg;
  a.learn_sigma = learn_sigma;
  a.a = c.sqrt_recip_abar;
  a.b = c.sqrt_recipm1_abar;
  a.coef1 = c.coef1;
  a.coef2 = c.coef2;
  a.log_beta = c.log_beta;
  a.plv = c.post_log_var;
  a.sqrt_abar_prev = c.sqrt_abar_prev;
  a.eps_coef = c.eps_coef;
  a.sigma = c.sigma;
  a.guidance = c.guidance;
  a.guided_ch = c.guidance_channels > 0 && c.guidance_channels < C ? c.guidance_channels : C;
  sample_step_k<<<grid_for(total), kThreads, 0, s>>>(model_out, x, noise, N, C, HW, a);
  SPEED_CUDA_LAUNCH_CHECK("sample_step");
}

}  // namespace cuda
}  // namespace speed
