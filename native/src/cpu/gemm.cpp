// GEMM: a built-in GotoBLAS-style kernel, or BLAS when linked and faster here:
//   for each NC-wide column block of B and KC-deep slice of K:
//     pack B[KC, NC] into NR-wide panels (shared by all threads),
//     each task packs an MC×KC block of A into MR-high panels (its own buffer)
//     and runs the MR×NR register-blocked micro-kernel over its part of C.
// Tasks partition C only; the K slices are visited in the same order by every
// partition, so results do not depend on the thread count.
//
// Which GEMM, and which micro-kernel, is decided at run time from the CPU, not at
// build time: the AVX-512 and AVX2 micro-kernels are compiled with target
// attributes whatever -march says, and the first call picks one with cpuid. Where
// the CPU has AVX-512 the built-in kernel is the default even when BLAS is linked:
// Debian's OpenBLAS 0.3.21 runs its AVX2 kernels on AMD Zen 4/5 (it predates them), and
// the built-in 8x32 AVX-512 kernel is faster per core there (`bench_vae_ops` prints both;
// native/bench/NOTES.md "CPU GEMM and convolution" has the rates). Elsewhere BLAS, when linked. SPEED_CPU_GEMM=builtin
// or =blas overrides the choice (bench, tests); both give results independent of
// the thread count.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPEED_X86 1
#endif

#include "speed/cpu.h"

#ifdef SPEED_HAVE_CBLAS
#include <cblas.h>
#endif

namespace speed {

namespace {

enum class Isa { Portable, Avx2, Avx512 };

// The CPU's best; SPEED_CPU_ISA=avx2|portable may lower it (never raise it), so that
// every micro-kernel is tested on an AVX-512 machine (ctest runs test_gemm three ways).
Isa detect_isa() {
  Isa isa = Isa::Portable;
#if defined(SPEED_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) isa = Isa::Avx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = Isa::Avx2;
#endif
  const char* e = std::getenv("SPEED_CPU_ISA");
  const std::string v = e ? e : "";
  if (v == "portable") isa = Isa::Portable;
  else if (v == "avx2" && isa == Isa::Avx512) isa = Isa::Avx2;
  else if (!v.empty() && v != "avx2" && v != "avx512")
    std::fprintf(stderr, "speed: SPEED_CPU_ISA=%s ignored: expected avx2 or portable (it can only lower the CPU's choice)\n", v.c_str());
  return isa;
}

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

constexpr bool have_blas() {
#ifdef SPEED_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}

// The default: SPEED_CPU_GEMM=builtin|blas, else builtin on AVX-512 CPUs, else BLAS if linked.
CpuGemm default_gemm() {
  static const CpuGemm d = [] {
    const char* e = std::getenv("SPEED_CPU_GEMM");
    const std::string v = e ? e : "";
    if (v == "builtin") return CpuGemm::Builtin;
    if (v == "blas" && have_blas()) return CpuGemm::Blas;
    if (v == "blas")
      std::fprintf(stderr, "speed: SPEED_CPU_GEMM=blas ignored: this build has no BLAS (SPEED_BLAS found none)\n");
    else if (!v.empty())
      std::fprintf(stderr, "speed: SPEED_CPU_GEMM=%s ignored: expected builtin or blas\n", v.c_str());
    if (!have_blas() || cpu_isa() == Isa::Avx512) return CpuGemm::Builtin;
    return CpuGemm::Blas;
  }();
  return d;
}

std::atomic<int> g_choice{static_cast<int>(CpuGemm::Auto)};

bool use_blas() {
  CpuGemm c = static_cast<CpuGemm>(g_choice.load(std::memory_order_relaxed));
  if (c == CpuGemm::Auto) c = default_gemm();
  return have_blas() && c == CpuGemm::Blas;
}

const char* isa_name() {
  switch (cpu_isa()) {
    case Isa::Avx512: return "builtin (avx512)";
    case Isa::Avx2: return "builtin (avx2)";
    default: return "builtin (portable)";
  }
}

}  // namespace

const char* cpu_gemm_name() {
#ifdef SPEED_HAVE_CBLAS
  if (use_blas()) {
    // SPEED_CBLAS_NAME is the library path CMake found; show its file name.
    static const std::string name = [] {
      std::string path = SPEED_CBLAS_NAME;
      size_t slash = path.find_last_of('/');
      return "blas (" + (slash == std::string::npos ? path : path.substr(slash + 1)) + ")";
    }();
    return name.c_str();
  }
#endif
  return isa_name();
}

bool cpu_have_blas() { return have_blas(); }
void cpu_set_gemm(CpuGemm which) { g_choice.store(static_cast<int>(which)); }
void cpu_force_builtin_gemm(bool on) { cpu_set_gemm(on ? CpuGemm::Builtin : CpuGemm::Auto); }

namespace cpu {

bool gemm_uses_blas() { return use_blas(); }

namespace {

// ---- micro-kernels: acc[MR*NR] = Σ_p a[p*MR + i] * b[p*NR + j] ---------------
// Each is called once per MR×NR block of C and kc-deep slice (never inlined into the
// generic code around it, so a target attribute costs one call per kc FMAs per lane).

template <typename T>
struct MicroPortable {  // fixed-size loops the compiler vectorises for the build's -march
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

#ifdef SPEED_X86
struct MicroAvx512 {  // 8×32: 16 zmm accumulators + 2 for B + 1 broadcast
  static constexpr int MR = 8, NR = 32;
  __attribute__((target("avx512f"), noinline)) static void run(int kc, const float* a, const float* b,
                                                                float* acc) {
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

struct MicroAvx2 {  // 6×16: 12 ymm accumulators + 2 for B + 1 broadcast
  static constexpr int MR = 6, NR = 16;
  __attribute__((target("avx2,fma"), noinline)) static void run(int kc, const float* a, const float* b,
                                                                 float* acc) {
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int p = 0; p < kc; ++p, a += MR, b += NR) {
      const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const __m256 x = _mm256_broadcast_ss(a + i);
        c[i][0] = _mm256_fmadd_ps(x, b0, c[i][0]);
        c[i][1] = _mm256_fmadd_ps(x, b1, c[i][1]);
      }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(acc + i * NR, c[i][0]);
      _mm256_storeu_ps(acc + i * NR + 8, c[i][1]);
    }
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

// packed_a: A already in pack_a's panels for every (KC slice, MC block), as
// gemm_pack_a lays it out: slice p0 at p0 * Mp, block i0 at + i0 * kc (Mp = M rounded
// up to MR). Then A / lda / ta are unused.
template <typename T, typename K_>
void builtin_with(ThreadPool* pool, bool ta, bool tb, int M, int N, int K, T alpha, const T* A,
                  int lda, const T* B, int ldb, T beta, T* C, int ldc, const T* packed_a = nullptr) {
  constexpr int MR = K_::MR, NR = K_::NR;
  const size_t Mp = static_cast<size_t>((M + MR - 1) / MR) * MR;
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
        const T* ap;
        if (packed_a) {
          ap = packed_a + static_cast<size_t>(p0) * Mp + static_cast<size_t>(i0) * kc;
        } else {
          T* buf = grow(abuf, static_cast<size_t>(MC + MR) * kc);
          pack_a<T, MR>(A, lda, ta, i0, mc, p0, kc, buf);
          ap = buf;
        }
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

template <typename K_>
struct Tag {
  using type = K_;
};

// Calls f(Tag<micro-kernel>) with the micro-kernel for this CPU (float: AVX-512,
// AVX2+FMA or portable; double: portable).
template <typename T, typename F>
decltype(auto) with_micro(F&& f) {
#ifdef SPEED_X86
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_isa() == Isa::Avx512) return f(Tag<MicroAvx512>{});
    if (cpu_isa() == Isa::Avx2) return f(Tag<MicroAvx2>{});
  }
#endif
  return f(Tag<MicroPortable<T>>{});
}

template <typename T>
void builtin(ThreadPool* pool, bool ta, bool tb, int M, int N, int K, T alpha, const T* A, int lda,
             const T* B, int ldb, T beta, T* C, int ldc) {
  with_micro<T>([&](auto tag) {
    builtin_with<T, typename decltype(tag)::type>(pool, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  });
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
size_t gemm_packed_a_size(int M, int K) {
  return with_micro<T>([&](auto tag) {
    constexpr int MR = decltype(tag)::type::MR;
    return static_cast<size_t>((std::max(M, 0) + MR - 1) / MR) * MR * static_cast<size_t>(std::max(K, 0));
  });
}

template <typename T>
void gemm_pack_a(ThreadPool* pool, bool trans_a, int M, int K, const T* A, int lda, T* dst) {
  with_micro<T>([&](auto tag) {
    constexpr int MR = decltype(tag)::type::MR;
    const size_t Mp = static_cast<size_t>((M + MR - 1) / MR) * MR;
    const int slices = (K + KC - 1) / KC, mb = (M + MC - 1) / MC;
    auto task = [&](int64_t t, int) {
      const int p0 = static_cast<int>(t / mb) * KC, i0 = static_cast<int>(t % mb) * MC;
      const int kc = std::min(KC, K - p0), mc = std::min(MC, M - i0);
      pack_a<T, MR>(A, lda, trans_a, i0, mc, p0, kc, dst + static_cast<size_t>(p0) * Mp + static_cast<size_t>(i0) * kc);
    };
    const int64_t n = static_cast<int64_t>(slices) * mb;
    if (pool) pool->run(n, task);
    else for (int64_t t = 0; t < n; ++t) task(t, 0);
  });
}

template <typename T>
void gemm_serial_packed_a(int M, int N, int K, T alpha, const T* packed_a, bool trans_b, const T* B, int ldb,
                          T beta, T* C, int ldc) {
  with_micro<T>([&](auto tag) {
    builtin_with<T, typename decltype(tag)::type>(nullptr, false, trans_b, M, N, K, alpha, nullptr, 0, B, ldb, beta,
                                                  C, ldc, packed_a);
  });
}

template size_t gemm_packed_a_size<float>(int, int);
template size_t gemm_packed_a_size<double>(int, int);
template void gemm_pack_a<float>(ThreadPool*, bool, int, int, const float*, int, float*);
template void gemm_pack_a<double>(ThreadPool*, bool, int, int, const double*, int, double*);
template void gemm_serial_packed_a<float>(int, int, int, float, const float*, bool, const float*, int, float, float*,
                                          int);
template void gemm_serial_packed_a<double>(int, int, int, double, const double*, bool, const double*, int, double,
                                           double*, int);

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
  if (use_blas() && K > 0) {
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
  if (use_blas() && K > 0) {
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
