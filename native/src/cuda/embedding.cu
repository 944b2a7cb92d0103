// Embeddings (backend.h "embeddings"): the sinusoidal timestep embedding, the label table
// lookup and its gradient (summed in a fixed order: no atomics).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

// Float64 inside (t f reaches ~1000 rad), as the CPU computes it.
__global__ void timestep_emb_k(const int32_t* __restrict__ t, float* __restrict__ out, int N, int dim,
                               double max_period) {
  int half = dim / 2;
  size_t total = (size_t)N * dim;
  GRID_STRIDE(i, total) {
    int j = (int)(i % dim);
    int n = (int)(i / dim);
    double v = 0.0;
    if (j < 2 * half) {
      int k = j < half ? j : j - half;
      double f = exp(-log(max_period) * (double)k / (double)half);
      double a = (double)t[n] * f;
      v = j < half ? cos(a) : sin(a);
    }
    out[i] = (float)v;
  }
}

__global__ void embedding_fwd_k(const float* __restrict__ table, const int32_t* __restrict__ idx,
                                float* __restrict__ out, int N, int D) {
  size_t total = (size_t)N * D;
  GRID_STRIDE(i, total) {
    int d = (int)(i % D);
    int n = (int)(i / D);
    out[i] = table[(size_t)idx[n] * D + d];
  }
}
// One thread per column: adds the samples in order (deterministic, no atomics).
__global__ void embedding_bwd_k(const float* __restrict__ dout, const int32_t* __restrict__ idx,
                                float* __restrict__ dtable, int N, int D) {
  int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  for (int n = 0; n < N; ++n) dtable[(size_t)idx[n] * D + d] += dout[(size_t)n * D + d];
}

}  // namespace

void timestep_embedding(const int32_t* t, float* out, int N, int dim, double max_period,
                        cudaStream_t s) {
  size_t total = (size_t)N * dim;
  if (!total) return;
  timestep_emb_k<<<grid_for(total), kThreads, 0, s>>>(t, out, N, dim, max_period);
  SPEED_CUDA_LAUNCH_CHECK("timestep_embedding");
}

void embedding_forward(const float* table, const int32_t* idx, float* out, int N, int D,
                       cudaStream_t s) {
  size_t total = (size_t)N * D;
  if (!total) return;
  embedding_fwd_k<<<grid_for(total), kThreads, 0, s>>>(table, idx, out, N, D);
  SPEED_CUDA_LAUNCH_CHECK("embedding_forward");
}

void embedding_backward(const float* dout, const int32_t* idx, float* dtable, int N, int D,
                        int rows, cudaStream_t s) {
  fill(dtable, 0.0f, (size_t)rows * D, s);
  if (!N || !D) return;
  embedding_bwd_k<<<(D + 127) / 128, 128, 0, s>>>(dout, idx, dtable, N, D);
  SPEED_CUDA_LAUNCH_CHECK("embedding_backward");
}

}  // namespace cuda
}  // namespace speed
