#include <array>
#include <cstring>
#include <stdexcept>
// GEMM: the built-in kernel and BLAS (when built with it) against a naive triple
// loop in double, for odd sizes, every transpose combination, leading dimensions
// larger than the row, alpha/beta; identical bits for 1, 2 and 3 threads; and the
// float32 rate for 1024³ with 2 threads (printed, not asserted).
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <cmath>
#include <vector>

#include "../src/cpu/gemm.h"
#include "cpu_test_util.h"
#include "speed/cpu.h"

using namespace cputest;
using speed::cpu::ThreadPool;

namespace {

template <typename T>
std::vector<double> naive(bool ta, bool tb, int M, int N, int K, double alpha, const std::vector<T>& A,
                          int lda, const std::vector<T>& B, int ldb, double beta, const std::vector<T>& C,
                          int ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) {
        double a = ta ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
        double b = tb ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
        s += a * b;
      }
      double& c = out[size_t(i) * ldc + j];
      c = alpha * s + (beta == 0 ? 0 : beta * c);
    }
  return out;
}

enum class Path { Builtin, Blas, BuiltinSerial, PackedA };

template <typename T>
void run(Path path, ThreadPool* pool, bool ta, bool tb, int M, int N, int K, T alpha, const T* A, int lda,
         const T* B, int ldb, T beta, T* C, int ldc) {
  if (path == Path::PackedA) {  // A packed once (as a conv packs its weights), then the serial kernel
    std::vector<T> packed(speed::cpu::gemm_packed_a_size<T>(M, K) + 1);
    packed.back() = T(12345);  // the packing must stay inside gemm_packed_a_size
    speed::cpu::gemm_pack_a<T>(pool, ta, M, K, A, lda, packed.data());
    if (packed.back() != T(12345)) throw std::runtime_error("gemm_pack_a wrote past gemm_packed_a_size");
    speed::cpu::gemm_serial_packed_a<T>(M, N, K, alpha, packed.data(), tb, B, ldb, beta, C, ldc);
  } else if (path == Path::Blas) {
    speed::cpu_set_gemm(speed::CpuGemm::Blas);
    speed::cpu::gemm<T>(pool, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    speed::cpu::gemm_builtin<T>(path == Path::Builtin ? pool : nullptr, ta, tb, M, N, K, alpha, A, lda,
                                B, ldb, beta, C, ldc);
  }
}

template <typename T>
void check_sizes(Path path, ThreadPool& pool, Rng& rng, const char* tname, double tol) {
  const char* pname = path == Path::Blas      ? "blas"
                      : path == Path::Builtin ? "builtin"
                      : path == Path::PackedA ? "builtin, A packed once"
                                              : "builtin serial";
  const int sizes[][3] = {{1, 1, 1},    {1, 7, 33},   {7, 1, 65},   {33, 65, 7},  {65, 33, 129},
                          {129, 7, 300}, {6, 16, 256}, {97, 130, 513}, {5, 3100, 3}};
  int fails = 0, count = 0;
  double worst = 0;
  for (auto& s : sizes)
    for (int tr = 0; tr < 4; ++tr) {
      const int M = s[0], N = s[1], K = s[2];
      const bool ta = tr & 1, tb = tr & 2;
      const int pad = 3;  // leading dimensions wider than the rows
      const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
      auto A = rng.vec<T>(size_t(ta ? K : M) * lda), B = rng.vec<T>(size_t(tb ? N : K) * ldb);
      for (double beta : {0.0, 1.0, 0.5}) {
        auto C = rng.vec<T>(size_t(M) * ldc);
        if (beta == 0) poison(C);  // beta = 0 must not read C
        const double alpha = beta == 0.5 ? 1.5 : 1.0;
        auto want = naive(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        auto got = C;
        run<T>(path, &pool, ta, tb, M, N, K, T(alpha), A.data(), lda, B.data(), ldb, T(beta), got.data(), ldc);
        // compare only the M×N part; the padding must be untouched
        double err = 0, mag = 1e-30;
        bool pad_ok = true;
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < ldc; ++j) {
            size_t k = size_t(i) * ldc + j;
            if (j < N) {
              double d = std::fabs(double(got[k]) - want[k]);
              err = std::isfinite(double(got[k])) ? std::max(err, d) : INFINITY;
              mag = std::max(mag, std::fabs(want[k]));
            } else {
              pad_ok &= bitwise_equal(std::vector<T>{got[k]}, std::vector<T>{C[k]});
            }
          }
        // error bound scales with K (sum of K products of magnitude <= 1)
        double rel = err / std::max(mag, 1.0) / std::max(1.0, std::sqrt(double(K)));
        worst = std::max(worst, rel);
        ++count;
        if (!(rel < tol) || !pad_ok) {
          ++fails;
          std::printf("  mismatch %s %s M=%d N=%d K=%d ta=%d tb=%d beta=%g rel=%g pad_ok=%d\n", pname, tname,
                      M, N, K, ta, tb, beta, rel, pad_ok);
        }
      }
    }
  expect(fails == 0,
         std::string(pname) + " " + tname + " vs naive: " + std::to_string(count) +
             " cases (odd sizes, 4 transposes, lda > K, alpha/beta)",
         "worst scaled err " + fmt(worst));
}

template <typename T>
void check_threads(Path path, Rng& rng, const char* tname) {
  const int M = 300, N = 257, K = 600;
  auto A = rng.vec<T>(size_t(M) * K), B = rng.vec<T>(size_t(K) * N);
  std::vector<std::vector<T>> outs;
  for (int th : {1, 2, 3}) {
    ThreadPool pool(th);
    for (int tr = 0; tr < 4; ++tr) {
      bool ta = tr & 1, tb = tr & 2;
      std::vector<T> C(size_t(M) * N);
      run<T>(path, &pool, ta, tb, M, N, K, T(1), A.data(), ta ? M : K, B.data(), tb ? K : N, T(0), C.data(), N);
      if (th == 1) outs.push_back(C);
      else if (!bitwise_equal(outs[tr], C)) {
        expect(false, std::string(path == Path::Blas ? "blas " : "builtin ") + tname +
                          " identical for 1, 2, 3 threads", "differs at " + std::to_string(th) + " threads");
        return;
      }
    }
  }
  expect(true, std::string(path == Path::Blas ? "blas " : "builtin ") + tname +
                   " 300x257x600 identical for 1, 2, 3 threads (4 transposes)");
}

double gflops(Path path, ThreadPool& pool, int n) {
  std::vector<float> A(size_t(n) * n, 0.5f), B(size_t(n) * n, 0.25f), C(size_t(n) * n);
  run<float>(path, &pool, false, true, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);  // warm
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    run<float>(path, &pool, false, true, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  bool ok = C[0] == 0.125f * n && C[size_t(n) * n - 1] == 0.125f * n;
  expect(ok, std::string("gemm ") + (path == Path::Blas ? "blas" : "builtin") + " 1024^3 result");
  return 2.0 * n * n * n / best / 1e9;
}

// The pool: a gemm on pool B from inside tasks of pool A (a bigger pool), a nested
// run on the same pool, and an exception thrown by a task reaching the caller.
void pools(Rng& rng) {
  ThreadPool a(3), b(2);
  const int M = 70, N = 40, K = 50;
  auto A = rng.vec<float>(M * K), B = rng.vec<float>(K * N);
  std::vector<float> want(M * N);
  speed::cpu::gemm_builtin<float>(nullptr, false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f,
                                  want.data(), N);
  std::vector<std::vector<float>> got(6, std::vector<float>(M * N));
  a.run(6, [&](int64_t t, int) {
    speed::cpu::gemm_builtin<float>(&b, false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f,
                                    got[t].data(), N);
  });
  bool ok = true;
  for (auto& g : got) ok &= bitwise_equal(g, want);
  expect(ok, "gemm on pool B from 6 tasks of pool A: same bits as serial");
  std::vector<int> hits(12, 0);
  a.run(3, [&](int64_t t, int) { a.run(4, [&](int64_t u, int) { hits[t * 4 + u] += 1; }); });
  expect(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }), "nested run on the same pool runs inline");
  bool caught = false;
  try {
    a.run(50, [&](int64_t t, int) {
      if (t == 17) throw std::runtime_error("task 17");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "task 17";
  }
  int after = 0;
  a.run(5, [&](int64_t, int) { __atomic_add_fetch(&after, 1, __ATOMIC_RELAXED); });
  expect(caught && after == 5, "a task's exception reaches the caller; the pool keeps working");
}

}  // namespace

// Packing A once must not change a bit: the conv relies on it (conv.h, determinism).
void packed_equals_serial(Rng& rng) {
  ThreadPool pool(3);
  bool same = true;
  for (auto [M, N, K] : {std::array<int, 3>{97, 130, 513}, std::array<int, 3>{128, 1024, 128},
                         std::array<int, 3>{5, 33, 1152}}) {
    for (int ta = 0; ta < 2; ++ta) {
      const int lda = ta ? M : K;
      auto A = rng.vec<float>(size_t(M) * K), B = rng.vec<float>(size_t(K) * N);
      std::vector<float> c1(size_t(M) * N), c2(size_t(M) * N);
      speed::cpu::gemm_builtin<float>(nullptr, ta, false, M, N, K, 1.f, A.data(), lda, B.data(), N, 0.f, c1.data(), N);
      std::vector<float> p(speed::cpu::gemm_packed_a_size<float>(M, K));
      speed::cpu::gemm_pack_a<float>(&pool, ta, M, K, A.data(), lda, p.data());
      speed::cpu::gemm_serial_packed_a<float>(M, N, K, 1.f, p.data(), false, B.data(), N, 0.f, c2.data(), N);
      same = same && std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0;
    }
  }
  expect(same, "gemm with A packed once is bitwise equal to the serial built-in GEMM");
}

int main() {
  Rng rng(7);
  ThreadPool pool(2);
  check_sizes<float>(Path::Builtin, pool, rng, "float", 1e-6);
  check_sizes<double>(Path::Builtin, pool, rng, "double", 1e-14);
  check_sizes<float>(Path::BuiltinSerial, pool, rng, "float", 1e-6);
  check_sizes<float>(Path::PackedA, pool, rng, "float", 1e-6);
  check_sizes<double>(Path::PackedA, pool, rng, "double", 1e-14);
  packed_equals_serial(rng);
  check_threads<float>(Path::Builtin, rng, "float");
  check_threads<double>(Path::Builtin, rng, "double");
  pools(rng);
  const bool have_blas = speed::cpu_have_blas();
  if (have_blas) {
    check_sizes<float>(Path::Blas, pool, rng, "float", 1e-6);
    check_sizes<double>(Path::Blas, pool, rng, "double", 1e-14);
    check_threads<float>(Path::Blas, rng, "float");
    check_threads<double>(Path::Blas, rng, "double");
  } else {
    std::printf("note: built without BLAS; only the builtin kernel is tested\n");
  }
  speed::cpu_force_builtin_gemm(true);
  expect(std::string(speed::cpu_gemm_name()).rfind("builtin (", 0) == 0, "cpu_force_builtin_gemm(true) -> \"builtin (...)\"");
  if (have_blas) {
    speed::cpu_set_gemm(speed::CpuGemm::Blas);
    expect(std::string(speed::cpu_gemm_name()).rfind("blas (", 0) == 0, "cpu_set_gemm(Blas) -> \"blas (...)\"");
  }
  speed::cpu_set_gemm(speed::CpuGemm::Auto);
  std::printf("gemm chosen for this CPU: %s\n", speed::cpu_gemm_name());
  double gb = gflops(Path::Builtin, pool, 1024);
  std::printf("gemm float32 1024x1024x1024, 2 threads: builtin %.1f GFLOP/s\n", gb);
  if (have_blas) {
    double gl = gflops(Path::Blas, pool, 1024);
    std::printf("gemm float32 1024x1024x1024, 2 threads: %s %.1f GFLOP/s\n", speed::cpu_gemm_name(), gl);
  }
  return finish("test_gemm");
}
