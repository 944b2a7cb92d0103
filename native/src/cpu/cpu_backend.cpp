// The CPU backend: every op of speed::Backend<T> (include/speed/backend.h) for
// T = float and double, llm.c style: one plain function per op, layer by layer.
//
// Threading: each op splits its outputs into tasks of a fixed size (never derived
// from the thread count) and every reduction is done by one task in a fixed order,
// so results are bitwise identical for any number of threads.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "conv.h"
#include "fastmath.h"
#include "gemm.h"
#include "speed/backend.h"
#include "speed/cpu.h"
#include "speed/philox.h"
#include "threadpool.h"

namespace speed {
namespace cpu {
namespace {

constexpr int64_t kElemGrain = 1 << 14;  // elements per task in elementwise ops
constexpr double kSqrt2OverPi = 0.79788456080286535587989211986876;
constexpr double kGeluC = 0.044715;

// ---- small math helpers ---------------------------------------------------------

template <typename T>
inline T gelu(T x) {
  const T k = T(kSqrt2OverPi), c = T(kGeluC);
  return T(0.5) * x * (T(1) + vtanh(k * (x + c * x * x * x)));
}
template <typename T>
inline T gelu_grad(T x) {  // d/dx of the tanh-form GELU
  const T k = T(kSqrt2OverPi), c = T(kGeluC);
  T th = vtanh(k * (x + c * x * x * x));
  return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * k * (T(1) + T(3) * c * x * x);
}
template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Σ a[i]·b[i] with 8 independent partial sums: vectorisable, fixed order.
template <typename T>
inline T dot(const T* a, const T* b, int n) {
  T acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
inline T sum8(const T* a, int n) {
  T acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i];
  return s;
}

// Σ (a[i] - mu)² with 8 partial sums
template <typename T>
inline T sqdev8(const T* a, T mu, int n) {
  T acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += (a[i + j] - mu) * (a[i + j] - mu);
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += (a[i] - mu) * (a[i] - mu);
  return s;
}

// y += b (one row)
template <typename T>
inline void add_row(T* __restrict y, const T* __restrict b, const int n) {
  for (int j = 0; j < n; ++j) y[j] += b[j];
}
// pre = y + b (b may be null); y = gelu(pre): one pass over a Linear's output row
template <typename T>
inline void bias_gelu_row(T* __restrict y, T* __restrict pre, const T* __restrict b, const int n) {
  if (b)
    for (int j = 0; j < n; ++j) {
      const T u = y[j] + b[j];
      pre[j] = u;
      y[j] = gelu(u);
    }
  else
    for (int j = 0; j < n; ++j) {
      const T u = y[j];
      pre[j] = u;
      y[j] = gelu(u);
    }
}
template <typename T>
inline void gelu_grad_mul(T* __restrict dy, const T* __restrict pre, const int64_t n) {
  for (int64_t i = 0; i < n; ++i) dy[i] *= gelu_grad(pre[i]);
}

// max of a[0..n) with 16 partial maxima (vectorisable; max is exact, so order-free)
template <typename T>
inline T max8(const T* __restrict a, const int n) {
  T acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = a[0];
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] = a[i + j] > acc[j] ? a[i + j] : acc[j];
  for (; i < n; ++i) acc[0] = a[i] > acc[0] ? a[i] : acc[0];
  T m = acc[0];
  for (int j = 1; j < 16; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}
// s[i] = exp(s[i] - shift)
template <typename T>
inline void exp_shift(T* __restrict s, const T shift, const int n) {
  for (int i = 0; i < n; ++i) s[i] = vexp(s[i] - shift);
}
template <typename T>
inline void scale_inplace(T* __restrict s, const T f, const int n) {
  for (int i = 0; i < n; ++i) s[i] *= f;
}
// dp[i] = p[i] (dp[i] - d)
template <typename T>
inline void softmax_grad_row(T* __restrict dp, const T* __restrict p, const T d, const int n) {
  for (int i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - d);
}

inline void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("cpu backend: ") + op + ": " + what);
}

// One chunk of the fused clip + AdamW + EMA update. __restrict and no branch in
// the loop let the compiler vectorise it (the optimizer is memory-bound).
// Bias corrections are per-step scalars folded into lr_bc1 = lr / (1 - b1^t) and
// inv_bc2 = 1 / (1 - b2^t).
struct AdamCoefs {
  double clip, decay, b1, b2, lr_bc1, inv_bc2, eps, ema;
};
// Generic (float64, and the tail of float32): std::sqrt's errno branch keeps a
// loop that calls it scalar, so the update runs in blocks: vectorised moments, a
// short sqrt loop, vectorised parameter update.
//
// Write = false is the check pass of optimizer_step: the same arithmetic, term for
// term, on the same inputs, but nothing is stored; it returns whether every value the
// update would store (moments, parameters, EMA) is finite. Keeping both modes in one
// function is what makes the check exact: it cannot drift from the update.
// x - x is 0 for a finite x and NaN for an infinite or NaN one, so a sum of such
// differences is 0 exactly when everything was finite (no branch in the loop).
template <bool Write, typename T>
bool adamw_generic(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                   T* __restrict ema, size_t n, const AdamCoefs& k) {
  const double clip = k.clip, decay = k.decay, b1 = k.b1, b2 = k.b2, lr_bc1 = k.lr_bc1,
               inv_bc2 = k.inv_bc2, eps = k.eps, ed = k.ema;
  constexpr size_t blk = 256;
  double mb[blk], den[blk];
  T bad = T(0);
  for (size_t b0 = 0; b0 < n; b0 += blk) {
    const size_t w = std::min(blk, n - b0);
    T *pb = p + b0, *mp = m + b0, *vp = v + b0;
    const T* gb = g + b0;
    for (size_t i = 0; i < w; ++i) {
      const double gi = static_cast<double>(gb[i]) * clip;
      const double mi = b1 * static_cast<double>(mp[i]) + (1.0 - b1) * gi;
      const double vi = b2 * static_cast<double>(vp[i]) + (1.0 - b2) * gi * gi;
      if constexpr (Write) {
        mp[i] = T(mi);
        vp[i] = T(vi);
      } else {
        bad += (T(mi) - T(mi)) + (T(vi) - T(vi));
      }
      mb[i] = mi;
      den[i] = vi * inv_bc2;
    }
    for (size_t i = 0; i < w; ++i) den[i] = std::sqrt(den[i]) + eps;
    for (size_t i = 0; i < w; ++i) {
      const T pn = T(static_cast<double>(pb[i]) * decay - lr_bc1 * mb[i] / den[i]);
      if constexpr (Write) {
        pb[i] = pn;
      } else {
        bad += pn - pn;
        if (ema) {
          const T en = T(ed * static_cast<double>(ema[b0 + i]) + (1.0 - ed) * static_cast<double>(pn));
          bad += en - en;
        }
      }
    }
  }
  if constexpr (Write) {
    if (ema)
      for (size_t i = 0; i < n; ++i)
        ema[i] = T(ed * static_cast<double>(ema[i]) + (1.0 - ed) * static_cast<double>(p[i]));
  }
  return bad == T(0);
}

template <bool Write, typename T>
bool adamw_chunk(T* p, const T* g, T* m, T* v, T* ema, size_t n, const AdamCoefs& k) {
  return adamw_generic<Write, T>(p, g, m, v, ema, n, k);
}
#if defined(__AVX2__) && defined(__FMA__)
// float32: one pass in float32 arithmetic, 8 lanes (AVX2 + FMA); memory-bound,
// so each array is read once and written once. Any tail goes to the generic path.
// Write = false: the check pass (see adamw_generic), same intrinsics, no stores.
template <bool Write>
bool adamw_chunk_f32(float* p, const float* g, float* m, float* v, float* ema, size_t n,
                     const AdamCoefs& k) {
  const __m256 clip = _mm256_set1_ps(float(k.clip)), decay = _mm256_set1_ps(float(k.decay));
  const __m256 b1 = _mm256_set1_ps(float(k.b1)), c1 = _mm256_set1_ps(float(1.0 - k.b1));
  const __m256 b2 = _mm256_set1_ps(float(k.b2)), c2 = _mm256_set1_ps(float(1.0 - k.b2));
  const __m256 lr = _mm256_set1_ps(float(k.lr_bc1)), ibc2 = _mm256_set1_ps(float(k.inv_bc2));
  const __m256 eps = _mm256_set1_ps(float(k.eps));
  const __m256 ed = _mm256_set1_ps(float(k.ema)), ec = _mm256_set1_ps(float(1.0 - k.ema));
  __m256 bad = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), clip);
    const __m256 mi = _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(c1, gi));
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, ibc2)), eps);
    const __m256 pi = _mm256_fmsub_ps(_mm256_loadu_ps(p + i), decay,
                                      _mm256_div_ps(_mm256_mul_ps(lr, mi), den));
    if constexpr (Write) {
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      _mm256_storeu_ps(p + i, pi);
      if (ema) _mm256_storeu_ps(ema + i, _mm256_fmadd_ps(ed, _mm256_loadu_ps(ema + i), _mm256_mul_ps(ec, pi)));
    } else {
      bad = _mm256_add_ps(bad, _mm256_add_ps(_mm256_sub_ps(mi, mi), _mm256_sub_ps(vi, vi)));
      bad = _mm256_add_ps(bad, _mm256_sub_ps(pi, pi));
      if (ema) {
        const __m256 ei = _mm256_fmadd_ps(ed, _mm256_loadu_ps(ema + i), _mm256_mul_ps(ec, pi));
        bad = _mm256_add_ps(bad, _mm256_sub_ps(ei, ei));
      }
    }
  }
  bool ok = true;
  if constexpr (!Write) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, bad);
    for (float l : lanes) ok = ok && l == 0.0f;
  }
  if (i < n) ok = adamw_generic<Write, float>(p + i, g + i, m + i, v + i, ema ? ema + i : nullptr, n - i, k) && ok;
  return ok;
}
template <>
bool adamw_chunk<true, float>(float* p, const float* g, float* m, float* v, float* ema, size_t n,
                              const AdamCoefs& k) {
  return adamw_chunk_f32<true>(p, g, m, v, ema, n, k);
}
template <>
bool adamw_chunk<false, float>(float* p, const float* g, float* m, float* v, float* ema, size_t n,
                               const AdamCoefs& k) {
  return adamw_chunk_f32<false>(p, g, m, v, ema, n, k);
}
#endif

// Σ x[i]² in double over one chunk (fixed order: 16 lanes, then pairwise).
template <typename T>
double sumsq_chunk(const T* x, size_t n) {
  double acc[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}
#if defined(__AVX2__) && defined(__FMA__)
template <>
double sumsq_chunk<float>(const float* x, size_t n) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 u = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(x + i + 8);
    const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(u));
    const __m256d d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(u, 1));
    const __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(w));
    const __m256d d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  alignas(32) double acc[16];
  _mm256_store_pd(acc, a0);
  _mm256_store_pd(acc + 4, a1);
  _mm256_store_pd(acc + 8, a2);
  _mm256_store_pd(acc + 12, a3);
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}
#endif

// ---- the backend ------------------------------------------------------------------

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  explicit CpuBackend(int threads) : pool_(threads), scratch_(pool_.size()) {}

  std::string name() const override { return "cpu"; }

  // ---- memory -------------------------------------------------------------------
  void* alloc_bytes(size_t bytes) override {
    if (bytes == 0) bytes = 1;
    // 64-byte alignment for SIMD loads; aligned_alloc wants a multiple of it.
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p)
      throw Error("cpu backend: out of host memory allocating " + std::to_string(bytes) +
                  " bytes");
    return p;
  }
  void free_bytes(void* p) override { std::free(p); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }
  void fill(T* x, T value, size_t n) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t b, int64_t e, int) {
      std::fill(x + b, x + e, value);
    });
  }

  // ---- Linear -------------------------------------------------------------------
  void linear_forward(const T* x, const T* w, const T* b, T* y, T* pre, int M, int K,
                      int N, Act act) override {
    check(M >= 0 && K >= 0 && N >= 0, "linear_forward", "sizes must be >= 0");
    if (M == 0 || N == 0) return;
    gemm<T>(&pool_, false, true, M, N, K, T(1), x, K, w, K, T(0), y, N);
    if (!b && act == Act::None) return;
    parallel_for(pool_, M, std::max<int64_t>(1, kElemGrain / N), [&](int64_t r0, int64_t r1, int) {
      const int n = N;
      for (int64_t r = r0; r < r1; ++r) {
        T* yr = y + r * n;
        if (act == Act::GeluTanh) bias_gelu_row(yr, pre + r * n, b, n);
        else add_row(yr, b, n);
      }
    });
  }

  void linear_backward(const T* x, const T* w, T* dy, const T* pre, T* dx, T* dw, T* db,
                       int M, int K, int N, Act act, bool accum_dx) override {
    check(M >= 0 && K >= 0 && N >= 0, "linear_backward", "sizes must be >= 0");
    if (act == Act::GeluTanh) {  // dy <- dy * gelu'(pre)
      parallel_for(pool_, static_cast<int64_t>(M) * N, kElemGrain, [&](int64_t b, int64_t e, int) {
        gelu_grad_mul(dy + b, pre + b, e - b);
      });
    }
    if (dx) {
      if (N == 0) {
        if (!accum_dx) fill(dx, T(0), static_cast<size_t>(M) * K);
      } else {
        gemm<T>(&pool_, false, false, M, K, N, T(1), dy, N, w, K, accum_dx ? T(1) : T(0), dx, K);
      }
    }
    // dw[N,K] = dyᵀ x
    gemm<T>(&pool_, true, false, N, K, M, T(1), dy, N, x, K, T(0), dw, K);
    if (db) {  // column sums; each column block summed over rows in order by one task
      const int64_t cols = 64;
      parallel_for(pool_, N, cols, [&](int64_t j0, int64_t j1, int) {
        for (int64_t j = j0; j < j1; ++j) db[j] = T(0);
        for (int r = 0; r < M; ++r) {
          const T* d = dy + static_cast<size_t>(r) * N;
          for (int64_t j = j0; j < j1; ++j) db[j] += d[j];
        }
      });
    }
  }

  // ---- elementwise ----------------------------------------------------------------
  void silu_forward(const T* x, T* y, size_t n) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) y[i] = x[i] * sigmoid(x[i]);
    });
  }
  void silu_backward(const T* x, const T* dy, T* dx, size_t n, bool accum) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        T s = sigmoid(x[i]);
        T g = dy[i] * (s + x[i] * s * (T(1) - s));
        dx[i] = accum ? dx[i] + g : g;
      }
    });
  }
  void add(const T* a, const T* b, T* y, size_t n) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t s, int64_t e, int) {
      for (int64_t i = s; i < e; ++i) y[i] = a[i] + b[i];
    });
  }
  void add_rows(T* x, const T* row, size_t rows, size_t n) override {
    if (n == 0) return;
    parallel_for(pool_, rows, std::max<int64_t>(1, kElemGrain / static_cast<int64_t>(n)),
                 [&](int64_t r0, int64_t r1, int) {
                   for (int64_t r = r0; r < r1; ++r) {
                     T* xr = x + r * n;
                     for (size_t j = 0; j < n; ++j) xr[j] += row[j];
                   }
                 });
  }

  // ---- patches ------------------------------------------------------------------------
  // One (image, token) pair: visit the p*p*C values of a token in the layout's order.
  template <bool ToTokens>
  void patch_copy(const T* src, T* dst, int N, int C, int H, int W, int p,
                  PatchLayout layout, const char* op) {
    check(N >= 0 && C > 0 && p > 0 && H > 0 && W > 0, op, "N >= 0 and C, H, W, p > 0 expected");
    check(H % p == 0 && W % p == 0, op,
          "H and W must be multiples of the patch size p (got H=" + std::to_string(H) +
              ", W=" + std::to_string(W) + ", p=" + std::to_string(p) + ")");
    const int gh = H / p, gw = W / p, L = gh * gw, tokd = C * p * p;
    parallel_for(pool_, static_cast<int64_t>(N) * L, 16, [&](int64_t b, int64_t e, int) {
      for (int64_t nt = b; nt < e; ++nt) {
        const int n = static_cast<int>(nt / L), tkn = static_cast<int>(nt % L);
        const int gy = tkn / gw, gx = tkn % gw;
        const size_t tbase = static_cast<size_t>(nt) * tokd;
        for (int c = 0; c < C; ++c)
          for (int py = 0; py < p; ++py)
            for (int px = 0; px < p; ++px) {
              size_t pix = ((static_cast<size_t>(n) * C + c) * H + gy * p + py) * W + gx * p + px;
              size_t k = layout == PatchLayout::CPP ? (static_cast<size_t>(c) * p + py) * p + px
                                                    : (static_cast<size_t>(py) * p + px) * C + c;
              if (ToTokens) dst[tbase + k] = src[pix];
              else dst[pix] = src[tbase + k];
            }
      }
    });
  }
  void patchify(const T* img, T* tok, int N, int C, int H, int W, int p,
                PatchLayout layout) override {
    patch_copy<true>(img, tok, N, C, H, W, p, layout, "patchify");
  }
  void unpatchify(const T* tok, T* img, int N, int C, int H, int W, int p,
                  PatchLayout layout) override {
    patch_copy<false>(tok, img, N, C, H, W, p, layout, "unpatchify");
  }

  // ---- LayerNorm + adaLN modulation -------------------------------------------------
  void ln_modulate_forward(const T* x, const T* shift, const T* scale, int mod_stride, T* y,
                           T* mean, T* rstd, int N, int L, int D, double eps) override {
    check(D > 0, "ln_modulate_forward", "D must be > 0");
    parallel_for(pool_, static_cast<int64_t>(N) * L, std::max(1, 8192 / D),
                 [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const int n = static_cast<int>(r / L);
        const T* xr = x + r * D;
        const T* sh = shift + static_cast<size_t>(n) * mod_stride;
        const T* sc = scale + static_cast<size_t>(n) * mod_stride;
        // two passes: mean, then biased variance (stable when |mean| >> std)
        const T mu = sum8(xr, D) / T(D);
        const T var = sqdev8(xr, mu, D) / T(D);
        const T rs = T(1) / std::sqrt(var + T(eps));
        mean[r] = mu;
        rstd[r] = rs;
        T* yr = y + r * D;
        for (int i = 0; i < D; ++i) yr[i] = (xr[i] - mu) * rs * (T(1) + sc[i]) + sh[i];
      }
    });
  }

  void ln_modulate_backward(const T* dy, const T* x, const T* mean, const T* rstd,
                            const T* scale, int mod_stride, T* dx, T* dshift, T* dscale,
                            int N, int L, int D, bool accum_dx) override {
    check(D > 0, "ln_modulate_backward", "D must be > 0");
    // dx, row by row: g = dy (1 + scale); dx = rstd (g - mean(g) - xhat mean(g xhat))
    parallel_for(pool_, static_cast<int64_t>(N) * L, std::max(1, 8192 / D),
                 [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const int n = static_cast<int>(r / L);
        const T* sc = scale + static_cast<size_t>(n) * mod_stride;
        const T* xr = x + r * D;
        const T* dyr = dy + r * D;
        const T mu = mean[r], rs = rstd[r];
        // mean(g) and mean(g xhat) with 8 partial sums (vectorisable, fixed order)
        T a[8] = {}, c[8] = {};
        int i0 = 0;
        for (; i0 + 8 <= D; i0 += 8)
          for (int j = 0; j < 8; ++j) {
            const T g = dyr[i0 + j] * (T(1) + sc[i0 + j]);
            a[j] += g;
            c[j] += g * ((xr[i0 + j] - mu) * rs);
          }
        T sg = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        T sgx = ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));
        for (; i0 < D; ++i0) {
          const T g = dyr[i0] * (T(1) + sc[i0]);
          sg += g;
          sgx += g * ((xr[i0] - mu) * rs);
        }
        sg /= T(D);
        sgx /= T(D);
        T* dxr = dx + r * D;
        for (int i = 0; i < D; ++i) {
          T xh = (xr[i] - mu) * rs;
          T g = dyr[i] * (T(1) + sc[i]);
          T d = rs * (g - sg - xh * sgx);
          dxr[i] = accum_dx ? dxr[i] + d : d;
        }
      }
    });
    // dshift, dscale: per (sample, column block), summed over tokens in order
    constexpr int cols = 64;
    const int cb = (D + cols - 1) / cols;
    pool_.run(static_cast<int64_t>(N) * cb, [&](int64_t t, int) {
      const int n = static_cast<int>(t / cb), c0 = static_cast<int>(t % cb) * cols;
      const int c1 = std::min(D, c0 + cols);
      const int w = c1 - c0;
      T ash[cols] = {}, asc[cols] = {};  // local sums: no aliasing with the inputs
      for (int l = 0; l < L; ++l) {
        const size_t r = static_cast<size_t>(n) * L + l;
        const T* xr = x + r * D + c0;
        const T* dyr = dy + r * D + c0;
        const T mu = mean[r], rs = rstd[r];
        for (int i = 0; i < w; ++i) {
          ash[i] += dyr[i];
          asc[i] += dyr[i] * ((xr[i] - mu) * rs);
        }
      }
      T* dsh = dshift + static_cast<size_t>(n) * mod_stride + c0;
      T* dsc = dscale + static_cast<size_t>(n) * mod_stride + c0;
      for (int i = 0; i < w; ++i) {
        dsh[i] = ash[i];
        dsc[i] = asc[i];
      }
    });
  }

  // ---- gated residual -------------------------------------------------------------------
  void gated_residual_forward(T* x, const T* gate, int mod_stride, const T* h, int N, int L,
                              int D) override {
    parallel_for(pool_, static_cast<int64_t>(N) * L, std::max(1, 8192 / std::max(D, 1)),
                 [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* g = gate + static_cast<size_t>(r / L) * mod_stride;
        T* xr = x + r * D;
        const T* hr = h + r * D;
        for (int i = 0; i < D; ++i) xr[i] += g[i] * hr[i];
      }
    });
  }
  void gated_residual_backward(const T* dx, const T* gate, int mod_stride, const T* h, T* dh,
                               T* dgate, int N, int L, int D) override {
    parallel_for(pool_, static_cast<int64_t>(N) * L, std::max(1, 8192 / std::max(D, 1)),
                 [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* g = gate + static_cast<size_t>(r / L) * mod_stride;
        const T* dxr = dx + r * D;
        T* dhr = dh + r * D;
        for (int i = 0; i < D; ++i) dhr[i] = g[i] * dxr[i];
      }
    });
    constexpr int cols = 64;
    const int cb = (D + cols - 1) / cols;
    pool_.run(static_cast<int64_t>(N) * cb, [&](int64_t t, int) {
      const int n = static_cast<int>(t / cb), c0 = static_cast<int>(t % cb) * cols;
      const int c1 = std::min(D, c0 + cols);
      const int w = c1 - c0;
      T acc[cols] = {};
      for (int l = 0; l < L; ++l) {
        const size_t r = static_cast<size_t>(n) * L + l;
        const T* dxr = dx + r * D + c0;
        const T* hr = h + r * D + c0;
        for (int i = 0; i < w; ++i) acc[i] += dxr[i] * hr[i];
      }
      T* dg = dgate + static_cast<size_t>(n) * mod_stride + c0;
      for (int i = 0; i < w; ++i) dg[i] = acc[i];
    });
  }

  // ---- attention ---------------------------------------------------------------------------
  // One task per (sample, head). The GEMMs read q, k, v, o, dO in place through
  // their row strides and write out / dqkv in place; only the head's L×L scores
  // (and dP in backward) live in per-thread scratch. Each GEMM runs on the task's
  // thread (gemm_serial), so results do not depend on the thread count.
  T* scratch(int thread, size_t n) {
    auto& s = scratch_[thread];
    if (s.size() < n) s.resize(n);
    return s.data();
  }
  void reserve_scratch(size_t n) {  // grow every thread's buffer up front
    for (auto& s : scratch_)
      if (s.size() < n) s.resize(n);
  }

  void attention_forward(const T* qkv, T* out, T* lse, int N, int L, int heads,
                         int hd) override {
    check(N >= 0 && L > 0 && heads > 0 && hd > 0, "attention_forward",
          "L, heads and head_dim must be > 0");
    const int D = heads * hd, row = 3 * D;
    const T sc = T(1.0 / std::sqrt(static_cast<double>(hd)));
    const size_t need = static_cast<size_t>(L) * L;
    reserve_scratch(need);
    pool_.run(static_cast<int64_t>(N) * heads, [&](int64_t task, int th) {
      const int n = static_cast<int>(task / heads), h = static_cast<int>(task % heads);
      T* S = scratch(th, need);
      const T* q = qkv + static_cast<size_t>(n) * L * row + static_cast<size_t>(h) * hd;
      gemm_serial<T>(false, true, L, L, hd, sc, q, row, q + D, row, T(0), S, L);
      softmax_rows(S, lse + (static_cast<size_t>(n) * heads + h) * L, L);
      gemm_serial<T>(false, false, L, hd, L, T(1), S, L, q + 2 * D, row, T(0),
                     out + static_cast<size_t>(n) * L * D + static_cast<size_t>(h) * hd, D);
    });
  }
  // rows of S [L, L]: softmax in place, lse[i] = log Σ_j exp(S[i, j])
  static void softmax_rows(T* S, T* lse, const int L) {
    for (int i = 0; i < L; ++i) {
      T* s = S + static_cast<size_t>(i) * L;
      const T mx = max8(s, L);
      exp_shift(s, mx, L);
      const T sum = sum8(s, L);
      scale_inplace(s, T(1) / sum, L);
      lse[i] = mx + std::log(sum);
    }
  }

  void attention_backward(const T* qkv, const T* out, const T* dout, const T* lse, T* dqkv,
                          int N, int L, int heads, int hd) override {
    check(N >= 0 && L > 0 && heads > 0 && hd > 0, "attention_backward",
          "L, heads and head_dim must be > 0");
    const int D = heads * hd, row = 3 * D;
    const T sc = T(1.0 / std::sqrt(static_cast<double>(hd)));
    const size_t LL = static_cast<size_t>(L) * L;
    const size_t need = 2 * LL + L;
    reserve_scratch(need);
    pool_.run(static_cast<int64_t>(N) * heads, [&](int64_t task, int th) {
      const int n = static_cast<int>(task / heads), h = static_cast<int>(task % heads);
      T* P = scratch(th, need);
      T *dP = P + LL, *Drow = dP + LL;
      const size_t qoff = static_cast<size_t>(n) * L * row + static_cast<size_t>(h) * hd;
      const size_t ooff = static_cast<size_t>(n) * L * D + static_cast<size_t>(h) * hd;
      const T *q = qkv + qoff, *k = q + D, *v = q + 2 * D;
      const T *o = out + ooff, *dO = dout + ooff;
      T *dq = dqkv + qoff, *dk = dq + D, *dv = dq + 2 * D;
      // P = exp(q kᵀ scale - lse), recomputed from the saved log-sum-exp
      gemm_serial<T>(false, true, L, L, hd, sc, q, row, k, row, T(0), P, L);
      const T* lrow = lse + (static_cast<size_t>(n) * heads + h) * L;
      for (int i = 0; i < L; ++i) {
        exp_shift(P + static_cast<size_t>(i) * L, lrow[i], L);
        Drow[i] = dot(dO + static_cast<size_t>(i) * D, o + static_cast<size_t>(i) * D, hd);
      }
      gemm_serial<T>(true, false, L, hd, L, T(1), P, L, dO, D, T(0), dv, row);  // dV = Pᵀ dO
      gemm_serial<T>(false, true, L, L, hd, T(1), dO, D, v, row, T(0), dP, L);  // dP = dO Vᵀ
      for (int i = 0; i < L; ++i)  // dS = P ∘ (dP − D), in dP
        softmax_grad_row(dP + static_cast<size_t>(i) * L, P + static_cast<size_t>(i) * L, Drow[i], L);
      gemm_serial<T>(false, false, L, hd, L, sc, dP, L, k, row, T(0), dq, row);  // dQ = dS K s
      gemm_serial<T>(true, false, L, hd, L, sc, dP, L, q, row, T(0), dk, row);   // dK = dSᵀ Q s
    });
  }

  // ---- embeddings ---------------------------------------------------------------------------
  void timestep_embedding(const int32_t* t, T* out, int N, int dim,
                          double max_period) override {
    check(dim > 0, "timestep_embedding", "dim must be > 0");
    const int half = dim / 2;
    for (int n = 0; n < N; ++n) {
      T* o = out + static_cast<size_t>(n) * dim;
      for (int i = 0; i < half; ++i) {
        double f = std::exp(-std::log(max_period) * i / half);
        double a = static_cast<double>(t[n]) * f;
        o[i] = T(std::cos(a));
        o[half + i] = T(std::sin(a));
      }
      if (dim % 2) o[dim - 1] = T(0);  // DiT pads an odd dim with one zero column
    }
  }
  void embedding_forward(const T* table, const int32_t* idx, T* out, int N, int D) override {
    for (int n = 0; n < N; ++n) {
      check(idx[n] >= 0, "embedding_forward",
            "index " + std::to_string(idx[n]) + " at position " + std::to_string(n) + " is negative");
      std::memcpy(out + static_cast<size_t>(n) * D, table + static_cast<size_t>(idx[n]) * D,
                  D * sizeof(T));
    }
  }
  void embedding_backward(const T* dout, const int32_t* idx, T* dtable, int N, int D,
                          int rows) override {
    for (int n = 0; n < N; ++n)
      check(idx[n] >= 0 && idx[n] < rows, "embedding_backward",
            "index " + std::to_string(idx[n]) + " at position " + std::to_string(n) +
                " is outside [0, " + std::to_string(rows) + ")");
    std::fill(dtable, dtable + static_cast<size_t>(rows) * D, T(0));
    for (int n = 0; n < N; ++n) {  // in order of n: deterministic sums for repeated labels
      T* d = dtable + static_cast<size_t>(idx[n]) * D;
      const T* g = dout + static_cast<size_t>(n) * D;
      for (int i = 0; i < D; ++i) d[i] += g[i];
    }
  }

  // ---- noise -----------------------------------------------------------------------------
  void normal(T* x, size_t n, uint64_t seed, uint64_t offset) override {
    const int64_t blocks = static_cast<int64_t>(philox_blocks(n));
    parallel_for(pool_, blocks, 1024, [&](int64_t b0, int64_t b1, int) {
      double z[4];
      for (int64_t b = b0; b < b1; ++b) {
        philox_normal4(seed, offset + static_cast<uint64_t>(b), z);
        const size_t i0 = static_cast<size_t>(b) * 4;
        for (size_t j = 0; j < 4 && i0 + j < n; ++j) x[i0 + j] = T(z[j]);
      }
    });
  }

  // ---- diffusion -------------------------------------------------------------------------
  void check_t(const int32_t* t, int N, int steps, const char* op) {
    for (int n = 0; n < N; ++n)
      check(t[n] >= 0 && t[n] < steps, op,
            "time step " + std::to_string(t[n]) + " of sample " + std::to_string(n) +
                " is outside [0, " + std::to_string(steps) + ")");
  }

  void q_sample(const T* x0, const T* eps, const int32_t* t, const DiffusionTablesView<T>& tab,
                T* xt, int N, size_t per_sample) override {
    check_t(t, N, tab.steps, "q_sample");
    const int64_t total = static_cast<int64_t>(N) * static_cast<int64_t>(per_sample);
    parallel_for(pool_, total, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const int32_t ti = t[i / static_cast<int64_t>(per_sample)];
        xt[i] = tab.sqrt_abar[ti] * x0[i] + tab.sqrt_1m_abar[ti] * eps[i];
      }
    });
  }

  // IDDPM hybrid loss (Nichol & Dhariwal 2021: L_simple + vb_scale L_vb), per sample, in double.
  void iddpm_loss(const T* model_out, const T* x0, const T* xt, const T* eps, const int32_t* t,
                  const T* weight, const DiffusionTablesView<T>& tab, double vb_scale,
                  bool learn_sigma, T* loss, T* mse, T* vb, T* dout, int N, int C,
                  int HW) override {
    check(N > 0 && C > 0 && HW > 0, "iddpm_loss", "N, C and HW must be > 0");
    check_t(t, N, tab.steps, "iddpm_loss");
    const int Cout = learn_sigma ? 2 * C : C;
    const size_t per = static_cast<size_t>(C) * HW;
    const double inv_per = 1.0 / static_cast<double>(per), inv_n = 1.0 / N;
    const double inv_ln2 = 1.0 / std::log(2.0);
    pool_.run(N, [&](int64_t n, int) {
      const int ti = t[n];
      const T* eh = model_out + static_cast<size_t>(n) * Cout * HW;  // eps_hat
      const T* vv = eh + per;                                        // v (learn_sigma)
      const size_t off = static_cast<size_t>(n) * per;
      T* de = dout + static_cast<size_t>(n) * Cout * HW;
      T* dv = de + per;
      const double w = weight ? static_cast<double>(weight[n]) : 1.0;
      // mse = w mean (eps - eps_hat)^2
      double se = 0;
      for (size_t i = 0; i < per; ++i) {
        double d = static_cast<double>(eh[i]) - static_cast<double>(eps[off + i]);
        se += d * d;
        de[i] = T(2.0 * w * d * inv_per * inv_n);
      }
      const double mse_n = w * se * inv_per;
      double vb_n = 0;
      if (learn_sigma) {
        const double sra = tab.sqrt_recip_abar[ti], srm1 = tab.sqrt_recipm1_abar[ti];
        const double c1 = tab.coef1[ti], c2 = tab.coef2[ti];
        const double lb = tab.log_beta[ti], plv = tab.post_log_var[ti];
        const double dlv_dv = 0.5 * (lb - plv);  // lv2 = frac lb + (1-frac) plv, frac = (v+1)/2
        const double g = vb_scale * inv_per * inv_ln2 * inv_n;  // d(batch mean loss)/d(term)
        double acc = 0;
        for (size_t i = 0; i < per; ++i) {
          const double x = xt[off + i], x_0 = x0[off + i];
          const double x0_hat = sra * x - srm1 * static_cast<double>(eh[i]);  // eps_hat held constant
          const double mu2 = c1 * x0_hat + c2 * x;
          const double frac = (static_cast<double>(vv[i]) + 1.0) * 0.5;
          const double lv2 = frac * lb + (1.0 - frac) * plv;
          double term, dterm_dlv2;
          if (ti > 0) {  // KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
            const double mu1 = c1 * x_0 + c2 * x, lv1 = plv;
            const double dm = mu1 - mu2, e1 = std::exp(lv1 - lv2), e2 = std::exp(-lv2);
            term = 0.5 * (-1.0 + lv2 - lv1 + e1 + dm * dm * e2);
            dterm_dlv2 = 0.5 * (1.0 - e1 - dm * dm * e2);
          } else {  // -log of the discretized Gaussian likelihood of x_0
            decoder_nll(x_0, mu2, lv2, &term, &dterm_dlv2);
          }
          acc += term;
          dv[i] = T(g * dterm_dlv2 * dlv_dv);
        }
        vb_n = acc * inv_per * inv_ln2;
      }
      mse[n] = T(mse_n);
      vb[n] = T(vb_n);
      loss[n] = T(mse_n + vb_scale * vb_n);
    });
  }

  // tanh approximation of the standard normal CDF and its derivative (IDDPM)
  static double approx_cdf(double x, double* pdf) {
    const double u = kSqrt2OverPi * (x + kGeluC * x * x * x);
    const double th = std::tanh(u);
    *pdf = 0.5 * (1.0 - th * th) * kSqrt2OverPi * (1.0 + 3.0 * kGeluC * x * x);
    return 0.5 * (1.0 + th);
  }
  // nll = -log P(bin of x | N(mu, exp(lv))), bins of width 2/255 on [-1, 1], edge
  // bins open; probabilities clamped at 1e-12 (zero gradient when clamped).
  static void decoder_nll(double x, double mu, double lv, double* nll, double* dnll_dlv) {
    const double inv_std = std::exp(-0.5 * lv), cx = x - mu;
    const double plus_in = inv_std * (cx + 1.0 / 255.0), min_in = inv_std * (cx - 1.0 / 255.0);
    // d(in)/d(lv) = -0.5 in, since in ∝ exp(-lv/2)
    double pdf_p, pdf_m;
    const double cdf_p = approx_cdf(plus_in, &pdf_p), cdf_m = approx_cdf(min_in, &pdf_m);
    const double dp = pdf_p * (-0.5 * plus_in), dm = pdf_m * (-0.5 * min_in);
    double prob, dprob;
    if (x < -0.999) {
      prob = cdf_p;
      dprob = dp;
    } else if (x > 0.999) {
      prob = 1.0 - cdf_m;
      dprob = -dm;
    } else {
      prob = cdf_p - cdf_m;
      dprob = dp - dm;
    }
    if (prob > 1e-12) {
      *nll = -std::log(prob);
      *dnll_dlv = -dprob / prob;
    } else {
      *nll = -std::log(1e-12);
      *dnll_dlv = 0.0;
    }
  }

  // ---- optimizer ------------------------------------------------------------------------------
  OptimResult optimizer_step(T* params, const T* grads, T* m, T* v, T* ema, size_t n,
                             const OptimHyper& hp, const T* losses, int N) override {
    OptimResult res;
    // global norm: fixed-size chunks summed in double, combined in chunk order
    constexpr int64_t chunk = 1 << 16;
    const int64_t chunks = (static_cast<int64_t>(n) + chunk - 1) / chunk;
    std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
    pool_.run(chunks, [&](int64_t c, int) {
      const size_t b = static_cast<size_t>(c) * chunk, e = std::min(n, b + chunk);
      partial[c] = sumsq_chunk(grads + b, e - b);
    });
    double sq = 0;
    for (double p : partial) sq += p;
    res.grad_norm = std::sqrt(sq);
    bool finite = std::isfinite(res.grad_norm);
    for (int i = 0; i < N && finite; ++i) finite = std::isfinite(static_cast<double>(losses[i]));
    if (!finite) {
      res.skipped = true;
      return res;
    }
    const double clip = hp.max_grad_norm > 0
                            ? std::min(1.0, hp.max_grad_norm / (res.grad_norm + 1e-6))
                            : 1.0;
    const double step = static_cast<double>(hp.step);
    const double bc1 = 1.0 - std::pow(hp.beta1, step), bc2 = 1.0 - std::pow(hp.beta2, step);
    const double decay = 1.0 - hp.lr * hp.weight_decay;
    const AdamCoefs k{clip, decay, hp.beta1, hp.beta2, hp.lr / bc1, 1.0 / bc2, hp.eps, hp.ema_decay};
    const bool do_ema = ema && hp.ema_decay >= 0;
    // Check pass: would the update store anything non-finite (a huge lr, a v that
    // overflows, a state already damaged)? Then skip it, so that no weight is ever
    // touched. One more read of p, g, m, v (and EMA): 20 of the step's 60 bytes per
    // parameter (the norm pass reads 4, the update reads 20 and writes 16).
    std::vector<unsigned char> ok(static_cast<size_t>(chunks), 1);
    pool_.run(chunks, [&](int64_t c, int) {
      const size_t b = static_cast<size_t>(c) * chunk, e = std::min(n, b + chunk);
      ok[c] = adamw_chunk<false, T>(params + b, grads + b, m + b, v + b, do_ema ? ema + b : nullptr, e - b, k);
    });
    for (unsigned char f : ok)
      if (!f) {
        res.skipped = true;
        res.update_nonfinite = true;
        return res;
      }
    pool_.run(chunks, [&](int64_t c, int) {
      const size_t b = static_cast<size_t>(c) * chunk, e = std::min(n, b + chunk);
      adamw_chunk<true, T>(params + b, grads + b, m + b, v + b, do_ema ? ema + b : nullptr, e - b, k);
    });
    return res;
  }

  // ---- sampling -------------------------------------------------------------------------------
  void sample_step(const T* model_out, T* x, const T* noise, int N, int C, int HW,
                   bool learn_sigma, const SampleStepCoefs& k) override {
    check(N >= 0 && C > 0 && HW > 0, "sample_step", "C and HW must be > 0");
    check(!k.add_noise || noise, "sample_step", "add_noise is set but noise is null");
    check(k.guidance_channels >= 0, "sample_step", "guidance_channels must be >= 0");
    const int Cout = learn_sigma ? 2 * C : C;
    const size_t per = static_cast<size_t>(C) * HW;
    // eps elements [0, guided) of each image are guided (channel-major layout)
    const size_t guided = k.guidance_channels == 0 ? per
                          : static_cast<size_t>(std::min(k.guidance_channels, C)) * HW;
    const int64_t total = static_cast<int64_t>(N) * static_cast<int64_t>(per);
    parallel_for(pool_, total, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const size_t n = static_cast<size_t>(i) / per, j = static_cast<size_t>(i) % per;
        const T* cond = model_out + n * Cout * HW;
        double eps = cond[j];
        if (k.cfg && j < guided) {
          const double en = model_out[(n + N) * Cout * HW + j];
          eps = en + k.guidance * (eps - en);
        }
        const double xi = x[i];
        double x0 = k.sqrt_recip_abar * xi - k.sqrt_recipm1_abar * eps;
        if (k.clip_x0) {
          x0 = std::min(1.0, std::max(-1.0, x0));
          // IDDPM's DDIM re-derives eps from the clipped x0_hat
          if (k.mode == SampleStepCoefs::DDIM && k.sqrt_recipm1_abar != 0)
            eps = (k.sqrt_recip_abar * xi - x0) / k.sqrt_recipm1_abar;
        }
        double out;
        if (k.mode == SampleStepCoefs::DDIM) {
          out = k.sqrt_abar_prev * x0 + k.eps_coef * eps;
          if (k.add_noise) out += k.sigma * static_cast<double>(noise[i]);
        } else {
          double lv = k.post_log_var;
          if (learn_sigma) {
            const double frac = (static_cast<double>(cond[per + j]) + 1.0) * 0.5;
            lv = frac * k.log_beta + (1.0 - frac) * k.post_log_var;
          }
          out = k.coef1 * x0 + k.coef2 * xi;
          if (k.add_noise) out += std::exp(0.5 * lv) * static_cast<double>(noise[i]);
        }
        x[i] = T(out);
      }
    });
  }

  // ---- VAE ops (native/src/cpu/conv.cpp) ------------------------------------------------
  void conv2d_forward(const T* x, const T* w, const T* b, T* y, const Conv2dShape& s,
                      bool accum) override {
    conv2d_cpu<T>(pool_, scratch_, conv_shared_, x, w, b, y, s, accum);
  }
  void group_norm_forward(const T* x, const T* gamma, const T* beta, T* y, int N, int C, int HW,
                          int groups, double eps, bool silu) override {
    group_norm_cpu<T>(pool_, x, gamma, beta, y, N, C, HW, groups, eps, silu);
  }
  void upsample_nearest2x(const T* x, T* y, int N, int C, int H, int W) override {
    upsample_nearest2x_cpu<T>(pool_, x, y, N, C, H, W);
  }
  void transpose_batched(const T* x, T* y, int B, int R, int C) override {
    transpose_batched_cpu<T>(pool_, x, y, B, R, C);
  }
  void gaussian_sample(const T* moments, const T* eps, T* z, int N, int C, int HW) override {
    gaussian_sample_cpu<T>(pool_, moments, eps, z, N, C, HW);
  }

  // ---- Inception-v3 ops (native/src/cpu/conv.cpp) ----------------------------------------
  void pool2d_forward(const T* x, T* y, int N, int C, int H, int W, int k, int stride, int pad,
                      PoolMode mode) override {
    pool2d_cpu<T>(pool_, x, y, N, C, H, W, k, stride, pad, mode);
  }
  void global_avg_pool(const T* x, T* y, int N, int C, int HW) override {
    global_avg_pool_cpu<T>(pool_, x, y, N, C, HW);
  }
  void resize_bilinear(const T* x, T* y, int N, int C, int H, int W, int Ho, int Wo) override {
    resize_bilinear_cpu<T>(pool_, x, y, N, C, H, W, Ho, Wo);
  }
  void channel_copy(const T* x, T* y, int N, int C, int HW, int Ctot, int c_off, bool relu) override {
    channel_copy_cpu<T>(pool_, x, y, N, C, HW, Ctot, c_off, relu);
  }

  // ---- CNN classifier training ops (native/src/cpu/conv.cpp) --------------------------------
  void conv2d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, const Conv2dShape& s) override {
    conv2d_backward_cpu<T>(pool_, scratch_, conv_shared_, x, w, dy, dx, dw, db, s);
  }
  void relu_forward(const T* x, T* y, size_t n) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
    });
  }
  void relu_backward(const T* y, const T* dy, T* dx, size_t n) override {
    parallel_for(pool_, n, kElemGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
    });
  }

 private:
  ThreadPool pool_;
  std::vector<std::vector<T>> scratch_;  // per-thread scratch (attention, conv tiles)
  std::vector<T> conv_shared_;           // Winograd-transformed conv weights / dw partials of one call
};

}  // namespace
}  // namespace cpu

template <typename T>
std::shared_ptr<Backend<T>> make_cpu_backend(int threads) {
  return std::make_shared<cpu::CpuBackend<T>>(threads);
}
template std::shared_ptr<Backend<float>> make_cpu_backend<float>(int);
template std::shared_ptr<Backend<double>> make_cpu_backend<double>(int);

}  // namespace speed
