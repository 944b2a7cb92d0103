// The CPU backend: threads + SIMD, float32 and float64.
#pragma once
#include <memory>

#include "speed/backend.h"

namespace speed {

// threads <= 0: all cores (std::thread::hardware_concurrency()).
template <typename T>
std::shared_ptr<Backend<T>> make_cpu_backend(int threads = 0);

// Which GEMM the CPU backend uses, decided at run time (native/src/cpu/gemm.cpp):
// Auto = $SPEED_CPU_GEMM (builtin|blas) if set, else the built-in kernel on CPUs
// with AVX-512 and BLAS (when linked, SPEED_HAVE_CBLAS) elsewhere.
enum class CpuGemm { Auto, Builtin, Blas };
void cpu_set_gemm(CpuGemm which);  // process-wide; Blas without BLAS linked means Builtin
bool cpu_have_blas();
// "blas (<library>)" or "builtin (avx512|avx2|portable)": what gemm() uses now.
const char* cpu_gemm_name();
void cpu_force_builtin_gemm(bool on);  // on: Builtin, off: Auto (the JS API's switch)

}  // namespace speed
