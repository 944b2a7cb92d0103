// Optimizer (backend.h "optimizer"): gradient-norm reduction -> finalize -> fused AdamW + clip +
// EMA, with a check pass so that no step stores a non-finite value.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

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

}  // namespace

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

}  // namespace cuda
}  // namespace speed
