// The CPU backend: threads + SIMD, float32 and float64.
#pragma once
#include <memory>

#include "speed/backend.h"

namespace speed {

// threads <= 0: all cores (std::thread::hardware_concurrency()).
template <typename T>
std::shared_ptr<Backend<T>> make_cpu_backend(int threads = 0);

// Which GEMM the CPU backend uses: "blas (<vendor>)" when built against a BLAS
// library (SPEED_HAVE_CBLAS), else "builtin". Tests may force the builtin kernel.
const char* cpu_gemm_name();
void cpu_force_builtin_gemm(bool on);  // process-wide; for tests and the bench

}  // namespace speed
