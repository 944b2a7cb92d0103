// The native benchmark's GEMM reference row names the CPU GEMM that ran it (the run-time
// choice of native/src/cpu/gemm.cpp), so that a bench table says whether its "x GEMM"
// ratios are relative to the built-in micro-kernel or to BLAS. The per-kernel rows come from
// the op table's perf cases (native/src/core/op_table.h): the same names, in the same order,
// each timed and with its FLOP or byte rate.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "speed/bench.h"
#include "speed/cpu.h"

static int failures = 0;
static void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

static std::string gemm_row(int gemm_size) {
  speed::BenchOptions o;
  o.models = {"DiT-Ti/8@16x3"};
  o.batches = {1};
  o.threads = 1;
  o.iters = 1;
  o.kernels = false;
  o.gemm_size = gemm_size;
  for (const speed::BenchRow& r : speed::run_bench(o))
    if (r.what.rfind("gemm ", 0) == 0) return r.what;
  return "";
}

// The per-kernel rows `speed-train bench` prints (and gpu-check's summary reads by name).
static void kernel_rows() {
  speed::BenchOptions o;
  o.models = {"DiT-Ti/8@16x3"};
  o.batches = {2};
  o.threads = 1;
  o.iters = 1;
  o.gemm_size = 16;
  const std::vector<std::string> want = {
      "linear_fwd qkv", "linear_bwd qkv", "linear_fwd fc1+gelu", "linear_bwd fc1+gelu", "attention_fwd",
      "attention_bwd", "ln_modulate_fwd", "ln_modulate_bwd", "gated_residual_fwd", "gated_residual_bwd",
      "patchify", "iddpm_loss", "sample_step", "optimizer_step"};
  std::vector<speed::BenchRow> rows;
  for (const speed::BenchRow& r : speed::run_bench(o))
    if (r.what.rfind("gemm", 0) != 0 && r.what != "forward" && r.what != "train_step") rows.push_back(r);
  std::string got;
  for (const auto& r : rows) got += (got.empty() ? "" : ", ") + r.what;
  bool same = rows.size() == want.size();
  for (size_t i = 0; same && i < rows.size(); ++i) same = rows[i].what == want[i];
  expect(same, "kernel rows, in order: " + got);
  bool timed = !rows.empty();
  for (const auto& r : rows) {
    const bool rate = r.what.find("linear") == 0 || r.what.find("attention") == 0 ? r.gflops > 0 && r.gbps == 0
                                                                                   : r.gbps > 0 && r.gflops == 0;
    timed &= r.ms > 0 && rate && r.model == "DiT-Ti/8@16x3" && r.batch == 2 && r.images_per_sec == 0;
  }
  expect(timed, "each kernel row is timed with its GFLOP/s (matrix products, attention) or GB/s (the rest)");
}

int main() {
  if (!std::getenv("SPEED_CPU_ISA")) kernel_rows();  // the ISA reruns are about the GEMM row
  const std::string auto_row = gemm_row(16);
  expect(auto_row == std::string("gemm 16^3 ") + speed::cpu_gemm_name(),
         "GEMM row names the run-time choice: '" + auto_row + "'");
  speed::cpu_force_builtin_gemm(true);
  const std::string builtin_row = gemm_row(32);
  speed::cpu_force_builtin_gemm(false);
  expect(builtin_row.rfind("gemm 32^3 builtin (", 0) == 0 &&
             (builtin_row.find("avx512") != std::string::npos || builtin_row.find("avx2") != std::string::npos ||
              builtin_row.find("portable") != std::string::npos),
         "forced built-in GEMM: the row says which micro-kernel: '" + builtin_row + "'");
  // ctest runs this again with SPEED_CPU_ISA=avx2 and =portable: the row follows the lowered
  // choice (portable is reachable on every CPU; avx2 only where the CPU has it)
  if (const char* isa = std::getenv("SPEED_CPU_ISA"); isa && std::string(isa) == "portable")
    expect(builtin_row == "gemm 32^3 builtin (portable)", "SPEED_CPU_ISA=portable: the row names that micro-kernel");
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
