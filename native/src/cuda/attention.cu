// Fused multi-head self-attention, flash style (Dao et al.): key/value tiles
// in shared memory, online softmax, the row's log-sum-exp saved for backward,
// and no L x L score matrix in device memory. Backward recomputes the scores
// from the saved log-sum-exp in two passes without atomics (deterministic):
//   pass 1, one thread per query row i:  D_i = dO_i . O_i,  dQ_i
//   pass 2, one thread per key row j:    dK_j, dV_j
// This is the float32 CUDA-core path of the FP32/TF32 math modes, and the fallback
// of BF16 mode (SPEED_CUDA_ATTENTION=fp32, unaligned pointers); BF16 mode normally
// runs the tensor-core kernels of attention_tc.cu. Layouts as backend.h: qkv [N, L, 3, heads, hd],
// out [N, L, heads, hd], lse [N, heads, L].
#include <cfloat>
#include <cmath>

#include "cuda_common.h"

namespace speed {
namespace cuda {
namespace {

constexpr int kFwdRows = 64;   // query rows (threads) per block, forward
constexpr int kFwdKeys = 64;   // keys per shared-memory tile, forward
constexpr int kChunk = 16;     // keys scored before one online-softmax rescale
constexpr int kBwdRows = 32;   // threads per block, backward passes
constexpr int kBwdTile = 32;   // rows per shared-memory tile, backward

template <int HD>
__global__ void __launch_bounds__(kFwdRows) attn_fwd_k(const float* __restrict__ qkv,
                                                       float* __restrict__ out,
                                                       float* __restrict__ lse, int L, int heads,
                                                       float scale) {
  __shared__ float Ks[kFwdKeys][HD];
  __shared__ float Vs[kFwdKeys][HD];
  const int n = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kFwdRows + threadIdx.x;
  const bool valid = i < L;
  const size_t tok = (size_t)3 * heads * HD;  // stride between tokens in qkv
  const float* base = qkv + (size_t)n * L * tok + (size_t)h * HD;
  float q[HD], o[HD];
  #pragma unroll
  for (int d = 0; d < HD; ++d) {
    q[d] = valid ? base[(size_t)i * tok + d] * scale : 0.f;
    o[d] = 0.f;
  }
  float m = -FLT_MAX, l = 0.f;
  for (int j0 = 0; j0 < L; j0 += kFwdKeys) {
    const int nk = min(kFwdKeys, L - j0);
    __syncthreads();
    for (int e = threadIdx.x; e < nk * HD; e += kFwdRows) {
      int r = e / HD, d = e % HD;
      const float* kr = base + (size_t)(j0 + r) * tok + (size_t)heads * HD;
      Ks[r][d] = kr[d];
      Vs[r][d] = kr[(size_t)heads * HD + d];
    }
    __syncthreads();
    for (int c0 = 0; c0 < nk; c0 += kChunk) {
      float s[kChunk];
      float mc = m;
      #pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        float acc = -FLT_MAX;
        if (c0 + c < nk) {
          acc = 0.f;
          #pragma unroll
          for (int d = 0; d < HD; ++d) acc += q[d] * Ks[c0 + c][d];
        }
        s[c] = acc;
        mc = fmaxf(mc, acc);
      }
      const float corr = __expf(m - mc);
      l *= corr;
      #pragma unroll
      for (int d = 0; d < HD; ++d) o[d] *= corr;
      #pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        if (c0 + c < nk) {
          float p = __expf(s[c] - mc);
          l += p;
          #pragma unroll
          for (int d = 0; d < HD; ++d) o[d] += p * Vs[c0 + c][d];
        }
      }
      m = mc;
    }
  }
  if (valid) {
    const float inv = 1.0f / l;
    float* orow = out + (((size_t)n * L + i) * heads + h) * HD;
    #pragma unroll
    for (int d = 0; d < HD; ++d) orow[d] = o[d] * inv;
    lse[((size_t)n * heads + h) * L + i] = m + logf(l);
  }
}

// Pass 1: one thread per query row. Writes D_i and dQ_i.
template <int HD>
__global__ void __launch_bounds__(kBwdRows) attn_bwd_dq_k(
    const float* __restrict__ qkv, const float* __restrict__ out, const float* __restrict__ dout,
    const float* __restrict__ lse, float* __restrict__ dqkv, float* __restrict__ Dterm, int L,
    int heads, float scale) {
  __shared__ float Ks[kBwdTile][HD];
  __shared__ float Vs[kBwdTile][HD];
  __shared__ float dQ[kBwdRows][HD + 1];
  const int n = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kBwdRows + threadIdx.x;
  const bool valid = i < L;
  const size_t tok = (size_t)3 * heads * HD;
  const float* base = qkv + (size_t)n * L * tok + (size_t)h * HD;
  const size_t orow = (((size_t)n * L + (valid ? i : 0)) * heads + h) * HD;
  float q[HD], dov[HD];
  float Di = 0.f;
  #pragma unroll
  for (int d = 0; d < HD; ++d) {
    q[d] = valid ? base[(size_t)i * tok + d] : 0.f;
    dov[d] = valid ? dout[orow + d] : 0.f;
    Di += valid ? dov[d] * out[orow + d] : 0.f;
    dQ[threadIdx.x][d] = 0.f;
  }
  const float li = valid ? lse[((size_t)n * heads + h) * L + i] : 0.f;
  for (int j0 = 0; j0 < L; j0 += kBwdTile) {
    const int nk = min(kBwdTile, L - j0);
    __syncthreads();
    for (int e = threadIdx.x; e < nk * HD; e += kBwdRows) {
      int r = e / HD, d = e % HD;
      const float* kr = base + (size_t)(j0 + r) * tok + (size_t)heads * HD;
      Ks[r][d] = kr[d];
      Vs[r][d] = kr[(size_t)heads * HD + d];
    }
    __syncthreads();
    if (!valid) continue;
    for (int c = 0; c < nk; ++c) {
      float s = 0.f, dp = 0.f;
      #pragma unroll
      for (int d = 0; d < HD; ++d) {
        s += q[d] * Ks[c][d];
        dp += dov[d] * Vs[c][d];
      }
      const float p = __expf(s * scale - li);
      const float ds = p * (dp - Di) * scale;
      #pragma unroll
      for (int d = 0; d < HD; ++d) dQ[threadIdx.x][d] += ds * Ks[c][d];
    }
  }
  if (valid) {
    float* dq = dqkv + (size_t)n * L * tok + (size_t)i * tok + (size_t)h * HD;
    #pragma unroll
    for (int d = 0; d < HD; ++d) dq[d] = dQ[threadIdx.x][d];
    Dterm[((size_t)n * heads + h) * L + i] = Di;
  }
}

// Pass 2: one thread per key row. Writes dK_j and dV_j.
template <int HD>
__global__ void __launch_bounds__(kBwdRows) attn_bwd_dkv_k(
    const float* __restrict__ qkv, const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ Dterm, float* __restrict__ dqkv, int L, int heads, float scale) {
  __shared__ float Qs[kBwdTile][HD];
  __shared__ float dOs[kBwdTile][HD];
  __shared__ float Ls[kBwdTile], Ds[kBwdTile];
  __shared__ float dK[kBwdRows][HD + 1];
  __shared__ float dV[kBwdRows][HD + 1];
  const int n = blockIdx.z, h = blockIdx.y;
  const int j = blockIdx.x * kBwdRows + threadIdx.x;
  const bool valid = j < L;
  const size_t tok = (size_t)3 * heads * HD;
  const float* base = qkv + (size_t)n * L * tok + (size_t)h * HD;
  const size_t hs = (size_t)heads * HD;
  float k[HD], v[HD];
  #pragma unroll
  for (int d = 0; d < HD; ++d) {
    k[d] = valid ? base[(size_t)j * tok + hs + d] : 0.f;
    v[d] = valid ? base[(size_t)j * tok + 2 * hs + d] : 0.f;
    dK[threadIdx.x][d] = 0.f;
    dV[threadIdx.x][d] = 0.f;
  }
  const float* lrow = lse + ((size_t)n * heads + h) * L;
  const float* drow = Dterm + ((size_t)n * heads + h) * L;
  for (int i0 = 0; i0 < L; i0 += kBwdTile) {
    const int nq = min(kBwdTile, L - i0);
    __syncthreads();
    for (int e = threadIdx.x; e < nq * HD; e += kBwdRows) {
      int r = e / HD, d = e % HD;
      Qs[r][d] = base[(size_t)(i0 + r) * tok + d];
      dOs[r][d] = dout[(((size_t)n * L + i0 + r) * heads + h) * HD + d];
    }
    for (int r = threadIdx.x; r < nq; r += kBwdRows) {
      Ls[r] = lrow[i0 + r];
      Ds[r] = drow[i0 + r];
    }
    __syncthreads();
    if (!valid) continue;
    for (int c = 0; c < nq; ++c) {
      float s = 0.f, dp = 0.f;
      #pragma unroll
      for (int d = 0; d < HD; ++d) {
        s += Qs[c][d] * k[d];
        dp += dOs[c][d] * v[d];
      }
      const float p = __expf(s * scale - Ls[c]);
      const float ds = p * (dp - Ds[c]) * scale;
      #pragma unroll
      for (int d = 0; d < HD; ++d) {
        dV[threadIdx.x][d] += p * dOs[c][d];
        dK[threadIdx.x][d] += ds * Qs[c][d];
      }
    }
  }
  if (valid) {
    float* dk = dqkv + (size_t)n * L * tok + (size_t)j * tok + hs + (size_t)h * HD;
    #pragma unroll
    for (int d = 0; d < HD; ++d) {
      dk[d] = dK[threadIdx.x][d];
      dk[hs + d] = dV[threadIdx.x][d];
    }
  }
}

template <int HD>
void fwd_launch(const float* qkv, float* out, float* lse, int N, int L, int heads, cudaStream_t s) {
  dim3 grid((L + kFwdRows - 1) / kFwdRows, heads, N);
  attn_fwd_k<HD><<<grid, kFwdRows, 0, s>>>(qkv, out, lse, L, heads, 1.0f / sqrtf((float)HD));
  SPEED_CUDA_LAUNCH_CHECK("attention_forward");
}

template <int HD>
void bwd_launch(const float* qkv, const float* out, const float* dout, const float* lse,
                float* dqkv, float* scratch, int N, int L, int heads, cudaStream_t s) {
  dim3 grid((L + kBwdRows - 1) / kBwdRows, heads, N);
  const float scale = 1.0f / sqrtf((float)HD);
  attn_bwd_dq_k<HD><<<grid, kBwdRows, 0, s>>>(qkv, out, dout, lse, dqkv, scratch, L, heads, scale);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward(dq)");
  attn_bwd_dkv_k<HD><<<grid, kBwdRows, 0, s>>>(qkv, dout, lse, scratch, dqkv, L, heads, scale);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward(dk, dv)");
}

#define SPEED_ATTN_HEAD_DIMS(X) X(16) X(32) X(64) X(72)

}  // namespace

bool attention_supports_head_dim(int hd) {
  switch (hd) {
#define X(d) case d:
    SPEED_ATTN_HEAD_DIMS(X)
#undef X
    return true;
    default:
      return false;
  }
}

static void bad_head_dim(int hd) {
  throw Error("cuda attention: head_dim " + std::to_string(hd) +
              " is not supported by the CUDA attention kernel (supported: 16, 32, 64, 72; DiT presets use 64 and 72)");
}

void attention_forward(const float* qkv, float* out, float* lse, int N, int L, int heads, int hd,
                       bool bf16, cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  if (bf16 && attention_tc_supports(hd, qkv, out, qkv, qkv) && !attention_tc_disabled_by_env()) {
    attention_tc_forward(qkv, out, lse, N, L, heads, hd, s);
    return;
  }
  switch (hd) {
#define X(d) \
  case d:    \
    fwd_launch<d>(qkv, out, lse, N, L, heads, s); \
    return;
    SPEED_ATTN_HEAD_DIMS(X)
#undef X
    default:
      bad_head_dim(hd);
  }
}

void attention_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                        float* dqkv, float* scratch, int N, int L, int heads, int hd,
                        bool bf16, cudaStream_t s) {
  if (N <= 0 || L <= 0 || heads <= 0) return;
  if (bf16 && attention_tc_supports(hd, qkv, out, dout, dqkv) && !attention_tc_disabled_by_env()) {
    attention_tc_backward(qkv, out, dout, lse, dqkv, scratch, N, L, heads, hd, s);
    return;
  }
  switch (hd) {
#define X(d) \
  case d:    \
    bwd_launch<d>(qkv, out, dout, lse, dqkv, scratch, N, L, heads, s); \
    return;
    SPEED_ATTN_HEAD_DIMS(X)
#undef X
    default:
      bad_head_dim(hd);
  }
}

}  // namespace cuda
}  // namespace speed
