// Timing (not a ctest test): the CUDA attention at PyTorch SDPA's shapes, both paths,
// and the memory-bound kernels at DiT-XL/2 sizes, as JSON lines for gpu-check.sh:
//   test_cuda_attn_bench [iters]
// Rows: {"what": "attn_fwd"|"attn_bwd", "impl": "bf16_tc"|"bf16_tc_w8"|"fp32", "batch", "heads",
// "seq", "head_dim", "ms", "tflops"}; {"what": "ln_modulate_fwd"|"ln_modulate_bwd"|
// "optimizer_step"|"copy", "size", "ms", "gbps"}; the LN+modulate and gated residual rows also
// carry "impl": "default" and "of_copy" (gbps over this run's copy row). Median of `iters`
// after one warm-up, synchronising around host clock reads. Inputs are random (never zeros).
// The candidate kernels (native/dev/cuda) are timed by their own programs there.
// Exits 77 when no GPU is usable.
#include <algorithm>
#include <chrono>
#include <cstdint>

#include "cuda_test_util.h"

using namespace speed;
using namespace cudatest;

template <typename F>
static double median_ms(Backend<float>& be, int iters, F&& fn) {
  fn();
  be.synchronize();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    be.synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

static float* dev(Backend<float>& be, size_t n, uint64_t seed) {
  float* p = static_cast<float*>(be.alloc_bytes(std::max<size_t>(n, 1) * sizeof(float)));
  be.normal(p, n, 0xA77E0000u + seed, 0);
  return p;
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 10;
  auto G = cuda_or_skip(CudaMath::BF16);
  try {
    struct Shape { int B, H, L, hd; };
    for (Shape s : {Shape{256, 16, 256, 72}, Shape{256, 6, 256, 64}}) {
      const size_t nq = (size_t)s.B * s.L * 3 * s.H * s.hd, no = (size_t)s.B * s.L * s.H * s.hd;
      float* qkv = dev(*G, nq, 1);
      float* out = dev(*G, no, 2);
      float* dout = dev(*G, no, 3);
      float* lse = dev(*G, (size_t)s.B * s.H * s.L, 4);
      float* dqkv = dev(*G, nq, 5);
      const double f = 4.0 * s.B * s.H * (double)s.L * s.L * s.hd;  // fwd FLOPs (2 products)
      const char* env = std::getenv("SPEED_CUDA_ATTENTION");
      const bool fp32_only = env && std::string(env) == "fp32";  // gpu-check's fallback
      // path 0: bf16 tensor cores (BF16 backend), 4-warp kernels; 1: the same with
      // SPEED_CUDA_ATTN_WARPS=8; 2: the float32 kernels (SPEED_CUDA_ATTENTION=fp32 on the same
      // backend, as the fallback runs)
      std::vector<int> paths;
      if (!fp32_only) paths = {0, 1};
      paths.push_back(2);
      for (int path : paths) {
        if (path == 1) setenv("SPEED_CUDA_ATTN_WARPS", "8", 1);
        else unsetenv("SPEED_CUDA_ATTN_WARPS");
        if (path == 2) setenv("SPEED_CUDA_ATTENTION", "fp32", 1);
        else if (!fp32_only) unsetenv("SPEED_CUDA_ATTENTION");
        const char* impl = path == 2 ? "fp32" : path == 1 ? "bf16_tc_w8" : "bf16_tc";
        int it = path == 2 ? std::max(2, iters / 4) : iters;
        double fw = median_ms(*G, it, [&] { G->attention_forward(qkv, out, lse, s.B, s.L, s.H, s.hd); });
        double bw = median_ms(*G, it, [&] {
          G->attention_backward(qkv, out, dout, lse, dqkv, s.B, s.L, s.H, s.hd);
        });
        unsetenv("SPEED_CUDA_ATTN_WARPS");
        if (!fp32_only) unsetenv("SPEED_CUDA_ATTENTION");
        std::printf("{\"what\":\"attn_fwd\",\"impl\":\"%s\",\"batch\":%d,\"heads\":%d,\"seq\":%d,\"head_dim\":%d,"
                    "\"ms\":%.5f,\"tflops\":%.2f}\n", impl, s.B, s.H, s.L, s.hd, fw, f / (fw * 1e-3) * 1e-12);
        std::printf("{\"what\":\"attn_bwd\",\"impl\":\"%s\",\"batch\":%d,\"heads\":%d,\"seq\":%d,\"head_dim\":%d,"
                    "\"ms\":%.5f,\"tflops\":%.2f}\n", impl, s.B, s.H, s.L, s.hd, bw, 2.5 * f / (bw * 1e-3) * 1e-12);
        std::fflush(stdout);
      }
      for (float* p : {qkv, out, dout, lse, dqkv}) G->free_bytes(p);
    }
    {  // LN + modulate and gated residual at DiT-XL/2, batch 256 (bytes: the minimum each op
       // must move: LN fwd x, y + stats; LN bwd dy, x, dx + stats (dx += reads dx too); gated
       // bwd dx, h, dh), against this run's copy
      const int N = 256, L = 256, D = 1152;
      const size_t n = (size_t)N * L * D;
      float* x = dev(*G, n, 10);
      float* y = dev(*G, n, 11);
      float* dx = dev(*G, n, 12);
      float* h = dev(*G, n, 17);
      float* mod = dev(*G, (size_t)N * 6 * D, 13);
      float* dmod = dev(*G, (size_t)N * 6 * D, 14);
      float* mean = dev(*G, (size_t)N * L, 15);
      float* rstd = dev(*G, (size_t)N * L, 16);
      double ms = median_ms(*G, iters, [&] { G->copy(y, x, n * sizeof(float)); });
      const double copy_gbps = 2.0 * n * 4 / (ms * 1e-3) * 1e-9;
      std::printf("{\"what\":\"copy\",\"size\":\"%zu MiB\",\"ms\":%.5f,\"gbps\":%.1f}\n", (n * 4) >> 20, ms,
                  copy_gbps);
      G->ln_modulate_forward(x, mod, mod + D, 6 * D, y, mean, rstd, N, L, D, 1e-6);  // real stats
      G->synchronize();
      auto row = [&](const char* what, const char* impl, double t, double bytes) {
        const double gbps = bytes / (t * 1e-3) * 1e-9;
        std::printf("{\"what\":\"%s\",\"impl\":\"%s\",\"size\":\"256x256x1152\",\"ms\":%.5f,\"gbps\":%.1f,"
                    "\"of_copy\":%.3f}\n", what, impl, t, gbps, gbps / copy_gbps);
        std::fflush(stdout);
      };
      {
        Backend<float>& be = *G;
        const char* impl = "default";
        ms = median_ms(be, iters, [&] {
          be.ln_modulate_forward(x, mod, mod + D, 6 * D, y, mean, rstd, N, L, D, 1e-6);
        });
        row("ln_modulate_fwd", impl, ms, (2.0 * n + 2.0 * N * L) * 4);
        ms = median_ms(be, iters, [&] {
          be.ln_modulate_backward(y, x, mean, rstd, mod + D, 6 * D, dx, dmod, dmod + D, N, L, D, false);
        });
        row("ln_modulate_bwd", impl, ms, (3.0 * n + 2.0 * N * L) * 4);
        ms = median_ms(be, iters, [&] {  // as the DiT blocks call it: dx accumulates
          be.ln_modulate_backward(y, x, mean, rstd, mod + D, 6 * D, dx, dmod, dmod + D, N, L, D, true);
        });
        row("ln_modulate_bwd_acc", impl, ms, (4.0 * n + 2.0 * N * L) * 4);
        ms = median_ms(be, iters, [&] {
          be.gated_residual_backward(y, mod + 2 * D, 6 * D, h, dx, dmod + 2 * D, N, L, D);
        });
        row("gated_residual_bwd", impl, ms, 3.0 * n * 4);
      }
      for (float* p : {x, y, dx, h, mod, dmod, mean, rstd}) G->free_bytes(p);
    }
    {  // AdamW + clip + EMA over DiT-XL/2's 675 M parameters
      const size_t n = 675129632;
      float* p = dev(*G, n, 20);
      float* g = dev(*G, n, 21);
      float* m = dev(*G, n, 22);
      float* v = dev(*G, n, 23);
      float* e = dev(*G, n, 24);
      G->fill(v, 1e-4f, n);
      float* losses = dev(*G, 8, 25);
      OptimHyper hp;
      hp.max_grad_norm = 1.0;
      double ms = median_ms(*G, std::max(3, iters / 2), [&] { G->optimizer_step(p, g, m, v, e, n, hp, losses, 8); });
      // 15 arrays moved: the norm pass 1, the non-finite check pass 5, the update 9
      std::printf("{\"what\":\"optimizer_step\",\"size\":\"675M\",\"ms\":%.5f,\"gbps\":%.1f}\n", ms,
                  15.0 * n * 4 / (ms * 1e-3) * 1e-9);
      std::fflush(stdout);
      for (float* q : {p, g, m, v, e, losses}) G->free_bytes(q);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_cuda_attn_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
