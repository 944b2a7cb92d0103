// Matrix products through cuBLASLt: bf16 (or tf32 / fp32) operands, float32
// accumulation and output, bias / GELU(tanh) / bias-gradient epilogues where
// cuBLASLt offers them. The heuristic's choice is cached per problem shape.
#include <cublasLt.h>

#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "cuda_common.h"
#include "gemm.h"

namespace speed {
namespace cuda {

namespace {
void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusName(st) +
                " (" + cublasLtGetStatusString(st) + ")");
}
#define LT_CHECK(call) lt_check((call), #call)

uint32_t align_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

using Key = std::tuple<int, int, int, int, int, int64_t, int64_t, int64_t, int, int, uint32_t,
                       uint32_t, uint32_t, int64_t>;
}  // namespace

struct LtGemm {
  cublasLtHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  CudaMath math = CudaMath::BF16;
  void* workspace = nullptr;
  size_t workspace_bytes = 32u << 20;
  std::map<Key, std::pair<bool, cublasLtMatmulAlgo_t>> cache;  // false: no algorithm
  std::string version;
};

LtGemm* lt_create(CudaMath math, cudaStream_t stream) {
  LtGemm* g = new LtGemm();
  g->math = math;
  g->stream = stream;
  cublasStatus_t st = cublasLtCreate(&g->handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    delete g;
    lt_check(st, "cublasLtCreate");
  }
  cudaError_t e = cudaMalloc(&g->workspace, g->workspace_bytes);
  if (e != cudaSuccess) {
    cublasLtDestroy(g->handle);
    delete g;
    throw_cuda(e, "cudaMalloc(cuBLASLt workspace)", __FILE__, __LINE__);
  }
  size_t v = cublasLtGetVersion();
  g->version = "cuBLASLt " + std::to_string(v);
  return g;
}

void lt_destroy(LtGemm* g) {
  if (!g) return;
  if (g->workspace) cudaFree(g->workspace);
  if (g->handle) cublasLtDestroy(g->handle);
  delete g;
}

const char* lt_version_string(LtGemm* g) { return g->version.c_str(); }

namespace {
// RAII holders so that an exception never leaks descriptors.
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~Desc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct Pref {
  cublasLtMatmulPreference_t p = nullptr;
  ~Pref() { if (p) cublasLtMatmulPreferenceDestroy(p); }
};
}  // namespace

bool lt_matmul(LtGemm* g, const GemmCall& c) {
  if (c.m <= 0 || c.n <= 0) return true;
  if (c.k <= 0) {  // empty inner dimension: D = beta D (no cuBLASLt call)
    throw Error("cuBLASLt matmul with k = 0 is not supported");
  }
  const bool bf16 = g->math == CudaMath::BF16;
  const cudaDataType_t ab_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute =
      g->math == CudaMath::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;

  Desc desc;
  LT_CHECK(cublasLtMatmulDescCreate(&desc.d, compute, CUDA_R_32F));
  cublasOperation_t ta = c.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = c.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  switch (c.epi) {
    case Epi::None: epi = CUBLASLT_EPILOGUE_DEFAULT; break;
    case Epi::Bias: epi = CUBLASLT_EPILOGUE_BIAS; break;
    case Epi::GeluAuxBias: epi = c.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX; break;
    case Epi::BGradB: epi = CUBLASLT_EPILOGUE_BGRADB; break;
  }
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (c.bias) {
    const void* bp = c.bias;
    cudaDataType_t bt = CUDA_R_32F;
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  if (c.epi == Epi::GeluAuxBias) {
    void* ap = c.aux;
    int64_t ld = c.aux_ld;
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ap, sizeof(ap)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
  }

  Layout la, lb, ld;
  LT_CHECK(cublasLtMatrixLayoutCreate(&la.l, ab_type, c.transa ? c.k : c.m, c.transa ? c.m : c.k, c.lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&lb.l, ab_type, c.transb ? c.n : c.k, c.transb ? c.k : c.n, c.ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&ld.l, CUDA_R_32F, c.m, c.n, c.ldd));

  const uint32_t alA = align_of(c.A), alB = align_of(c.B), alD = align_of(c.D);
  const uint32_t alX = c.epi == Epi::GeluAuxBias ? align_of(c.aux) : (c.bias ? align_of(c.bias) : 256);
  Key key{(int)c.transa, (int)c.transb, c.m, c.n, c.k, c.lda, c.ldb, c.ldd, (int)c.epi,
          (c.beta != 0.0f ? 1 : 0) | (c.bias ? 2 : 0), alA, alB, std::min(alD, alX), c.aux_ld};
  auto it = g->cache.find(key);
  if (it == g->cache.end()) {
    Pref pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    uint64_t ws = g->workspace_bytes;
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alA, sizeof(alA)));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alB, sizeof(alB)));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alD, sizeof(alD)));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alD, sizeof(alD)));
    cublasLtMatmulHeuristicResult_t res;
    std::memset(&res, 0, sizeof(res));
    int count = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g->handle, desc.d, la.l, lb.l, ld.l, ld.l,
                                                       pref.p, 1, &res, &count);
    bool ok = st == CUBLAS_STATUS_SUCCESS && count > 0;
    if (!ok && c.epi == Epi::None) {
      if (st != CUBLAS_STATUS_SUCCESS) lt_check(st, "cublasLtMatmulAlgoGetHeuristic");
      throw Error("cuBLASLt found no algorithm for a " + std::to_string(c.m) + "x" +
                  std::to_string(c.n) + "x" + std::to_string(c.k) + " matmul");
    }
    it = g->cache.emplace(key, std::make_pair(ok, res.algo)).first;
  }
  if (!it->second.first) return false;
  const float alpha = 1.0f, beta = c.beta;
  cublasStatus_t st = cublasLtMatmul(g->handle, desc.d, &alpha, c.A, la.l, c.B, lb.l, &beta, c.D,
                                     ld.l, c.D, ld.l, &it->second.second, g->workspace,
                                     g->workspace_bytes, g->stream);
  if (st != CUBLAS_STATUS_SUCCESS && c.epi != Epi::None) {
    // An epilogue the heuristic offered but the launch refused: remember, fall back.
    it->second.first = false;
    return false;
  }
  lt_check(st, "cublasLtMatmul");
  return true;
}

}  // namespace cuda
}  // namespace speed
