// bf16 tensor-core flash attention (forward and backward) for CudaMath::BF16.
//
// mma.sync.aligned.m16n8k16 bf16 x bf16 -> f32 (sm_80+, runs on Hopper). Tiles of
// Q/K/V/dO are converted from the float32 qkv layout [N, L, 3, heads, hd] into bf16
// in shared memory on load (16-byte global loads); head_dim is padded to a multiple
// of 16 (72 -> 80) with zeros, rows past L are zero and masked. Softmax statistics,
// accumulators and the outputs are float32.
//
//   forward   block = 64 query rows (4 warps x 16), loop over 64-key tiles:
//             S = Q K^T, online softmax (exp2, fp32), O += P V; out and lse (natural log).
//   backward  two kernels, no atomics (deterministic):
//     dq:     block = 64 query rows: D_i = rowsum(dO_i * O_i) (written to scratch for
//             the next kernel), then per 64-key tile: S, dP = dO V^T, P = exp(S - lse),
//             dS = P (dP - D), dQ += dS K; dQ *= scale.
//     dkv:    block = 64 key rows (4 warps x 16), per 32-query tile: S^T = K Q^T,
//             dP^T = V dO^T, P^T, dS^T; dV += P^T dO, dK += dS^T Q; dK *= scale.
//
// Fragment layouts (PTX ISA, m16n8k16, .bf16): g = lane / 4, t = lane % 4.
//   A (16x16 row): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B (16x8 col):  b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8.., n = g)
//   C (16x8):      c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
// So an accumulator pair of n8 tiles is exactly an A fragment of the next product
// (P -> P V, dS -> dS K). B fragments are 32-bit shared loads of bf16 pairs that are
// adjacent along k: operands whose k is the head dimension are stored row-major
// [row][d]; operands whose k is the key/query index are stored transposed [d][row].
// Row strides (in 32-bit words) are 4 or 12 mod 32, so the 8 rows x 4 words that a
// warp reads per fragment fall in 32 different banks.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_common.h"

namespace speed {
namespace cuda {
namespace {

// ---- inline PTX (the kernels in attention_tc_kernels.cuh call only these wrappers; the
// host test gives them host bodies that emulate the instructions per the PTX ISA) ----
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 mma needs sm_80+; the host never selects this path there
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}
// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i (16 bytes each); r[i] is
// matrix i's fragment: (row lane/4, cols 2(lane%4), +1), or with .trans (rows 2(lane%4), +1;
// col lane/4).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}

#define SPEED_UNROLL _Pragma("unroll")
#include "attention_tc_kernels.cuh"
#undef SPEED_UNROLL

// SPEED_CUDA_ATTN_WARPS=8: forward and dK/dV kernels with 8 warps (128 query / key rows
// per block: half the tile loads per FLOP, lower occupancy); default 4. For A/B timing.
int attn_warps() {
  const char* e = std::getenv("SPEED_CUDA_ATTN_WARPS");
  return e && std::strcmp(e, "8") == 0 ? 8 : 4;
}

template <int HD, int WARPS>
void tc_fwd_w(const float* qkv, float* out, float* lse, int N, int L, int heads, cudaStream_t st) {
  constexpr int ROWS = 16 * WARPS;
  dim3 grid((L + ROWS - 1) / ROWS, heads, N);
  const float scale = 1.0f / sqrtf((float)HD);
  attn_tc_fwd_k<HD, WARPS><<<grid, WARPS * 32, 0, st>>>(qkv, out, lse, L, heads, scale * kLog2e);
  SPEED_CUDA_LAUNCH_CHECK("attention_forward (bf16 tensor cores)");
}
template <int HD>
void tc_fwd(const float* qkv, float* out, float* lse, int N, int L, int heads, cudaStream_t st) {
  if (attn_warps() == 8)
    tc_fwd_w<HD, 8>(qkv, out, lse, N, L, heads, st);
  else
    tc_fwd_w<HD, 4>(qkv, out, lse, N, L, heads, st);
}

template <int HD>
void tc_bwd(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv,
            float* scratch, int N, int L, int heads, cudaStream_t st) {
  dim3 grid((L + kRows - 1) / kRows, heads, N);
  const float scale = 1.0f / sqrtf((float)HD);
  attn_tc_bwd_dq_k<HD><<<grid, kThreads, 0, st>>>(qkv, out, dout, lse, dqkv, scratch, L, heads, scale,
                                                   scale * kLog2e);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward dq (bf16 tensor cores)");
  if (attn_warps() == 8) {
    dim3 g8((L + 127) / 128, heads, N);
    attn_tc_bwd_dkv_k<HD, 8><<<g8, 256, 0, st>>>(qkv, dout, lse, scratch, dqkv, L, heads, scale,
                                                 scale * kLog2e);
  } else {
    attn_tc_bwd_dkv_k<HD, 4><<<grid, kThreads, 0, st>>>(qkv, dout, lse, scratch, dqkv, L, heads, scale,
                                                        scale * kLog2e);
  }
  SPEED_CUDA_LAUNCH_CHECK("attention_backward dk,dv (bf16 tensor cores)");
}

constexpr int kPadRows = 128;  // Lp = L rounded up to this (>= every tile's rows, and a multiple of each)
inline int tc2_lp(int L) { return (L + kPadRows - 1) / kPadRows * kPadRows; }

// Workspace (bytes, 256-aligned parts): Q, K, V bf16 [N][heads][Lp][HDP] each; backward adds
// dO bf16 (same shape), lse2 and D float [N][heads][Lp].
struct Tc2Ws {
  __nv_bfloat16 *q, *k, *v, *dO;
  float *lse2, *D;
};
size_t tc2_ws_bytes(int N, int L, int heads, int hd, bool backward) {
  const size_t hdp = (size_t)(hd + 15) / 16 * 16, nhl = (size_t)N * heads * tc2_lp(L);
  const size_t e = nhl * hdp * 2;  // bytes of one bf16 matrix set (multiple of 256: Lp % 128 == 0)
  return backward ? 4 * e + 2 * nhl * 4 : 3 * e;
}
Tc2Ws tc2_ws(void* ws, int N, int L, int heads, int hd) {
  const size_t hdp = (size_t)(hd + 15) / 16 * 16, nhl = (size_t)N * heads * tc2_lp(L);
  char* p = static_cast<char*>(ws);
  Tc2Ws w;
  w.q = reinterpret_cast<__nv_bfloat16*>(p);
  w.k = w.q + nhl * hdp;
  w.v = w.k + nhl * hdp;
  w.dO = w.v + nhl * hdp;
  w.lse2 = reinterpret_cast<float*>(w.dO + nhl * hdp);
  w.D = w.lse2 + nhl;
  return w;
}

template <int HD>
void tc2_convert_qkv(const float* qkv, const Tc2Ws& w, int N, int L, int Lp, int heads, int which0,
                     cudaStream_t st) {
  constexpr int C8 = Dims<HD>::HDP / 8;
  dim3 grid((Lp * C8 + 255) / 256, (3 - which0) * heads, N);
  attn_tc2_qkv_bf16_k<HD><<<grid, 256, 0, st>>>(qkv, w.q, N, L, Lp, heads, which0);
  SPEED_CUDA_LAUNCH_CHECK("attention tc2: qkv -> bf16");
}

template <int HD>
void tc2_fwd(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads, cudaStream_t st) {
  const int Lp = tc2_lp(L);
  const Tc2Ws w = tc2_ws(ws, N, L, heads, HD);
  tc2_convert_qkv<HD>(qkv, w, N, L, Lp, heads, 1, st);  // K, V (Q is read from float32)
  const float scale_log2 = 1.0f / sqrtf((float)HD) * kLog2e;
  if (attn_warps() == 8) {
    dim3 grid((L + 127) / 128, heads, N);
    attn_tc2_fwd_k<HD, 8><<<grid, 256, 0, st>>>(qkv, w.k, w.v, out, lse, L, Lp, heads, scale_log2);
  } else {
    dim3 grid((L + 63) / 64, heads, N);
    attn_tc2_fwd_k<HD, 4><<<grid, 128, 0, st>>>(qkv, w.k, w.v, out, lse, L, Lp, heads, scale_log2);
  }
  SPEED_CUDA_LAUNCH_CHECK("attention_forward (bf16 tensor cores, tc2)");
}

template <int HD>
void tc2_bwd(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv,
             void* ws, int N, int L, int heads, cudaStream_t st) {
  const int Lp = tc2_lp(L);
  const Tc2Ws w = tc2_ws(ws, N, L, heads, HD);
  tc2_convert_qkv<HD>(qkv, w, N, L, Lp, heads, 0, st);  // Q, K, V
  attn_tc2_dout_prep_k<HD><<<dim3(Lp / 8, heads, N), 256, 0, st>>>(out, dout, lse, w.dO, w.lse2, w.D, L, Lp,
                                                                   heads);
  SPEED_CUDA_LAUNCH_CHECK("attention tc2: dO -> bf16, D, lse2");
  const float scale = 1.0f / sqrtf((float)HD);
  attn_tc2_bwd_dq_k<HD><<<dim3((L + kRows - 1) / kRows, heads, N), kThreads, 0, st>>>(
      w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * kLog2e);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward dq (bf16 tensor cores, tc2)");
  if (attn_warps() == 8)
    attn_tc2_bwd_dkv_k<HD, 8><<<dim3((L + 127) / 128, heads, N), 256, 0, st>>>(
        w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * kLog2e);
  else
    attn_tc2_bwd_dkv_k<HD, 4><<<dim3((L + 63) / 64, heads, N), 128, 0, st>>>(
        w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * kLog2e);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward dk,dv (bf16 tensor cores, tc2)");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool attention_tc_supports(int hd, const void* a, const void* b, const void* c, const void* d) {
  if (hd != 16 && hd != 32 && hd != 64 && hd != 72) return false;
  static const int major = [] {  // compute capability of the current device (sm_80+ needed)
    int dev = 0, m = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return m;
  }();
  if (major < 8) return false;
  return aligned16(a) && aligned16(b) && aligned16(c) && aligned16(d);
}

bool attention_tc_disabled_by_env() {
  const char* e = std::getenv("SPEED_CUDA_ATTENTION");
  return e && (std::strcmp(e, "fp32") == 0 || std::strcmp(e, "FP32") == 0);
}

void attention_tc_forward(const float* qkv, float* out, float* lse, int N, int L, int heads, int hd,
                          cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  switch (hd) {
    case 16: return tc_fwd<16>(qkv, out, lse, N, L, heads, s);
    case 32: return tc_fwd<32>(qkv, out, lse, N, L, heads, s);
    case 64: return tc_fwd<64>(qkv, out, lse, N, L, heads, s);
    case 72: return tc_fwd<72>(qkv, out, lse, N, L, heads, s);
    default: throw Error("cuda attention (bf16): head_dim " + std::to_string(hd) + " not supported");
  }
}

void attention_tc_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                           float* dqkv, float* scratch, int N, int L, int heads, int hd,
                           cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  switch (hd) {
    case 16: return tc_bwd<16>(qkv, out, dout, lse, dqkv, scratch, N, L, heads, s);
    case 32: return tc_bwd<32>(qkv, out, dout, lse, dqkv, scratch, N, L, heads, s);
    case 64: return tc_bwd<64>(qkv, out, dout, lse, dqkv, scratch, N, L, heads, s);
    case 72: return tc_bwd<72>(qkv, out, dout, lse, dqkv, scratch, N, L, heads, s);
    default: throw Error("cuda attention (bf16): head_dim " + std::to_string(hd) + " not supported");
  }
}

// SPEED_CUDA_ATTENTION=tc2 selects the tc2 kernels, =tc the kernels above; unset, the default
// below. Read at every call (as SPEED_CUDA_ATTN_WARPS), so that a test can switch with setenv.
constexpr bool kTc2Default = false;  // flip once a GPU run shows tc2 faster and passing
bool attention_tc2_selected() {
  const char* e = std::getenv("SPEED_CUDA_ATTENTION");
  if (e && std::strcmp(e, "tc2") == 0) return true;
  if (e && std::strcmp(e, "tc") == 0) return false;
  return kTc2Default;
}

size_t attention_tc2_workspace_bytes(int N, int L, int heads, int hd, bool backward) {
  if (N <= 0 || L <= 0 || heads <= 0) return 0;
  return tc2_ws_bytes(N, L, heads, hd, backward);
}

void attention_tc2_forward(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads,
                           int hd, cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  switch (hd) {
    case 16: return tc2_fwd<16>(qkv, out, lse, ws, N, L, heads, s);
    case 32: return tc2_fwd<32>(qkv, out, lse, ws, N, L, heads, s);
    case 64: return tc2_fwd<64>(qkv, out, lse, ws, N, L, heads, s);
    case 72: return tc2_fwd<72>(qkv, out, lse, ws, N, L, heads, s);
    default: throw Error("cuda attention (bf16, tc2): head_dim " + std::to_string(hd) + " not supported");
  }
}

void attention_tc2_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                            float* dqkv, void* ws, int N, int L, int heads, int hd, cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  switch (hd) {
    case 16: return tc2_bwd<16>(qkv, out, dout, lse, dqkv, ws, N, L, heads, s);
    case 32: return tc2_bwd<32>(qkv, out, dout, lse, dqkv, ws, N, L, heads, s);
    case 64: return tc2_bwd<64>(qkv, out, dout, lse, dqkv, ws, N, L, heads, s);
    case 72: return tc2_bwd<72>(qkv, out, dout, lse, dqkv, ws, N, L, heads, s);
    default: throw Error("cuda attention (bf16, tc2): head_dim " + std::to_string(hd) + " not supported");
  }
}

}  // namespace cuda
}  // namespace speed
