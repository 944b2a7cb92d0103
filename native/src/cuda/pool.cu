// CUDA kernels of the Inception-v3 ops (backend.h, "Inception-v3 ops"): 2D max / average
// pooling, the global average pool, the bilinear resize to the network's 299x299 input and
// the channel copy that writes one branch (with its ReLU) into a concatenation. Plain
// kernels, one thread per output element; their semantics are the CPU backend's
// (native/src/cpu/conv.cpp), which the CUDA tests check them against. CUDA runtime only (no
// cuBLAS), so this file is compiled on machines without cuBLASLt too.
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

[[noreturn]] void fail(const char* op, const std::string& m) {
  throw Error(std::string("cuda backend: ") + op + ": " + m);
}

// y [planes, Ho, Wo] from x [planes, H, W]: the window of output (oy, ox) is rows
// [oy*stride - pad, + k) and columns [ox*stride - pad, + k), clipped to the input; padded
// positions take no part (max ignores them, the average divides by the in-bounds count:
// avg_pool2d's count_include_pad=False).
__global__ void pool2d_k(const float* __restrict__ x, float* __restrict__ y, size_t planes, int H, int W, int Ho,
                         int Wo, int k, int stride, int pad, bool is_max) {
  const size_t total = planes * Ho * Wo;
  GRID_STRIDE(i, total) {
    const int ox = (int)(i % Wo);
    const int oy = (int)((i / Wo) % Ho);
    const size_t p = i / ((size_t)Wo * Ho);
    const float* xp = x + p * H * W;
    const int y0 = max(0, oy * stride - pad), y1 = min(H, oy * stride - pad + k);
    const int x0 = max(0, ox * stride - pad), x1 = min(W, ox * stride - pad + k);
    if (is_max) {
      float m = xp[(size_t)y0 * W + x0];
      for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) m = fmaxf(m, xp[(size_t)iy * W + ix]);
      y[i] = m;
    } else {
      float s = 0.f;
      for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) s += xp[(size_t)iy * W + ix];
      // an exact division: --use_fast_math would make `/` approximate
      y[i] = __fdiv_rn(s, (float)((y1 - y0) * (x1 - x0)));
    }
  }
}

// y[p] = mean of x[p, :HW], summed in float64 in index order as the CPU backend does
__global__ void global_avg_pool_k(const float* __restrict__ x, float* __restrict__ y, size_t planes, int HW) {
  GRID_STRIDE(p, planes) {
    const float* xp = x + p * HW;
    double s = 0;
    for (int i = 0; i < HW; ++i) s += (double)xp[i];
    y[p] = (float)(s / HW);
  }
}

// F.interpolate(mode='bilinear', align_corners=False, antialias=False): the source
// coordinate of output o is (o + 0.5) * in / out - 0.5, clamped below at 0; i0 its floor
// (at most in - 1), i1 = min(i0 + 1, in - 1), the weight of i1 the fraction. `sy`, `sx` are
// in / out, divided on the host (exactly, in float as the CPU backend does).
__device__ __forceinline__ void tap(int o, int in, float scale, int& i0, int& i1, float& l1) {
  float src = __fsub_rn(__fmul_rn(scale, (float)o + 0.5f), 0.5f);
  if (src < 0.f) src = 0.f;
  i0 = min((int)src, in - 1);
  i1 = min(i0 + 1, in - 1);
  l1 = src - (float)i0;
}
__global__ void resize_bilinear_k(const float* __restrict__ x, float* __restrict__ y, size_t planes, int H, int W,
                                  int Ho, int Wo, float sy, float sx) {
  const size_t total = planes * Ho * Wo;
  GRID_STRIDE(i, total) {
    const int ox = (int)(i % Wo);
    const int oy = (int)((i / Wo) % Ho);
    const size_t p = i / ((size_t)Wo * Ho);
    int y0, y1, x0, x1;
    float b1, a1;
    tap(oy, H, sy, y0, y1, b1);
    tap(ox, W, sx, x0, x1, a1);
    const float b0 = 1.f - b1, a0 = 1.f - a1;
    const float* r0 = x + (p * H + y0) * W;
    const float* r1 = x + (p * H + y1) * W;
    y[i] = b0 * (a0 * r0[x0] + a1 * r0[x1]) + b1 * (a0 * r1[x0] + a1 * r1[x1]);
  }
}

// y[n, c_off + c, :] = x[n, c, :] (or its ReLU). x and y may be the same tensor (the
// in-place ReLU: Ctot == C, c_off == 0), so no __restrict__ here.
__global__ void channel_copy_k(const float* x, float* y, int C, size_t HW, int Ctot, int c_off, size_t total,
                               bool relu) {
  GRID_STRIDE(i, total) {
    const size_t j = i % HW;
    const size_t nc = i / HW;
    const size_t n = nc / C, c = nc % C;
    const float v = x[i];
    y[(n * Ctot + c_off + c) * HW + j] = relu ? fmaxf(v, 0.f) : v;
  }
}

}  // namespace

void pool2d(const float* x, float* y, int N, int C, int H, int W, int k, int stride, int pad, PoolMode mode,
            cudaStream_t s) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || k < 1 || stride < 1 || pad < 0 || pad >= k || H + 2 * pad < k ||
      W + 2 * pad < k)
    fail("pool2d_forward", "expected N >= 0, C, H, W, k, stride >= 1, 0 <= pad < k and the padded input at least "
                           "k x k; got N=" + std::to_string(N) + " C=" + std::to_string(C) + " H=" + std::to_string(H) +
                           " W=" + std::to_string(W) + " k=" + std::to_string(k) + " stride=" + std::to_string(stride) +
                           " pad=" + std::to_string(pad));
  if (mode != PoolMode::Max && mode != PoolMode::AvgExcludePad)
    fail("pool2d_forward", "unknown pool mode " + std::to_string(static_cast<int>(mode)));
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const size_t planes = (size_t)N * C, total = planes * Ho * Wo;
  if (!total) return;
  pool2d_k<<<grid_for(total), kThreads, 0, s>>>(x, y, planes, H, W, Ho, Wo, k, stride, pad, mode == PoolMode::Max);
  SPEED_CUDA_LAUNCH_CHECK("pool2d_forward");
}

void global_avg_pool(const float* x, float* y, int N, int C, int HW, cudaStream_t s) {
  if (N < 0 || C < 1 || HW < 1)
    fail("global_avg_pool", "expected N >= 0 and C, HW >= 1, got N=" + std::to_string(N) + " C=" + std::to_string(C) +
                                " HW=" + std::to_string(HW));
  const size_t planes = (size_t)N * C;
  if (!planes) return;
  global_avg_pool_k<<<grid_for(planes), kThreads, 0, s>>>(x, y, planes, HW);
  SPEED_CUDA_LAUNCH_CHECK("global_avg_pool");
}

void resize_bilinear(const float* x, float* y, int N, int C, int H, int W, int Ho, int Wo, cudaStream_t s) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || Ho < 1 || Wo < 1)
    fail("resize_bilinear", "expected N >= 0 and C, H, W, Ho, Wo >= 1, got N=" + std::to_string(N) + " C=" +
                                std::to_string(C) + " " + std::to_string(H) + "x" + std::to_string(W) + " -> " +
                                std::to_string(Ho) + "x" + std::to_string(Wo));
  const size_t planes = (size_t)N * C, total = planes * Ho * Wo;
  if (!total) return;
  const float sy = static_cast<float>(H) / static_cast<float>(Ho), sx = static_cast<float>(W) / static_cast<float>(Wo);
  resize_bilinear_k<<<grid_for(total), kThreads, 0, s>>>(x, y, planes, H, W, Ho, Wo, sy, sx);
  SPEED_CUDA_LAUNCH_CHECK("resize_bilinear");
}

void channel_copy(const float* x, float* y, int N, int C, int HW, int Ctot, int c_off, bool relu, cudaStream_t s) {
  if (N < 0 || C < 1 || HW < 1 || c_off < 0 || Ctot < c_off + C)
    fail("channel_copy", "expected N >= 0, C, HW >= 1 and 0 <= c_off, c_off + C <= Ctot; got N=" + std::to_string(N) +
                             " C=" + std::to_string(C) + " HW=" + std::to_string(HW) + " Ctot=" + std::to_string(Ctot) +
                             " c_off=" + std::to_string(c_off));
  const size_t total = (size_t)N * C * HW;
  if (!total || (x == y && Ctot == C && c_off == 0 && !relu)) return;  // a copy onto itself
  channel_copy_k<<<grid_for(total), kThreads, 0, s>>>(x, y, C, (size_t)HW, Ctot, c_off, total, relu);
  SPEED_CUDA_LAUNCH_CHECK("channel_copy");
}

}  // namespace cuda
}  // namespace speed
