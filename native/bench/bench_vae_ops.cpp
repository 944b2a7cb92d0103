// The VAE's conv2d at SD kl-f8's shapes (256x256 images) against the large-GEMM rate,
// in GFLOP per CPU-second on ONE thread (CLOCK_PROCESS_CPUTIME_ID), so that the ratio
// means something on a shared machine too; plus GroupNorm+SiLU at the largest size.
// First the GEMM itself, built-in and BLAS (when linked), on three shapes.
//   bench_vae_ops [reps (default 2)]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <array>
#include <random>
#include <vector>

#include "../src/cpu/gemm.h"
#include "speed/backend.h"
#include "speed/cpu.h"

using namespace speed;

// Process CPU time for the backend's ops (its pool threads included); the serial GEMM
// rows run on this thread and take CLOCK_THREAD_CPUTIME_ID, so that the pool's idle
// spinning is not counted against the GEMM.
static double cpu_s(clockid_t clock = CLOCK_PROCESS_CPUTIME_ID) {
  timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
  auto be = make_cpu_backend<float>(1);
  std::mt19937 r(1);
  std::uniform_real_distribution<float> u(-1, 1);
  // The GEMM each way this build can run it (the conv rates below use the default).
  auto gemm_rate = [&](int M, int N, int K) {
    std::vector<float> a(size_t(M) * K), b(size_t(K) * N), c(size_t(M) * N);
    for (auto& v : a) v = u(r);
    for (auto& v : b) v = u(r);
    cpu::gemm_serial<float>(false, false, M, N, K, 1, a.data(), K, b.data(), N, 0, c.data(), N);
    double t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < reps; ++i) cpu::gemm_serial<float>(false, false, M, N, K, 1, a.data(), K, b.data(), N, 0, c.data(), N);
    return 2.0 * M * N * K / ((cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0) / reps) * 1e-9;
  };
  const int G = 1024;
  for (CpuGemm which : {CpuGemm::Builtin, CpuGemm::Blas}) {
    if (which == CpuGemm::Blas && !cpu_have_blas()) continue;
    cpu_set_gemm(which);
    std::printf("gemm %-22s 1 thread, GFLOP/cpu-s:", cpu_gemm_name());
    for (auto [M, N, K] : {std::array<int, 3>{1024, 1024, 1024}, std::array<int, 3>{128, 1024, 1152}, std::array<int, 3>{512, 256, 4608}})
      std::printf("  %dx%dx%d %.1f", M, N, K, gemm_rate(M, N, K));
    std::printf("\n");
  }
  cpu_set_gemm(CpuGemm::Auto);
  const double gemm = gemm_rate(G, G, G);
  std::printf("gemm (%s, the default here) %d^3, 1 thread: %.1f GFLOP/cpu-s\n", cpu_gemm_name(), G, gemm);
  double t0 = 0;
  struct Case { int Ci, H, Co, k, s; };
  for (Case cs : {Case{128, 256, 128, 3, 1}, Case{256, 256, 128, 3, 1}, Case{128, 128, 256, 1, 1}, Case{256, 128, 256, 3, 1},
                  Case{512, 64, 512, 3, 1}, Case{512, 32, 512, 3, 1}, Case{128, 256, 128, 3, 2}}) {
    Conv2dShape s;
    s.N = 1; s.Ci = cs.Ci; s.H = s.W = cs.H; s.Co = cs.Co; s.kh = s.kw = cs.k; s.stride = cs.s;
    if (cs.k == 3 && cs.s == 1) s.pad_t = s.pad_l = s.pad_b = s.pad_r = 1;
    if (cs.s == 2) s.pad_b = s.pad_r = 1;
    std::vector<float> x(size_t(cs.Ci) * cs.H * cs.H), w(size_t(cs.Co) * cs.Ci * cs.k * cs.k), bias(cs.Co),
        y(size_t(cs.Co) * s.Ho() * s.Wo());
    for (auto& v : x) v = u(r);
    for (auto& v : w) v = u(r);
    be->conv2d_forward(x.data(), w.data(), bias.data(), y.data(), s, false);
    t0 = cpu_s();
    for (int i = 0; i < reps; ++i) be->conv2d_forward(x.data(), w.data(), bias.data(), y.data(), s, false);
    const double t = (cpu_s() - t0) / reps, f = 2.0 * cs.Co * s.Ho() * s.Wo() * cs.Ci * cs.k * cs.k;
    std::printf("conv %4d->%-4d @%3d k%d s%d: %6.1f GFLOP/cpu-s  %.2f x GEMM  (%.1f ms)\n", cs.Ci, cs.Co, cs.H, cs.k,
                cs.s, f / t * 1e-9, f / t * 1e-9 / gemm, t * 1e3);
  }
  std::vector<float> g(size_t(128) * 256 * 256), gg(128, 1.f), gb(128, 0.f);
  for (auto& v : g) v = u(r);
  t0 = cpu_s();
  for (int i = 0; i < reps; ++i) be->group_norm_forward(g.data(), gg.data(), gb.data(), g.data(), 1, 128, 256 * 256, 32, 1e-6, true);
  const double t = (cpu_s() - t0) / reps;
  std::printf("group_norm+silu 128x256x256 in place: %.1f ms, %.1f GB/s\n", t * 1e3, 2.0 * g.size() * 4 / t * 1e-9);
  return 0;
}
