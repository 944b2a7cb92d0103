// Inception-v3 (pytorch-fid's FID network) on the CPU or a GPU: where a forward's time goes.
// Random weights (the speed does not depend on them), `batch` uint8 images of S x S
// resized to 299, on `threads` threads (CPU): images/s (wall) and CPU seconds per image
// (process CPU time, all threads), then the same run through the profiling backend,
// its op time grouped by kind (convs by kernel shape) with each group's share and
// GFLOP/s, beside the single-thread 1024^3 GEMM rate. Shares come from wall-clock op
// timings, so on a busy machine read them as proportions. With device cuda the network runs
// on the CUDA backend (operands `math`, fp32 by default as evaluation runs it); the images/s
// line is then the GPU's, and the host's CPU time per image is what feeding it costs.
//   bench_inception [size (32)] [batch (8)] [threads (2)] [reps (2)] [device cpu|cuda (cpu)]
//                   [math fp32|tf32|bf16 (fp32)]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../src/cpu/gemm.h"
#include "speed/cpu.h"
#include "speed/cuda.h"
#include "speed/inception.h"
#include "speed/profile.h"

using namespace speed;

static double cpu_s(clockid_t clock = CLOCK_PROCESS_CPUTIME_ID) {
  timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static double wall_s() { return cpu_s(CLOCK_MONOTONIC); }

static void fill(InceptionV3<float>& net) {
  std::mt19937 r(1);
  std::normal_distribution<float> g(0, 1);
  for (const auto& p : net.params()) {
    std::vector<float> v(p.numel);
    const std::string& n = p.name;
    const double fan = p.shape.size() > 1 ? double(p.numel) / p.shape[0] : 1;
    for (auto& x : v) x = g(r) * float(std::sqrt(1.0 / fan));
    if (n.find("running_var") != std::string::npos || n.find("bn.weight") != std::string::npos)
      for (auto& x : v) x = 1.0f;
    net.write_param(n, v.data());
  }
  net.prepare();
}

int main(int argc, char** argv) {
  const int S = argc > 1 ? std::atoi(argv[1]) : 32, B = argc > 2 ? std::atoi(argv[2]) : 8,
            T = argc > 3 ? std::atoi(argv[3]) : 2, reps = argc > 4 ? std::max(1, std::atoi(argv[4])) : 2;
  const std::string device = argc > 5 ? argv[5] : "cpu", math = argc > 6 ? argv[6] : "fp32";
  if (device != "cpu" && device != "cuda") {
    std::fprintf(stderr, "bench_inception: device must be cpu or cuda, got %s\n", device.c_str());
    return 2;
  }
  std::shared_ptr<Backend<float>> inner;
  if (device == "cuda") {
    std::string why;
    if (!cuda_available(&why)) {
      std::printf("SKIPPED: %s\n", why.c_str());
      return 77;
    }
    CudaOptions co;
    if (math == "fp32") co.math = CudaMath::FP32;
    else if (math == "tf32") co.math = CudaMath::TF32;
    else if (math == "bf16") co.math = CudaMath::BF16;
    else {
      std::fprintf(stderr, "bench_inception: math must be fp32, tf32 or bf16, got %s\n", math.c_str());
      return 2;
    }
    inner = make_cuda_backend(co);
  } else {
    inner = make_cpu_backend<float>(T);
  }
  std::vector<uint8_t> img(size_t(B) * S * S * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t((i * 2654435761u) >> 24);
  std::vector<float> pool3(size_t(B) * 2048), logits(size_t(B) * 1008), spatial(size_t(B) * 2023);

  auto prof = make_profiling_backend<float>(inner);
  InceptionV3<float> net(prof);
  fill(net);
  const double gflop = net.flops() * 1e-9;
  net.run(img.data(), B, S, S, 3, pool3.data(), logits.data(), spatial.data(), B);  // warm-up
  double wall = 1e30, cpu = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double w0 = wall_s(), c0 = cpu_s();
    net.run(img.data(), B, S, S, 3, pool3.data(), logits.data(), spatial.data(), B);
    wall = std::min(wall, wall_s() - w0);
    cpu = std::min(cpu, cpu_s() - c0);
  }
  if (device == "cuda")
    std::printf("inception %dx%d -> 299, batch %d, cuda %s: %.2f images/s, %.1f GFLOP/s, host %.3f cpu-s/image\n", S,
                S, B, math.c_str(), B / wall, gflop * B / wall, cpu / B);
  else
    std::printf("inception %dx%d -> 299, batch %d, %d threads, gemm %s: %.2f images/s, %.3f cpu-s/image, %.1f GFLOP/cpu-s\n",
                S, S, B, T, cpu_gemm_name(), B / wall, cpu / B, gflop * B / cpu);

  prof->record(true);
  net.run(img.data(), B, S, S, 3, pool3.data(), logits.data(), spatial.data(), B);
  prof->record(false);
  std::map<std::string, std::pair<double, double>> groups;  // ms, flops
  double total = 0;
  for (const auto& row : prof->rows()) {
    std::string key = row.op;
    if (row.op == "conv2d_forward") {
      // the profile's shape is "N,Ci,H,W->Co kKHsS": kernel height and stride only, so
      // "kh1" holds the 1x1, 1x3 and 1x7 convs and "kh3" the 3x3 and 3x1 ones
      int n = 0, ci = 0, h = 0, w = 0, co = 0, kh = 0, st = 0;
      std::sscanf(row.shape.c_str(), "%d,%d,%d,%d->%d k%ds%d", &n, &ci, &h, &w, &co, &kh, &st);
      key = "conv kh" + std::to_string(kh) + " stride " + std::to_string(st) + (h >= 71 ? " (stem)" : "");
    }
    groups[key].first += row.ms;
    groups[key].second += row.flops;
    total += row.ms;
  }
  std::vector<std::pair<std::string, std::pair<double, double>>> sorted(groups.begin(), groups.end());
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
  std::printf("profile (wall ms of one batch, %.0f ms in ops):\n", total);
  for (auto& [k, v] : sorted)
    std::printf("  %-28s %8.1f ms  %5.1f%%  %s\n", k.c_str(), v.first, 100 * v.first / total,
                v.second > 0 ? (std::to_string(int(v.second / v.first * 1e-6)) + " GFLOP/s").c_str() : "");
  std::vector<float> a(1024 * 1024), b(1024 * 1024), c(1024 * 1024, 0.f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = b[i] = float(i % 7) * 0.1f;
  cpu::gemm_serial<float>(false, false, 1024, 1024, 1024, 1, a.data(), 1024, b.data(), 1024, 0, c.data(), 1024);
  const double t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
  cpu::gemm_serial<float>(false, false, 1024, 1024, 1024, 1, a.data(), 1024, b.data(), 1024, 0, c.data(), 1024);
  std::printf("gemm 1024^3, 1 thread: %.1f GFLOP/cpu-s\n", 2.0 * 1024 * 1024 * 1024 / (cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0) * 1e-9);
  return 0;
}
