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

#include "mma_ptx.cuh"

#define SPEED_UNROLL _Pragma("unroll")
#include "attention_tc_kernels.cuh"
#undef SPEED_UNROLL

// SPEED_CUDA_ATTN_WARPS=8: forward and dK/dV kernels with 8 warps (128 query / key rows
// per block: half the tile loads per FLOP, lower occupancy); default 4. Both have run on a GPU
// (native/bench/NOTES.md has their times); read at every call, so a test or bench can switch.
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

}  // namespace cuda
}  // namespace speed
