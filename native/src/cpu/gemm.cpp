// GEMM: BLAS when available, else a built-in GotoBLAS-style kernel:
//   for each NC-wide column block of B and KC-deep slice of K:
//     pack B[KC, NC] into NR-wide panels (shared by all threads),
//     each task packs an MC×KC block of A into MR-high panels (its own buffer)
//     and runs the MR×NR register-blocked micro-kernel over its part of C.
// Tasks partition C only; the K slices are visited in the same order by every
// partition, so results do not depend on the thread count.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "speed/cpu.h"

#ifdef SPEED_HAVE_CBLAS
#include <cblas.h>
#endif

namespace speed {

namespace {
std::atomic<bool> g_force_builtin{false};
}

const char* cpu_gemm_name() {
#ifdef SPEED_HAVE_CBLAS
  if (!g_force_builtin.load()) {
    // SPEED_CBLAS_NAME is the library path CMake found; show its file name.
    static const std::string name = [] {
      std::string path = SPEED_CBLAS_NAME;
      size_t slash = path.find_last_of('/');
      return "blas (" + (slash == std::string::npos ? path : path.substr(slash + 1)) + ")";
    }();
    return name.c_str();
  }
#endif
  return "builtin";
}

void cpu_force_builtin_gemm(bool on) { g_force_builtin.store(on); }

namespace cpu {

bool gemm_uses_blas() {
#ifdef SPEED_HAVE_CBLAS
  return !g_force_builtin.load();
#else
  return false;
#endif
}

namespace {

// ---- micro-kernels: acc[MR*NR] = Σ_p a[p*MR + i] * b[p*NR + j] ---------------

template <typename T>
struct Micro {  // portable: fixed-size loops the compiler vectorises
  static constexpr int MR = 4, NR = 8;
  static void run(int kc, const T* a, const T* b, T* acc) {
    T c[MR][NR] = {};
    for (int p = 0; p < kc; ++p, a += MR, b += NR)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i][j] += a[i] * b[j];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i * NR + j] = c[i][j];
  }
};

#if defined(__AVX512F__)
template <>
struct Micro<float> {  // 8×32: 16 zmm accumulators + 2 for B + 1 broadcast
  static constexpr int MR = 8, NR = 32;
  static void run(int kc, const float* a, const float* b, float* acc) {
    __m512 c[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; ++p, a += MR, b += NR) {
      const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 x = _mm512_set1_ps(a[i]);
        c[i][0] = _mm512_fmadd_ps(x, b0, c[i][0]);
        c[i][1] = _mm512_fmadd_ps(x, b1, c[i][1]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      _mm512_storeu_ps(acc + i * NR, c[i][0]);
      _mm512_storeu_ps(acc + i * NR + 16, c[i][1]);
    }
  }
};
#elif defined(__AVX2__) && defined(__FMA__)
template <>
struct Micro<float> {  // 6×16: 12 ymm accumulators + 2 for B + 1 broadcast
  static constexpr int MR = 6, NR = 16;
  static void run(int kc, const float* a, const float* b, float* acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
           c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int p = 0; p < kc; ++p, a += 6, b += 16) {
      __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), x;
      x = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
      x = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
      x = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
      x = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
      x = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
      x = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    _mm256_storeu_ps(acc + 0, c00);  _mm256_storeu_ps(acc + 8, c01);
    _mm256_storeu_ps(acc + 16, c10); _mm256_storeu_ps(acc + 24, c11);
    _mm256_storeu_ps(acc + 32, c20); _mm256_storeu_ps(acc + 40, c21);
    _mm256_storeu_ps(acc + 48, c30); _mm256_storeu_ps(acc + 56, c31);
    _mm256_storeu_ps(acc + 64, c40); _mm256_storeu_ps(acc + 72, c41);
    _mm256_storeu_ps(acc + 80, c50); _mm256_storeu_ps(acc + 88, c51);
  }
};
#endif

constexpr int KC = 256;   // K slice: an A panel column + a B panel row stay in L1
constexpr int MC = 96;    // A block (MC×KC) stays in L2
constexpr int NC = 3072;  // B block (KC×NC) stays in L3

template <typename T>
inline T at(const T* X, int ld, bool trans, int r, int c) {
  return trans ? X[static_cast<size_t>(c) * ld + r] : X[static_cast<size_t>(r) * ld + c];
}

// A rows [i0, i0+mc), K [p0, p0+kc) -> MR-high panels, zero-padded.
template <typename T, int MR>
void pack_a(const T* A, int lda, bool trans, int i0, int mc, int p0, int kc, T* dst) {
  for (int r = 0; r < mc; r += MR, dst += static_cast<size_t>(MR) * kc) {
    int mr = std::min(MR, mc - r);
    if (!trans) {
      for (int i = 0; i < MR; ++i) {
        if (i < mr) {
          const T* src = A + static_cast<size_t>(i0 + r + i) * lda + p0;
          for (int p = 0; p < kc; ++p) dst[p * MR + i] = src[p];
        } else {
          for (int p = 0; p < kc; ++p) dst[p * MR + i] = T(0);
        }
      }
    } else {
      for (int p = 0; p < kc; ++p) {
        const T* src = A + static_cast<size_t>(p0 + p) * lda + i0 + r;
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < mr ? src[i] : T(0);
      }
    }
  }
}

// B K [p0, p0+kc), columns [j0 + s*NR, ...) for panels s in [s0, s1) -> NR-wide panels.
template <typename T, int NR>
void pack_b(const T* B, int ldb, bool trans, int p0, int kc, int j0, int nc, int s0,
            int s1, T* dst) {
  for (int s = s0; s < s1; ++s) {
    T* d = dst + static_cast<size_t>(s) * NR * kc;
    int j = s * NR, nr = std::min(NR, nc - j);
    if (!trans) {
      for (int p = 0; p < kc; ++p) {
        const T* src = B + static_cast<size_t>(p0 + p) * ldb + j0 + j;
        for (int q = 0; q < NR; ++q) d[p * NR + q] = q < nr ? src[q] : T(0);
      }
    } else {
      for (int q = 0; q < NR; ++q) {
        if (q < nr) {
          const T* src = B + static_cast<size_t>(j0 + j + q) * ldb + p0;
          for (int p = 0; p < kc; ++p) d[p * NR + q] = src[p];
        } else {
          for (int p = 0; p < kc; ++p) d[p * NR + q] = T(0);
        }
      }
    }
  }
}

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

template <typename T>
void builtin(ThreadPool* pool, bool ta, bool tb, int M, int N, int K, T alpha, const T* A,
             int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  using K_ = Micro<T>;
  constexpr int MR = K_::MR, NR = K_::NR;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {  // C = beta C
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        T& c = C[static_cast<size_t>(i) * ldc + j];
        c = beta == T(0) ? T(0) : beta * c;
      }
    return;
  }
  static thread_local std::vector<T> bbuf;  // the caller's packed B block
  const int threads = pool ? pool->size() : 1;
  for (int j0 = 0; j0 < N; j0 += NC) {
    const int nc = std::min(NC, N - j0);
    const int panels = (nc + NR - 1) / NR;
    for (int p0 = 0; p0 < K; p0 += KC) {
      const int kc = std::min(KC, K - p0);
      const bool first = p0 == 0;
      T* bp = grow(bbuf, static_cast<size_t>(panels) * NR * kc);
      // pack B, 8 panels per task
      const int per = 8, btasks = (panels + per - 1) / per;
      auto pack_task = [&](int64_t t, int) {
        int s0 = static_cast<int>(t) * per, s1 = std::min(panels, s0 + per);
        pack_b<T, NR>(B, ldb, tb, p0, kc, j0, nc, s0, s1, bp);
      };
      if (pool) pool->run(btasks, pack_task);
      else for (int t = 0; t < btasks; ++t) pack_task(t, 0);

      // compute: MC row blocks × column groups; enough tasks to balance threads
      const int mb = (M + MC - 1) / MC;
      int ng = 1;
      while (mb * ng < 4 * threads && ng * 2 <= panels) ng *= 2;
      const int per_group = (panels + ng - 1) / ng;
      auto compute_task = [&](int64_t t, int) {
        static thread_local std::vector<T> abuf;
        const int ib = static_cast<int>(t % mb), g = static_cast<int>(t / mb);
        const int i0 = ib * MC, mc = std::min(MC, M - i0);
        const int s0 = g * per_group, s1 = std::min(panels, s0 + per_group);
        if (s0 >= s1) return;
        T* ap = grow(abuf, static_cast<size_t>(MC + MR) * kc);
        pack_a<T, MR>(A, lda, ta, i0, mc, p0, kc, ap);
        alignas(64) T acc[MR * NR];
        for (int s = s0; s < s1; ++s) {
          const T* bpanel = bp + static_cast<size_t>(s) * NR * kc;
          const int j = j0 + s * NR, nr = std::min(NR, N - j);
          for (int r = 0; r < mc; r += MR) {
            const int mr = std::min(MR, mc - r);
            K_::run(kc, ap + static_cast<size_t>(r) * kc, bpanel, acc);
            for (int i = 0; i < mr; ++i) {
              T* c = C + static_cast<size_t>(i0 + r + i) * ldc + j;
              const T* a = acc + i * NR;
              if (!first)
                for (int q = 0; q < nr; ++q) c[q] += alpha * a[q];
              else if (beta == T(0))
                for (int q = 0; q < nr; ++q) c[q] = alpha * a[q];
              else
                for (int q = 0; q < nr; ++q) c[q] = beta * c[q] + alpha * a[q];
            }
          }
        }
      };
      if (pool) pool->run(static_cast<int64_t>(mb) * ng, compute_task);
      else for (int64_t t = 0; t < static_cast<int64_t>(mb) * ng; ++t) compute_task(t, 0);
    }
  }
}

#ifdef SPEED_HAVE_CBLAS
// OpenBLAS's own threading splits the K loop differently for different thread
// counts (measured: 1 and 2 threads give different bits for 300×257×600), so it
// runs single-threaded and we split C into tiles (from the shape alone) over our pool:
// each tile is one single-threaded BLAS call whatever the thread count.
void blas_single_thread() {
#if defined(OPENBLAS_VERSION) || defined(OPENBLAS_THREAD)
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
#endif
}
inline void blas(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void blas(bool ta, bool tb, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif

}  // namespace

template <typename T>
void gemm_builtin(ThreadPool* pool, bool trans_a, bool trans_b, int M, int N, int K,
                  T alpha, const T* A, int lda, const T* B, int ldb, T beta, T* C,
                  int ldc) {
  builtin<T>(pool, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm(ThreadPool* pool, bool trans_a, bool trans_b, int M, int N, int K, T alpha,
          const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  if (M <= 0 || N <= 0) return;
#ifdef SPEED_HAVE_CBLAS
  if (!g_force_builtin.load(std::memory_order_relaxed) && K > 0) {
    blas_single_thread();
    // Tiles up to 512×512 (each BLAS call packs its A rows and B columns once:
    // bigger tiles pack less; DiT-S/2 B=8 train step, 1 thread: -4% CPU time vs
    // 256×256), halved until there are at least 8 tiles for load balance. The
    // tiles depend on the shape alone, never on the thread count.
    int TM = 512, TN = 512;
    while (((M + TM - 1) / TM) * ((N + TN - 1) / TN) < 8 && (TM > 128 || TN > 128)) {
      if (TM >= TN && TM > 128) TM /= 2;
      else if (TN > 128) TN /= 2;
      else TM /= 2;
    }
    const int tm = (M + TM - 1) / TM, tn = (N + TN - 1) / TN;
    auto tile = [&](int64_t t, int) {
      const int i0 = static_cast<int>(t / tn) * TM, j0 = static_cast<int>(t % tn) * TN;
      const T* a = trans_a ? A + i0 : A + static_cast<size_t>(i0) * lda;
      const T* b = trans_b ? B + static_cast<size_t>(j0) * ldb : B + j0;
      blas(trans_a, trans_b, std::min(TM, M - i0), std::min(TN, N - j0), K, alpha, a, lda, b,
           ldb, beta, C + static_cast<size_t>(i0) * ldc + j0, ldc);
    };
    if (pool) pool->run(static_cast<int64_t>(tm) * tn, tile);
    else for (int64_t t = 0; t < static_cast<int64_t>(tm) * tn; ++t) tile(t, 0);
    return;
  }
#endif
  builtin<T>(pool, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A,
                 int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  if (M <= 0 || N <= 0) return;
#ifdef SPEED_HAVE_CBLAS
  if (!g_force_builtin.load(std::memory_order_relaxed) && K > 0) {
    blas_single_thread();
    blas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  builtin<T>(nullptr, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
template void gemm_serial<float>(bool, bool, int, int, int, float, const float*, int,
                                 const float*, int, float, float*, int);
template void gemm_serial<double>(bool, bool, int, int, int, double, const double*, int,
                                  const double*, int, double, double*, int);

template void gemm<float>(ThreadPool*, bool, bool, int, int, int, float, const float*, int,
                          const float*, int, float, float*, int);
template void gemm<double>(ThreadPool*, bool, bool, int, int, int, double, const double*,
                           int, const double*, int, double, double*, int);
template void gemm_builtin<float>(ThreadPool*, bool, bool, int, int, int, float,
                                  const float*, int, const float*, int, float, float*, int);
template void gemm_builtin<double>(ThreadPool*, bool, bool, int, int, int, double,
                                   const double*, int, const double*, int, double, double*,
                                   int);

}  // namespace cpu
}  // namespace speed
