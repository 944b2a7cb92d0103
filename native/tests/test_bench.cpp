// The native benchmark's GEMM reference row names the CPU GEMM that ran it (the run-time
// choice of native/src/cpu/gemm.cpp), so that a bench table says whether its "x GEMM"
// ratios are relative to the built-in micro-kernel or to BLAS.
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

int main() {
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
