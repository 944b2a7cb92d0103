// Patchify / unpatchify (backend.h "patches"): one thread per element of the token tensor.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

// One thread per element of the token tensor; `inverse` scatters back.
__global__ void patchify_k(const float* __restrict__ src, float* __restrict__ dst, int N, int C, int H,
                           int W, int p, int ppc, bool inverse) {
  int G_w = W / p, G_h = H / p;
  size_t per_tok = (size_t)C * p * p;
  size_t total = (size_t)N * G_h * G_w * per_tok;
  GRID_STRIDE(i, total) {
    size_t j = i % per_tok;
    size_t tok = i / per_tok;
    int gx = (int)(tok % G_w);
    int gy = (int)((tok / G_w) % G_h);
    int n = (int)(tok / ((size_t)G_w * G_h));
    int c, py, px;
    if (ppc) {
      c = (int)(j % C);
      int pp = (int)(j / C);
      py = pp / p;
      px = pp % p;
    } else {
      c = (int)(j / (p * p));
      int pp = (int)(j % (p * p));
      py = pp / p;
      px = pp % p;
    }
    size_t img = (((size_t)n * C + c) * H + (gy * p + py)) * W + (gx * p + px);
    if (inverse)
      dst[img] = src[i];
    else
      dst[i] = src[img];
  }
}

}  // namespace

void patchify(const float* src, float* dst, int N, int C, int H, int W, int p, PatchLayout layout,
              bool inverse, float*, cudaStream_t s) {
  size_t total = (size_t)N * C * H * W;
  if (!total) return;
  patchify_k<<<grid_for(total), kThreads, 0, s>>>(src, dst, N, C, H, W, p,
                                                  layout == PatchLayout::PPC ? 1 : 0, inverse);
  SPEED_CUDA_LAUNCH_CHECK(inverse ? "unpatchify" : "patchify");
}

}  // namespace cuda
}  // namespace speed
