// bench_native: the native benchmark without Node (the numbers `speed-train bench` prints).
//   bench_native [--device cpu|cuda] [--models DiT-S/2@32x4,DiT-Ti/4@32x3]
//                [--batches 8,32] [--threads n] [--iters n] [--gemm n]
//                [--cuda-math bf16|tf32|fp32] [--no-kernels] [--json] [--builtin-gemm]
//                [--recompute] [--profile]
// Prints an aligned table (rows as they are measured) or JSON lines whose keys
// are those of src/native.ts BenchRow, plus "variant": the CUDA kernel switches
// set in the environment (SPEED_CUDA_ATTN_WARPS=8 -> "attn_warps=8"), or "".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "speed/bench.h"
#include "speed/cpu.h"

using namespace speed;

static std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

static int to_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != 0) {
    std::fprintf(stderr, "bench_native: %s expects an integer, got '%s'\n", flag.c_str(), v.c_str());
    std::exit(2);
  }
  return static_cast<int>(x);
}

static std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

// The kernel-selection switches of the CUDA backend that are set, "name=value,...", so
// that rows of A/B runs (gpu-check) say which kernels produced them; "" when none is.
static std::string kernel_variant() {
  static const char* const kSwitches[][2] = {
      {"SPEED_CUDA_ATTENTION", "attention"},
      {"SPEED_CUDA_ATTN_WARPS", "attn_warps"},
      {"SPEED_CUDA_NO_FUSED_EPILOGUE", "no_fused_epilogue"}};
  std::string v;
  for (const auto& s : kSwitches) {
    const char* e = std::getenv(s[0]);
    if (!e || !e[0]) continue;
    v += (v.empty() ? "" : ",") + std::string(s[1]) + "=" + e;
  }
  return v;
}

int main(int argc, char** argv) {
  BenchOptions o;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_native: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") o.device = val();
    else if (a == "--models") o.models = split(val());
    else if (a == "--batches") {
      o.batches.clear();
      for (const std::string& b : split(val())) o.batches.push_back(to_int(a, b));
    } else if (a == "--threads") o.threads = to_int(a, val());
    else if (a == "--iters") o.iters = to_int(a, val());
    else if (a == "--gemm") o.gemm_size = to_int(a, val());
    else if (a == "--cuda-math") {
      std::string m = val();
      if (m == "bf16") o.cuda_math = CudaMath::BF16;
      else if (m == "tf32") o.cuda_math = CudaMath::TF32;
      else if (m == "fp32") o.cuda_math = CudaMath::FP32;
      else {
        std::fprintf(stderr, "bench_native: --cuda-math expects bf16, tf32 or fp32, got '%s'\n", m.c_str());
        return 2;
      }
    } else if (a == "--no-kernels") o.kernels = false;
    else if (a == "--recompute") o.recompute = true;
    else if (a == "--profile") o.profile = true;
    else if (a == "--json") json = true;
    else if (a == "--builtin-gemm") cpu_force_builtin_gemm(true);
    else if (a == "-h" || a == "--help") {
      std::printf("usage: bench_native [--device cpu|cuda] [--models M,...] [--batches 8,32] [--threads n]\n"
                  "                    [--iters n] [--gemm n] [--cuda-math bf16|tf32|fp32] [--no-kernels] [--json]\n"
                  "                    [--builtin-gemm]  (CPU: the built-in GEMM even when BLAS is linked)\n"
                  "                    [--recompute]     (train step with activation recomputation)\n"
                  "                    [--profile]       (one more train step timed op by op)\n"
                  "models are PRESET@SIZExCHANNELS, e.g. DiT-S/2@32x4 (1000 classes, learn_sigma)\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench_native: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  const std::string variant = kernel_variant();
  try {
    if (!json) {
      std::printf("# device %s, cpu gemm %s, iters %d (median after 1 warm-up)%s%s\n", o.device.c_str(),
                  cpu_gemm_name(), o.iters, variant.empty() ? "" : ", kernels: ", variant.c_str());
      std::printf("%-16s %-5s %5s  %-22s %11s %10s %9s %8s %7s %9s\n", "model", "dev", "batch", "what", "ms",
                  "img/s", "GFLOP/s", "GB/s", "x gemm", "act MiB");

      std::fflush(stdout);
    }
    run_bench(o, [&](const BenchRow& r) {
      if (json) {
        std::printf("{\"model\":%s,\"device\":%s,\"batch\":%d,\"what\":%s,\"ms\":%.6g,\"imagesPerSec\":%.6g,"
                    "\"gflops\":%.6g,\"gbps\":%.6g,\"ratioToGemm\":%.6g,\"activationMB\":%.6g,\"calls\":%ld,\"share\":%.6g,\"variant\":%s}\n",
                    json_str(r.model).c_str(), json_str(r.device).c_str(), r.batch, json_str(r.what).c_str(), r.ms,
                    r.images_per_sec, r.gflops, r.gbps, r.ratio_to_gemm, r.activation_mb, r.calls, r.share,
                    json_str(variant).c_str());
      } else {
        auto num = [](double v, const char* fmt) {
          char b[32];
          if (v <= 0) return std::string("-");
          std::snprintf(b, sizeof b, fmt, v);
          return std::string(b);
        };
        if (r.share > 0) {  // a profile row: op (shape), calls, total ms, share, rate
          std::printf("  %-46s %5ld calls %11.3f ms %6.1f%% %10s GFLOP/s %6s x gemm\n", r.what.c_str(), r.calls, r.ms,
                      100 * r.share, num(r.gflops, "%.1f").c_str(), num(r.ratio_to_gemm, "%.2f").c_str());
          std::fflush(stdout);
          return;
        }
        std::printf("%-16s %-5s %5d  %-22s %11.3f %10s %9s %8s %7s %9s\n", r.model.c_str(), r.device.c_str(),
                    r.batch, r.what.c_str(), r.ms, num(r.images_per_sec, "%.1f").c_str(),
                    num(r.gflops, "%.1f").c_str(), num(r.gbps, "%.2f").c_str(), num(r.ratio_to_gemm, "%.2f").c_str(),
                    num(r.activation_mb, "%.0f").c_str());

      }
      std::fflush(stdout);
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_native: %s\n", e.what());
    return 1;
  }
  return 0;
}
