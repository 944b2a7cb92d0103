// cpu_perf: min-of-N timings of single CPU ops at DiT-S/2 (32x32x4, batch B) shapes,
// for comparing kernel variants on a busy machine. Not a test (not built by CMake):
//   g++ -O3 -march=native -Inative/include native/tests/cpu_perf.cpp \
//       build-cperf/libspeed_core.a -lopenblas -lpthread -o /tmp/cpu_perf
//   /tmp/cpu_perf [threads] [batch] [reps] [ops: opt,att,lin,ln,gemm,all]
// Under callgrind use reps 1.
#include <cmath>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "speed/bench.h"
#include "speed/cpu.h"
#include "speed/dit.h"
#include "../src/core/layout.h"

using namespace speed;

// Min over reps of the process CPU time (all threads): with 1 thread this is the
// work itself, not the time spent waiting for a core on a loaded machine.
static double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
static double min_ms(int reps, const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    double t0 = cpu_ms();
    f();
    double ms = cpu_ms() - t0;
    if (ms < best) best = ms;
  }
  return best;
}

static std::vector<float> rnd(size_t n, float s = 1.f, unsigned seed = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-s, s);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int B = argc > 2 ? std::atoi(argv[2]) : 8;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  const std::string ops = argc > 4 ? argv[4] : "all";
  auto has = [&](const char* o) { return ops == "all" || ops.find(o) != std::string::npos; };
  if (std::getenv("SPEED_BUILTIN_GEMM")) cpu_force_builtin_gemm(true);
  auto be = make_cpu_backend<float>(threads);
  const int L = 256, D = 384, H = 6, hd = 64, M = B * L;
  std::printf("threads %d batch %d reps %d gemm %s\n", threads, B, reps, cpu_gemm_name());
  if (has("gemm")) {
    const int G = 1024;
    auto a = rnd(size_t(G) * G), b = rnd(size_t(G) * G, 1, 2);
    std::vector<float> c(size_t(G) * G);
    double ms = min_ms(reps, [&] { be->linear_forward(a.data(), b.data(), nullptr, c.data(), nullptr, G, G, G, Act::None); });
    std::printf("%-22s %9.3f ms %7.1f GFLOP/s\n", "gemm 1024^3", ms, 2.0 * G * G * G / ms * 1e-6);
  }
  if (has("lin")) {
    struct S { const char* name; int K, N; Act act; };
    for (S s : {S{"qkv", D, 3 * D, Act::None}, S{"fc1+gelu", D, 4 * D, Act::GeluTanh},
                S{"fc2", 4 * D, D, Act::None}, S{"proj", D, D, Act::None}}) {
      auto x = rnd(size_t(M) * s.K), w = rnd(size_t(s.N) * s.K, 0.05f, 2), b = rnd(s.N, 0.1f, 3);
      std::vector<float> y(size_t(M) * s.N), pre(size_t(M) * s.N), dx(size_t(M) * s.K),
          dw(size_t(s.N) * s.K), db(s.N);
      const double f = 2.0 * M * s.K * s.N;
      double ms = min_ms(reps, [&] { be->linear_forward(x.data(), w.data(), b.data(), y.data(), pre.data(), M, s.K, s.N, s.act); });
      std::printf("linear_fwd %-11s %9.3f ms %7.1f GFLOP/s\n", s.name, ms, f / ms * 1e-6);
      auto dy0 = rnd(size_t(M) * s.N, 1, 4);
      std::vector<float> dy;
      ms = min_ms(reps, [&] {
        dy = dy0;
        be->linear_backward(x.data(), w.data(), dy.data(), pre.data(), dx.data(), dw.data(), db.data(), M, s.K, s.N, s.act, false);
      });
      std::printf("linear_bwd %-11s %9.3f ms %7.1f GFLOP/s\n", s.name, ms, 2 * f / ms * 1e-6);
    }
  }
  if (has("att")) {
    auto qkv = rnd(size_t(M) * 3 * D);
    std::vector<float> out(size_t(M) * D), lse(size_t(B) * H * L), dqkv(size_t(M) * 3 * D);
    auto dout = rnd(size_t(M) * D, 1, 5);
    const double f = 4.0 * B * H * double(L) * L * hd;
    double ms = min_ms(reps, [&] { be->attention_forward(qkv.data(), out.data(), lse.data(), B, L, H, hd); });
    std::printf("%-22s %9.3f ms %7.1f GFLOP/s\n", "attention_fwd", ms, f / ms * 1e-6);
    ms = min_ms(reps, [&] { be->attention_backward(qkv.data(), out.data(), dout.data(), lse.data(), dqkv.data(), B, L, H, hd); });
    std::printf("%-22s %9.3f ms %7.1f GFLOP/s (2.5x fwd flops)\n", "attention_bwd", ms, 2.5 * f / ms * 1e-6);
  }
  if (has("ln")) {
    auto x = rnd(size_t(M) * D), mod = rnd(size_t(B) * 6 * D, 0.5f, 6), h = rnd(size_t(M) * D, 1, 7);
    std::vector<float> y(size_t(M) * D), mean(M), rstd(M), dx(size_t(M) * D), dmod(size_t(B) * 6 * D);
    double ms = min_ms(reps, [&] { be->ln_modulate_forward(x.data(), mod.data(), mod.data() + D, 6 * D, y.data(), mean.data(), rstd.data(), B, L, D, 1e-6); });
    std::printf("%-22s %9.3f ms\n", "ln_modulate_fwd", ms);
    ms = min_ms(reps, [&] { be->ln_modulate_backward(h.data(), x.data(), mean.data(), rstd.data(), mod.data() + D, 6 * D, dx.data(), dmod.data(), dmod.data() + D, B, L, D, false); });
    std::printf("%-22s %9.3f ms\n", "ln_modulate_bwd", ms);
    ms = min_ms(reps, [&] { be->gated_residual_forward(y.data(), mod.data() + 2 * D, 6 * D, h.data(), B, L, D); });
    std::printf("%-22s %9.3f ms\n", "gated_residual_fwd", ms);
    ms = min_ms(reps, [&] { be->gated_residual_backward(x.data(), mod.data() + 2 * D, 6 * D, h.data(), dx.data(), dmod.data() + 2 * D, B, L, D); });
    std::printf("%-22s %9.3f ms\n", "gated_residual_bwd", ms);
  }
  if (has("opt")) {
    const size_t n = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 33000000;
    auto p = rnd(n), g = rnd(n, 1e-3f, 2), m = rnd(n, 1e-3f, 3), e = rnd(n, 1, 4);
    std::vector<float> v(n, 1e-6f);
    OptimHyper hp;
    hp.max_grad_norm = 1.0;
    hp.weight_decay = 0.01;
    float losses[1] = {1.f};
    double ms = min_ms(reps, [&] {
      hp.step++;
      be->optimizer_step(p.data(), g.data(), m.data(), v.data(), e.data(), n, hp, losses, 1);
    });
    std::printf("%-22s %9.3f ms %7.2f GB/s (15 x 4 B/param)\n", "optimizer_step", ms, 60.0 * n / ms * 1e-6);
    // its parts: the norm pass alone (an Inf gradient is skipped right after it), and the
    // norm + the non-finite check pass (an update that would overflow is skipped after it)
    auto gi = g;
    gi[n / 2] = INFINITY;
    double ms_norm = min_ms(reps, [&] { be->optimizer_step(p.data(), gi.data(), m.data(), v.data(), e.data(), n, hp, losses, 1); });
    OptimHyper big = hp;
    big.lr = 3e38;
    double ms_chk = min_ms(reps, [&] { be->optimizer_step(p.data(), g.data(), m.data(), v.data(), e.data(), n, big, losses, 1); });
    std::printf("%-22s %9.3f ms (norm pass)\n%-22s %9.3f ms (check pass: %.0f%% of the step)\n%-22s %9.3f ms (update pass)\n",
                "  norm", ms_norm, "  check", ms_chk - ms_norm, 100.0 * (ms_chk - ms_norm) / ms, "  update", ms - ms_chk);
  }
  if (has("step")) {  // the whole model: forward and train step (CPU time)
    DiTConfig c = parse_bench_model("DiT-S/2@32x4");
    DiT<float> model(c, be);
    model.init(0);
    model.set_tables(linear_diffusion_tables(1000));
    const int C = c.in_channels, HW = c.input_size * c.input_size, Co = c.out_channels();
    auto x0 = rnd(size_t(B) * C * HW, 1, 9);
    std::vector<float> w(B, 1.f), out(size_t(B) * Co * HW);
    std::vector<int32_t> t(B), y(B);
    for (int i = 0; i < B; ++i) { t[i] = (i * 137) % 1000; y[i] = (i * 31) % 1000; }
    const double f = dit_forward_flops_per_image(c) * B;
    double ms = min_ms(reps, [&] { model.forward(x0.data(), t.data(), y.data(), B, out.data(), false); });
    std::printf("%-22s %9.3f ms %7.1f GFLOP/s\n", "forward", ms, f / ms * 1e-6);
    TrainHyper hp;
    hp.optim.max_grad_norm = 1.0;
    ms = min_ms(reps, [&] { model.train_step(x0.data(), t.data(), y.data(), w.data(), B, hp); });
    std::printf("%-22s %9.3f ms %7.1f GFLOP/s\n", "train_step", ms, 3 * f / ms * 1e-6);
  }
  return 0;
}
