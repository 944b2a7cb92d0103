// Helpers for the CUDA tests: each op runs on the CPU backend and on the CUDA
// backend with the same random inputs; device outputs are poisoned (NaN) first.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/cpu.h"
#include "speed/cuda.h"

namespace cudatest {

inline int g_failures = 0;

inline speed::CudaMath parse_math(int argc, char** argv) {
  std::string m = argc > 1 ? argv[1] : "fp32";
  if (m == "fp32") return speed::CudaMath::FP32;
  if (m == "tf32") return speed::CudaMath::TF32;
  if (m == "bf16") return speed::CudaMath::BF16;
  std::fprintf(stderr, "usage: %s fp32|tf32|bf16 [filter]\n", argv[0]);
  std::exit(2);
}
inline const char* math_name(speed::CudaMath m) {
  return m == speed::CudaMath::FP32 ? "fp32" : m == speed::CudaMath::TF32 ? "tf32" : "bf16";
}

// Device buffer owned by a backend.
template <typename T>
struct DBuf {
  speed::Backend<float>* be = nullptr;
  T* p = nullptr;
  size_t n = 0;
  DBuf(speed::Backend<float>& b, size_t count) : be(&b), n(count) {
    p = static_cast<T*>(b.alloc_bytes(std::max<size_t>(1, count) * sizeof(T)));
  }
  DBuf(speed::Backend<float>& b, const std::vector<T>& h) : DBuf(b, h.size()) {
    b.to_device(p, h.data(), h.size() * sizeof(T));
  }
  ~DBuf() { be->free_bytes(p); }
  DBuf(const DBuf&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    be->to_host(h.data(), p, n * sizeof(T));
    return h;
  }
  void poison() {
    std::vector<T> h(n, std::numeric_limits<T>::quiet_NaN());
    be->to_device(p, h.data(), n * sizeof(T));
  }
  void set(const std::vector<T>& h) { be->to_device(p, h.data(), n * sizeof(T)); }
};

inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ||a - b|| / ||b|| (NaN anywhere fails); prints one line.
inline bool expect_close(const std::string& what, const std::vector<float>& got,
                         const std::vector<float>& ref, double tol) {
  if (got.size() != ref.size()) {
    std::printf("FAIL %-40s size %zu vs %zu\n", what.c_str(), got.size(), ref.size());
    ++g_failures;
    return false;
  }
  double num = 0, den = 0, maxabs = 0;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(ref[i])) {
      ++bad;
      continue;
    }
    double d = (double)got[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
    maxabs = std::max(maxabs, std::fabs(d));
  }
  double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  bool ok = bad == 0 && rel <= tol;
  std::printf("%s %-40s rel %.3e (tol %.0e) max|d| %.3e%s\n", ok ? "ok  " : "FAIL", what.c_str(),
              rel, tol, maxabs, bad ? (" NON-FINITE: " + std::to_string(bad)).c_str() : "");
  if (!ok) ++g_failures;
  return ok;
}

inline void expect(bool cond, const std::string& what) {
  std::printf("%s %s\n", cond ? "ok  " : "FAIL", what.c_str());
  if (!cond) ++g_failures;
}

// Returns a CUDA backend or exits 77 (ctest: skipped) saying why.
inline std::shared_ptr<speed::Backend<float>> cuda_or_skip(speed::CudaMath m) {
  std::string why;
  if (!speed::cuda_available(&why)) {
    std::printf("SKIPPED: %s\n", why.c_str());
    std::exit(77);
  }
  speed::CudaOptions o;
  o.math = m;
  return speed::make_cuda_backend(o);
}

// The same tensor on the CPU backend (c) and the CUDA one (g): given values, or zeros on
// the CPU and NaN on the GPU (poisoned: an output the GPU op does not write fails).
struct PairBuf {
  DBuf<float> c, g;
  PairBuf(speed::Backend<float>& cpu, speed::Backend<float>& gpu, const std::vector<float>& h)
      : c(cpu, h), g(gpu, h) {}
  PairBuf(speed::Backend<float>& cpu, speed::Backend<float>& gpu, size_t n) : c(cpu, n), g(gpu, n) {
    g.poison();
    c.set(std::vector<float>(n, 0.f));
  }
  // the GPU copy against the CPU one
  bool close(const std::string& what, double tol) const { return expect_close(what, g.get(), c.get(), tol); }
};

inline speed::Conv2dShape conv_shape(int N, int Ci, int H, int W, int Co, int k, int stride, int pad_t, int pad_l,
                                     int pad_b, int pad_r) {
  speed::Conv2dShape c;
  c.N = N, c.Ci = Ci, c.H = H, c.W = W, c.Co = Co, c.kh = c.kw = k, c.stride = stride;
  c.pad_t = pad_t, c.pad_l = pad_l, c.pad_b = pad_b, c.pad_r = pad_r;
  return c;
}

// What a CPU-vs-CUDA test program holds: both backends, the math mode and the op filter
// of its command line (`prog fp32|tf32|bf16 [filter]`), and the tolerances (relative
// norm) that go with the math: matrix products and whole models.
struct PairEnv {
  std::shared_ptr<speed::Backend<float>> gpu, cpu;
  speed::CudaMath math = speed::CudaMath::FP32;
  const char* filter = nullptr;
  // exits 77 (skipped) without a usable GPU
  void init(int argc, char** argv) {
    math = parse_math(argc, argv);
    filter = argc > 2 ? argv[2] : nullptr;
    gpu = cuda_or_skip(math);
    cpu = speed::make_cpu_backend<float>(0);
  }
  bool want(const char* name) const { return !filter || std::strstr(name, filter); }
  double tol_mm() const { return math == speed::CudaMath::BF16 ? 2e-2 : math == speed::CudaMath::TF32 ? 2e-3 : 1e-5; }
  double tol_model() const {
    return math == speed::CudaMath::BF16 ? 5e-2 : math == speed::CudaMath::TF32 ? 1e-2 : 1e-4;
  }
};
inline PairEnv env;  // the program's

// A tensor on both backends of env.
struct PF : PairBuf {
  explicit PF(const std::vector<float>& h) : PairBuf(*env.cpu, *env.gpu, h) {}
  explicit PF(size_t n) : PairBuf(*env.cpu, *env.gpu, n) {}
};
inline void cmp(const std::string& what, const PairBuf& p, double tol) { p.close(what, tol); }

}  // namespace cudatest
