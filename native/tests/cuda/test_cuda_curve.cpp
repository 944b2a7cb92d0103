// The GPU trains like the CPU: a 200-step DiT-S/2 training run on the GPU ends
// within 2% of the CPU backend's loss curve from the same seed (float32 mode):
//   test_cuda_curve [--steps 200] [--batch 4] [--bf16 | --both] [--budget-s S]
// Batch 4 by default, not 8: the CPU side dominates the time and grows linearly
// with the batch, and 200 steps at batch 8 would not fit the time one gpu-check
// step may use (native/bench/NOTES.md "Loss curve vs CPU" has the timings).
// One DiT-S/2 (input 32, 4 channels, 1000 classes, dropout 0.1, learn_sigma) on
// the CPU backend (all cores) and one on the CUDA backend (FP32 math; --bf16:
// BF16 math; --both: an FP32 and a BF16 model next to the same CPU model), same
// init seed, same Philox noise seed (both backends draw the same noise), the
// linear diffusion tables, AdamW with DiT's defaults (lr 1e-4, no weight decay,
// no clipping, EMA 0.9999), trained on the same deterministic batches: x0 a
// smooth per-class pattern plus small noise, labels from 10 classes with 10%
// dropped to the null label, t uniform in [0, 1000), weights 1, all from a
// seeded splitmix64 (no <random> distributions: the same batches everywhere).
//
// Criterion: the 10-step moving average of the batch-mean loss, GPU against
// CPU, over the last 100 steps (steps >= 10): max |ma_gpu - ma_cpu| / ma_cpu
// <= 2% (FP32; BF16 is reported against 5% and never fails the program).
// Also printed, for information: the largest per-step relative difference of
// the batch-mean loss and the final ||p_gpu - p_cpu|| / ||p_cpu|| of the
// weights and of the EMA weights. These are the sharp indicators: the 2% bound
// is loose: a CPU-only dry run with a *different* noise seed on one side stays
// within 0.66% (moving average, 30 steps, batch 8; 1.2% at batch 2) while its
// per-step loss differs by up to 2.6e-2 and its weights by 2.2e-2. So the
// bound catches divergence, not drift; with the same noise, float32 rounding
// alone should keep the per-step difference well below 1e-3 (the program
// prints a note when it is above that).
//
// --budget-s S stops before a step that would end past S seconds and judges
// the steps done (the verdict line then says "partial"): gpu-check.sh and
// ctest pass it so that a slow CPU yields a verdict instead of a timeout.
// Exits 0 PASS, 1 FAIL (FP32) or error, 2 usage, 77 skipped (no GPU).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../test_dit_util.h"
#include "speed/bench.h"
#include "speed/cpu.h"
#include "speed/cuda.h"
#include "speed/dit.h"

using namespace speed;

namespace {

constexpr uint64_t kInitSeed = 0;
constexpr uint64_t kNoiseSeed = 1234;
constexpr uint64_t kDataSeed = 0x5eed;
constexpr int kClassesUsed = 10;  // labels drawn from the first 10 classes
constexpr int kMaWindow = 10;     // moving-average length
constexpr int kJudged = 100;      // the last 100 steps are judged

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// uniform in [-1, 1)
double unit(uint64_t& s) { return (double)(splitmix64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0; }

struct Batch {
  std::vector<float> x0, w;
  std::vector<int32_t> t, y;
};

// The batch of step `step` (0-based): a function of (kDataSeed, step) only.
Batch make_batch(const DiTConfig& c, int N, int step) {
  const int S = c.input_size, C = c.in_channels, T = 1000;
  const double two_pi = 6.283185307179586;
  Batch b;
  b.x0.resize((size_t)N * C * S * S);
  b.w.assign(N, 1.0f);
  b.t.resize(N);
  b.y.resize(N);
  uint64_t s = kDataSeed ^ (0xA24BAED4963EE407ull * (uint64_t)(step + 1));
  for (int i = 0; i < N; ++i) {
    const uint64_t r = splitmix64(s);
    const int k = (int)(r % kClassesUsed);
    b.y[i] = ((r >> 20) % 10 == 0) ? c.num_classes : k;  // 10% null label (dropout)
    b.t[i] = (int32_t)((r >> 32) % T);
    for (int ch = 0; ch < C; ++ch) {
      const double a = 0.6 + 0.1 * (ch % 3), off = 0.3 * (k / (double)kClassesUsed - 0.45);
      const double fx = 1 + (k * 3 + ch) % 4, fy = 1 + (k * 5 + 2 * ch) % 4;
      const double ph = 0.37 * k + 1.1 * ch;
      float* dst = b.x0.data() + ((size_t)i * C + ch) * S * S;
      for (int h = 0; h < S; ++h)
        for (int w = 0; w < S; ++w)
          dst[h * S + w] = (float)(a * std::sin(two_pi * fx * h / S + ph) *
                                       std::cos(two_pi * fy * w / S - 0.5 * ph) +
                                   off + 0.05 * unit(s));
    }
  }
  return b;
}

double rel_diff(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return NAN;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = (double)got[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// 10-step moving average ending at step index s (0-based); needs s >= 9.
double ma(const std::vector<double>& l, int s) {
  double a = 0;
  for (int j = s - kMaWindow + 1; j <= s; ++j) a += l[j];
  return a / kMaWindow;
}

struct GpuRun {
  CudaMath math;
  const char* name;
  double bound;
  bool gating;  // FP32 decides the exit status; BF16 is informational
  std::unique_ptr<DiT<float>> model;
  std::vector<double> loss;
  int skipped = 0;
  std::string error;  // set when a step threw; the run stops there
  double secs = 0;
};

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--steps N (200)] [--batch N (4)] [--bf16 | --both] [--budget-s S]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a killed run still leaves its lines
  int steps = 200, batch = 4;
  double budget = 0;
  bool bf16 = false, both = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto num = [&](double lo) {
      if (i + 1 >= argc) std::exit(usage(argv[0]));
      char* end = nullptr;
      const double v = std::strtod(argv[++i], &end);
      if (!end || *end || !(v >= lo)) std::exit(usage(argv[0]));
      return v;
    };
    if (a == "--steps") steps = (int)num(1);
    else if (a == "--batch") batch = (int)num(1);
    else if (a == "--budget-s") budget = num(0);
    else if (a == "--bf16") bf16 = true;
    else if (a == "--both") both = true;
    else if (a == "fp32") {  // the other CUDA tests' positional mode names
    } else if (a == "bf16") bf16 = true;
    else return usage(argv[0]);
  }

  std::string why;
  if (!cuda_available(&why)) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return 77;
  }

  const double t_start = now_s();
  int failures = 0;
  try {
    DiTConfig c = parse_bench_model("DiT-S/2@32x4");  // 1000 classes, dropout 0.1, learn_sigma
    const DiffusionTables tabs = linear_diffusion_tables(1000);
    TrainHyper hp;  // lr 1e-4, wd 0, no clipping, EMA 0.9999, vb_scale 1
    hp.optim.lr = 1e-4;
    hp.optim.weight_decay = 0.0;
    hp.optim.max_grad_norm = 0.0;
    hp.optim.ema_decay = 0.9999;

    auto cpu_be = make_cpu_backend<float>(0);
    DiT<float> mc(c, cpu_be);
    mc.init(kInitSeed);
    mc.set_tables(tabs);
    mc.set_noise_state(kNoiseSeed, 0);

    std::vector<GpuRun> runs;
    auto add = [&](CudaMath m, const char* name, double bound, bool gating) {
      GpuRun r;
      r.math = m;
      r.name = name;
      r.bound = bound;
      r.gating = gating;
      CudaOptions o;
      o.math = m;
      r.model = std::make_unique<DiT<float>>(c, make_cuda_backend(o));
      r.model->init(kInitSeed);
      r.model->set_tables(tabs);
      r.model->set_noise_state(kNoiseSeed, 0);
      runs.push_back(std::move(r));
    };
    if (!bf16 || both) add(CudaMath::FP32, "fp32", 0.02, true);
    if (bf16 || both) add(CudaMath::BF16, "bf16", 0.05, false);

    std::printf("DiT-S/2 loss curve, CUDA vs CPU: input %d, %d channels, %d classes (labels from %d, 10%% null), "
                "dropout %.1f, learn_sigma %d; batch %d, %d AdamW steps (lr %g, wd %g, no clip, EMA %g); "
                "init seed %llu, noise seed %llu; linear tables, T = %d\n",
                c.input_size, c.in_channels, c.num_classes, kClassesUsed, c.class_dropout_prob, (int)c.learn_sigma,
                batch, steps, hp.optim.lr, hp.optim.weight_decay, hp.optim.ema_decay,
                (unsigned long long)kInitSeed, (unsigned long long)kNoiseSeed, tabs.steps());
    std::printf("CPU backend: gemm %s, %u hardware threads; GPU math: %s%s; %zu trainable parameters%s\n",
                cpu_gemm_name(), std::thread::hardware_concurrency(), runs[0].name,
                runs.size() > 1 ? " + bf16" : "", mc.num_trainable(),
                budget > 0 ? (", budget " + std::to_string((int)budget) + " s").c_str() : "");
    {
      std::vector<float> pc = ditt::all_slot(mc, Slot::Model);
      for (GpuRun& r : runs)
        std::printf("initial weights %s vs cpu: rel %.3e (expected 0: same host-side init)\n", r.name,
                    rel_diff(ditt::all_slot(*r.model, Slot::Model), pc));
    }
    std::printf("%5s %11s %11s", "step", "cpu loss", "cpu ma10");
    for (const GpuRun& r : runs) std::printf(" | %6s loss %11s %10s", r.name, "ma10", "ma10 rel");
    std::printf("  s/step\n");

    std::vector<double> lc;
    int cpu_skipped = 0, done = 0;
    double cpu_secs = 0, t_loop = now_s();
    const char* stop_reason = nullptr;
    for (int s = 0; s < steps; ++s) {
      if (budget > 0 && s > 0) {
        const double el = now_s() - t_start, per = (now_s() - t_loop) / s;
        if (el + 1.5 * per > budget) {
          stop_reason = "budget";
          break;
        }
      }
      const Batch b = make_batch(c, batch, s);
      double t0 = now_s();
      TrainResult rc = mc.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), batch, hp);
      cpu_secs += now_s() - t0;
      double m = 0;
      for (float v : rc.loss) m += v;
      lc.push_back(m / batch);
      cpu_skipped += rc.skipped;
      for (GpuRun& r : runs) {
        if (!r.error.empty()) {
          r.loss.push_back(NAN);
          continue;
        }
        try {
          t0 = now_s();
          TrainResult rg = r.model->train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), batch, hp);
          r.secs += now_s() - t0;
          double mg = 0;
          for (float v : rg.loss) mg += v;
          r.loss.push_back(mg / batch);
          r.skipped += rg.skipped;
        } catch (const std::exception& e) {
          r.error = e.what();
          r.loss.push_back(NAN);
          std::printf("%s run stopped at step %d: %s\n", r.name, s + 1, e.what());
        }
      }
      done = s + 1;
      if (done % 10 == 0 || done == 1 || done == steps) {
        if (s >= kMaWindow - 1) std::printf("%5d %11.6f %11.6f", done, lc[s], ma(lc, s));
        else std::printf("%5d %11.6f %11s", done, lc[s], "-");
        for (const GpuRun& r : runs) {
          if (s >= kMaWindow - 1) {
            const double a = ma(r.loss, s), ref = ma(lc, s);
            std::printf(" | %11.6f %11.6f %9.3f%%", r.loss[s], a, 100.0 * std::fabs(a - ref) / std::fabs(ref));
          } else {
            std::printf(" | %11.6f %11s %10s", r.loss[s], "-", "-");
          }
        }
        std::printf("  %.3f\n", (now_s() - t_loop) / done);
      }
    }

    // the verdict: the last min(100, done) steps with a full moving-average window
    const int first = std::max(kMaWindow - 1, done - kJudged);
    const bool partial = done < steps;
    std::printf("time: cpu %.1f s (%.3f s/step)", cpu_secs, done ? cpu_secs / done : 0.0);
    for (const GpuRun& r : runs) std::printf(", gpu %s %.1f s (%.4f s/step)", r.name, r.secs, done ? r.secs / done : 0.0);
    std::printf(", total %.1f s%s\n", now_s() - t_start,
                stop_reason ? "; stopped early: the next step would pass --budget-s" : "");
    const std::vector<float> pc = ditt::all_slot(mc, Slot::Model), ec = ditt::all_slot(mc, Slot::EMA);
    for (GpuRun& r : runs) {
      double worst = 0;
      int at = -1;
      bool finite = r.error.empty();
      for (int s = first; s < done; ++s) {
        const double a = ma(r.loss, s), ref = ma(lc, s);
        const double rel = std::fabs(a - ref) / std::fabs(ref);
        if (!std::isfinite(rel)) {
          finite = false;
          continue;
        }
        if (at < 0 || rel > worst) {
          worst = rel;
          at = s + 1;
        }
      }
      double step_worst = 0;  // per-step batch-mean loss, all steps: the sharp indicator
      for (int s = 0; s < done; ++s)
        if (std::isfinite(r.loss[s])) step_worst = std::max(step_worst, std::fabs(r.loss[s] - lc[s]) / std::fabs(lc[s]));
      const bool judged = done >= kMaWindow;
      const bool pass = judged && finite && worst <= r.bound && r.skipped == 0 && cpu_skipped == 0;
      double prel = NAN, erel = NAN;
      if (r.error.empty()) {
        prel = rel_diff(ditt::all_slot(*r.model, Slot::Model), pc);
        erel = rel_diff(ditt::all_slot(*r.model, Slot::EMA), ec);
      }
      char line[768];
      std::snprintf(line, sizeof line,
                    "%s: %s max rel diff of the 10-step moving average of the batch-mean loss over steps %d..%d: "
                    "%.4f%% at step %d (bound %.0f%%); final loss cpu %.6f gpu %.6f; "
                    "per-step max rel diff %.3e; param rel diff %.3e, EMA %.3e; steps %d/%d, batch %d%s%s%s%s",
                    r.name, pass ? "PASS" : "FAIL", first + 1, done, 100.0 * worst, at, 100.0 * r.bound,
                    done ? lc[done - 1] : NAN, done ? r.loss[done - 1] : NAN, step_worst, prel, erel, done, steps, batch,
                    partial ? " (partial)" : "", judged ? "" : " TOO FEW STEPS (< 10) TO JUDGE",
                    (r.skipped || cpu_skipped) ? " SKIPPED STEPS" : "",
                    !r.error.empty() ? (" ERROR " + r.error).c_str() : (finite ? "" : " NON-FINITE"));
      // "CURVE" lines are what gpu-check.sh's summary quotes; a gating failure
      // also gets a "FAIL" line (the summary lists those).
      std::printf("CURVE %s%s\n", line, r.gating ? "" : " [informational]");
      if (r.math == CudaMath::FP32 && step_worst > 1e-3)  // not a verdict: see the header
        std::printf("note: fp32 per-step loss differs from the CPU's by up to %.2e; a different noise stream "
                    "alone gives up to ~3e-2 (weights ~2e-2) at batch 8: look for a real bug before trusting the 2%% verdict\n",
                    step_worst);
      if (r.gating) {
        std::printf("%s loss curve %s within %.0f%% of the CPU's\n", pass ? "ok  " : "FAIL", r.name, 100.0 * r.bound);
        if (!pass) ++failures;
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
