// The one place that talks to cuBLASLt (gemm_cublaslt.cu). Everything is in
// cuBLAS's column-major terms: D[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C,
// with C = D. Row-major callers map a row-major X[r, c] to a column-major
// c x r matrix with leading dimension c (see backend.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "speed/cuda.h"

namespace speed {
namespace cuda {

enum class Epi : int {
  None = 0,
  Bias = 1,         // D += bias[m] (one value per row of column-major D)
  GeluAuxBias = 2,  // aux = AB + bias; D = gelu_tanh(aux) (bias may be null: GELU_AUX)
  BGradB = 3,       // bias[n] = sum over k of op(B) (column sums of D's inputs)
};

struct GemmCall {
  bool transa = false, transb = false;
  int m = 0, n = 0, k = 0;
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  float* D = nullptr;  // float32 output, also C when beta != 0
  int64_t ldd = 0;
  float beta = 0.0f;
  Epi epi = Epi::None;
  float* bias = nullptr;  // Bias/GeluAuxBias: input [m]; BGradB: output [n]
  float* aux = nullptr;   // GeluAuxBias: pre-activation output, leading dim aux_ld
  int64_t aux_ld = 0;
};

struct LtGemm;
// Operands are bf16 (math BF16) or float32 (TF32, FP32); accumulation float32.
LtGemm* lt_create(CudaMath math, cudaStream_t stream);
void lt_destroy(LtGemm* g);
// false when cuBLASLt offers no algorithm for this epilogue (the caller then
// runs the unfused form); throws speed::Error on any other failure.
bool lt_matmul(LtGemm* g, const GemmCall& c);
const char* lt_version_string(LtGemm* g);

}  // namespace cuda
}  // namespace speed
