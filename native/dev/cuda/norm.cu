// Kernel development: LayerNorm + adaLN modulate (forward, backward) and the gated residual
// backward, laid out as llm.c's dev/cuda: the versions, a check of each against the CPU backend,
// and a timing of each at DiT-XL/2, batch 256.
//   version 1  the product's kernels (native/src/cuda/layernorm.cu, gated_residual.cu): one warp
//              per row; the column sums (dshift, dscale, dgate) in a second kernel. Ran on an H100.
//   version 2  one pass (norm_onepass.cuh): the LN forward with the row in registers; the
//              backward kernels read dy/x (dx/h) once and write per-block partial column sums that
//              colpart_sum_k adds in a fixed order; rows per block chosen by size
//              (norm_onepass_rows_policy). Compiled, linked and emulated (norm_onepass_emu.py,
//              test_norm_onepass_host), never run on a GPU: native/bench/NOTES.md "LN+modulate and
//              gated residual backward in one pass".
//   version 3  version 2 with 10 rows per block: blocks end inside a group of 4 rows, and 3
//              groups per block reuse the double-buffered table.
// Rows the one-pass kernels do not serve (D > 2048 float4, D > 512 scalar, or for the forward
// D > 1536 or not float4) take the product's kernels, as they would in the backend.
// Check, per version and size: y, mean, rstd (1e-5), dx (+= and =), dshift and dscale (1e-5), the
// column sums alone with dx null, dh (1e-6) and dgate (1e-5); identical backward bits on a second
// run. Sizes: L not a multiple of the rows per block, D = 50 (scalar kernels), D = 2056 (wider
// than the one-pass kernels serve), and DiT-XL/2 batch 32.
//   dev_cuda_norm                  every version: check, then time
//   dev_cuda_norm V [iters]        version V (1, 2 or 3; 0: all); iters 0: check only (compute-sanitizer)
// Prints ok/FAIL lines, JSON lines of timings ({"what", "impl", "size", "ms", "gbps"}) and
// "PASSED"/"FAILED: n failure(s)"; exits 1 on a failure, 77 without a GPU.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common.h"
#include "kernel_common.cuh"

using namespace speed;
using namespace cudatest;

namespace speed {
namespace cuda {
namespace {
#define SPEED_UNROLL _Pragma("unroll")
#include "norm_onepass.cuh"
#undef SPEED_UNROLL
}  // namespace
}  // namespace cuda
}  // namespace speed

namespace dev {
using namespace speed::cuda;

size_t scratch_floats(int N, int L, int D, int tr, int K) {
  if (N <= 0 || L <= 0 || D <= 0 || tr <= 0) return 0;
  if (((D + 3) / 4 + 31) / 32 * 32 > kMaxThreads1p) return 0;  // too wide even for float4
  return (size_t)N * ((L + tr - 1) / tr) * K * D;
}

void ln_forward(const float* x, const float* shift, const float* scale, int mod_stride, float* y,
                float* mean, float* rstd, int N, int L, int D, float eps, cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  const int warps = 8;
  if (D % 4 == 0 && mod_stride % 4 == 0 && al16(x) && al16(y) && al16(shift) && al16(scale)) {
    const int D4 = D / 4, vpl = (D4 + 31) / 32;
    if (vpl >= 1 && vpl <= kMaxVplReg) {  // (D = 0 keeps the default kernel)
      const unsigned grid = (unsigned)((rows + warps - 1) / warps);
      const float4* x4 = reinterpret_cast<const float4*>(x);
      float4* y4 = reinterpret_cast<float4*>(y);
      switch (vpl) {
#define SPEED_LN_FWD_REG(V)                                                                       \
  case V:                                                                                         \
    ln_mod_fwd_reg_k<V><<<grid, warps * 32, 0, s>>>(x4, shift, scale, mod_stride, y4, mean, rstd, \
                                                    N, L, D4, eps);                               \
    break;
        SPEED_LN_FWD_REG(1) SPEED_LN_FWD_REG(2) SPEED_LN_FWD_REG(3) SPEED_LN_FWD_REG(4)
        SPEED_LN_FWD_REG(5) SPEED_LN_FWD_REG(6) SPEED_LN_FWD_REG(7) SPEED_LN_FWD_REG(8)
        SPEED_LN_FWD_REG(9) SPEED_LN_FWD_REG(10) SPEED_LN_FWD_REG(11) SPEED_LN_FWD_REG(12)
#undef SPEED_LN_FWD_REG
      }
      SPEED_CUDA_LAUNCH_CHECK("ln_modulate_forward (float4, row in registers)");
      return;
    }
  }
  cuda::ln_modulate_forward(x, shift, scale, mod_stride, y, mean, rstd, N, L, D, eps, s);
}

// `part`: scratch_floats(N, L, D, tr, 2) floats
void ln_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                 const float* scale, int mod_stride, float* dx, float* dshift, float* dscale, int N,
                 int L, int D, bool accum_dx, int tr, float* part, cudaStream_t s) {
  size_t rows = (size_t)N * L;
  if (!rows) return;
  if (part && tr > 0 && D > 0 && N <= 65535) {
    const bool v4 = D % 4 == 0 && mod_stride % 4 == 0 && al16(dy) && al16(x) && al16(dx) &&
                    al16(scale) && al16(part);
    const int threads = ((v4 ? D / 4 : D) + 31) / 32 * 32;
    if (threads <= kMaxThreads1p) {
      const int P = (L + tr - 1) / tr;
      const dim3 grid(P, N);
      if (v4)
        ln_mod_bwd_1p_k<4><<<grid, threads, 0, s>>>(dy, x, mean, rstd, scale, mod_stride, dx, part,
                                                    L, D, tr, accum_dx);
      else
        ln_mod_bwd_1p_k<1><<<grid, threads, 0, s>>>(dy, x, mean, rstd, scale, mod_stride, dx, part,
                                                    L, D, tr, accum_dx);
      SPEED_CUDA_LAUNCH_CHECK(v4 ? "ln_modulate_backward (one pass, float4)"
                                 : "ln_modulate_backward (one pass)");
      colpart_sum_k<<<dim3((D + 127) / 128, N), 128, 0, s>>>(part, P, 2, D, dshift, dscale,
                                                            mod_stride);
      SPEED_CUDA_LAUNCH_CHECK("ln_modulate_backward (dshift, dscale from partials)");
      return;
    }
  }
  cuda::ln_modulate_backward(dy, x, mean, rstd, scale, mod_stride, dx, dshift, dscale, N, L, D,
                             accum_dx, s);
}

// `part`: scratch_floats(N, L, D, tr, 1) floats
void gated_backward(const float* dx, const float* gate, int mod_stride, const float* h, float* dh,
                    float* dgate, int N, int L, int D, int tr, float* part, cudaStream_t s) {
  if (!N || !D) return;
  if (part && tr > 0 && L > 0 && D > 0 && N <= 65535) {
    const bool v4 = D % 4 == 0 && mod_stride % 4 == 0 && al16(dx) && al16(gate) && al16(h) &&
                    al16(dh) && al16(part);
    const int threads = ((v4 ? D / 4 : D) + 31) / 32 * 32;
    if (threads <= kMaxThreads1p) {
      const int P = (L + tr - 1) / tr;
      const dim3 grid(P, N);
      if (v4)
        gated_res_bwd_1p_k<4><<<grid, threads, 0, s>>>(dx, gate, mod_stride, h, dh, part, L, D, tr);
      else
        gated_res_bwd_1p_k<1><<<grid, threads, 0, s>>>(dx, gate, mod_stride, h, dh, part, L, D, tr);
      SPEED_CUDA_LAUNCH_CHECK(v4 ? "gated_residual_backward (one pass, float4)"
                                 : "gated_residual_backward (one pass)");
      colpart_sum_k<<<dim3((D + 127) / 128, N), 128, 0, s>>>(part, P, 1, D, dgate, nullptr,
                                                            mod_stride);
      SPEED_CUDA_LAUNCH_CHECK("gated_residual_backward (dgate from partials)");
      return;
    }
  }
  cuda::gated_residual_backward(dx, gate, mod_stride, h, dh, dgate, N, L, D, s);
}
}  // namespace dev

namespace {

std::shared_ptr<Backend<float>> G;  // device memory
std::shared_ptr<Backend<float>> C;  // the reference
std::mt19937 rng(4321);

struct Version {
  int v;  // 1 product, 2 one pass (rows by size), 3 one pass (10 rows per block)
  const char* name() const { return v == 1 ? "default" : v == 2 ? "onepass" : "onepass_rows10"; }
  int rows(int N, int L, int D) const { return v == 3 ? 10 : cuda::norm_onepass_rows_policy(N, L, D); }
  size_t part_floats(int N, int L, int D) const { return v == 1 ? 0 : dev::scratch_floats(N, L, D, rows(N, L, D), 2); }
  void ln_fwd(const float* x, const float* mod, int stride, float* y, float* mean, float* rstd, int N, int L,
              int D) const {
    if (v == 1)
      cuda::ln_modulate_forward(x, mod, mod + D, stride, y, mean, rstd, N, L, D, 1e-6f, 0);
    else
      dev::ln_forward(x, mod, mod + D, stride, y, mean, rstd, N, L, D, 1e-6f, 0);
  }
  void ln_bwd(const float* dy, const float* x, const float* mean, const float* rstd, const float* mod, int stride,
              float* dx, float* dmod, int N, int L, int D, bool acc, float* part) const {
    if (v == 1)
      cuda::ln_modulate_backward(dy, x, mean, rstd, mod + D, stride, dx, dmod, dmod + D, N, L, D, acc, 0);
    else
      dev::ln_backward(dy, x, mean, rstd, mod + D, stride, dx, dmod, dmod + D, N, L, D, acc,
                       part ? rows(N, L, D) : 0, part, 0);
  }
  void gated_bwd(const float* dx, const float* mod, int stride, const float* h, float* dh, float* dmod, int N,
                 int L, int D, float* part) const {
    if (v == 1)
      cuda::gated_residual_backward(dx, mod + 2 * D, stride, h, dh, dmod + 2 * D, N, L, D, 0);
    else
      dev::gated_backward(dx, mod + 2 * D, stride, h, dh, dmod + 2 * D, N, L, D, part ? rows(N, L, D) : 0,
                          part, 0);
  }
};

// chunks [c0, c0 + nc) of D columns per sample of a [N, stride] modulation gradient
std::vector<float> chunks(const std::vector<float>& m, int N, int stride, int D, int c0, int nc) {
  std::vector<float> r;
  for (int n = 0; n < N; ++n)
    for (int d = c0 * D; d < (c0 + nc) * D; ++d) r.push_back(m[(size_t)n * stride + d]);
  return r;
}

template <typename F>
void run(F&& f) {
  devcuda::sync_all(*G);
  f();
  devcuda::sync_all(*G);
}

void check_ln(const Version& ver, int N, int L, int D) {
  const std::string tag = std::string("ln_modulate ") + ver.name() + " N" + std::to_string(N) + " L" +
                          std::to_string(L) + " D" + std::to_string(D);
  const int stride = 6 * D;
  const size_t n = (size_t)N * L * D;
  std::vector<float> xh = randn(n, rng, 2.f);
  for (float& v : xh) v += 0.5f;  // non-zero mean
  const std::vector<float> modh = randn((size_t)N * stride, rng, 0.3f), dyh = randn(n, rng), dx0 = randn(n, rng);
  DBuf<float> xc(*C, xh), mc(*C, modh), yc(*C, n), meanc(*C, (size_t)N * L), rstdc(*C, (size_t)N * L), dyc(*C, dyh),
      dxc(*C, dx0), dmc(*C, (size_t)N * stride);
  C->ln_modulate_forward(xc.p, mc.p, mc.p + D, stride, yc.p, meanc.p, rstdc.p, N, L, D, 1e-6);
  DBuf<float> x(*G, xh), m(*G, modh), y(*G, n), mean(*G, (size_t)N * L), rstd(*G, (size_t)N * L), dy(*G, dyh),
      dx(*G, dx0), dm(*G, (size_t)N * stride), part(*G, std::max<size_t>(1, ver.part_floats(N, L, D)));
  float* pp = ver.part_floats(N, L, D) ? part.p : nullptr;
  y.poison();
  run([&] { ver.ln_fwd(x.p, m.p, stride, y.p, mean.p, rstd.p, N, L, D); });
  expect_close(tag + " y", y.get(), yc.get(), 1e-5);
  expect_close(tag + " mean", mean.get(), meanc.get(), 1e-5);
  expect_close(tag + " rstd", rstd.get(), rstdc.get(), 1e-5);
  mean.set(meanc.get());
  rstd.set(rstdc.get());
  C->ln_modulate_backward(dyc.p, xc.p, meanc.p, rstdc.p, mc.p + D, stride, dxc.p, dmc.p, dmc.p + D, N, L, D, true);
  dm.poison();
  run([&] { ver.ln_bwd(dy.p, x.p, mean.p, rstd.p, m.p, stride, dx.p, dm.p, N, L, D, true, pp); });
  expect_close(tag + " dx(+=)", dx.get(), dxc.get(), 1e-5);
  expect_close(tag + " dshift,dscale", chunks(dm.get(), N, stride, D, 0, 2), chunks(dmc.get(), N, stride, D, 0, 2),
               1e-5);
  C->ln_modulate_backward(dyc.p, xc.p, meanc.p, rstdc.p, mc.p + D, stride, dxc.p, dmc.p, dmc.p + D, N, L, D, false);
  dx.poison();
  dm.poison();
  run([&] { ver.ln_bwd(dy.p, x.p, mean.p, rstd.p, m.p, stride, dx.p, dm.p, N, L, D, false, pp); });
  const std::vector<float> dx1 = dx.get(), dm1 = dm.get();
  expect_close(tag + " dx(=)", dx1, dxc.get(), 1e-5);
  dx.poison();
  dm.poison();
  run([&] { ver.ln_bwd(dy.p, x.p, mean.p, rstd.p, m.p, stride, dx.p, dm.p, N, L, D, false, pp); });
  expect(devcuda::same_bits(dx.get(), dx1) && devcuda::same_bits(dm.get(), dm1),
         tag + " backward bitwise identical on a second run");
  dm.poison();
  run([&] { ver.ln_bwd(dy.p, x.p, mean.p, rstd.p, m.p, stride, nullptr, dm.p, N, L, D, false, pp); });
  expect_close(tag + " dshift,dscale (dx null)", chunks(dm.get(), N, stride, D, 0, 2),
               chunks(dmc.get(), N, stride, D, 0, 2), 1e-5);
}

void check_gated(const Version& ver, int N, int L, int D) {
  const std::string tag = std::string("gated_residual ") + ver.name() + " N" + std::to_string(N) + " L" +
                          std::to_string(L) + " D" + std::to_string(D);
  const int stride = 6 * D;
  const size_t n = (size_t)N * L * D;
  const std::vector<float> modh = randn((size_t)N * stride, rng), hh = randn(n, rng), dxh = randn(n, rng);
  DBuf<float> mc(*C, modh), hc(*C, hh), dxc(*C, dxh), dhc(*C, n), dgc(*C, (size_t)N * stride);
  C->gated_residual_backward(dxc.p, mc.p + 2 * D, stride, hc.p, dhc.p, dgc.p + 2 * D, N, L, D);
  DBuf<float> m(*G, modh), h(*G, hh), dx(*G, dxh), dh(*G, n), dg(*G, (size_t)N * stride),
      part(*G, std::max<size_t>(1, ver.part_floats(N, L, D)));
  float* pp = ver.part_floats(N, L, D) ? part.p : nullptr;
  dh.poison();
  dg.poison();
  run([&] { ver.gated_bwd(dx.p, m.p, stride, h.p, dh.p, dg.p, N, L, D, pp); });
  const std::vector<float> dh1 = dh.get(), dg1 = dg.get();
  expect_close(tag + " dh", dh1, dhc.get(), 1e-6);
  expect_close(tag + " dgate", chunks(dg1, N, stride, D, 2, 1), chunks(dgc.get(), N, stride, D, 2, 1), 1e-5);
  dh.poison();
  dg.poison();
  run([&] { ver.gated_bwd(dx.p, m.p, stride, h.p, dh.p, dg.p, N, L, D, pp); });
  expect(devcuda::same_bits(dh.get(), dh1) && devcuda::same_bits(dg.get(), dg1),
         tag + " backward bitwise identical on a second run");
}

// DiT-XL/2, batch 256; bytes: the minimum each op must move (as test_cuda_attn_bench counts them)
void bench(const Version& ver, int iters) {
  const int N = 256, L = 256, D = 1152, stride = 6 * D;
  const size_t n = (size_t)N * L * D;
  DBuf<float> x(*G, n), y(*G, n), dx(*G, n), h(*G, n), m(*G, (size_t)N * stride), dm(*G, (size_t)N * stride),
      mean(*G, (size_t)N * L), rstd(*G, (size_t)N * L), part(*G, std::max<size_t>(1, ver.part_floats(N, L, D)));
  uint64_t seed = 10;
  for (DBuf<float>* b : {&x, &y, &dx, &h, &m}) devcuda::fill_normal(*G, b->p, b->n, seed++);
  float* pp = ver.part_floats(N, L, D) ? part.p : nullptr;
  const double copy = devcuda::median_ms(*G, iters, [&] {
    SPEED_CUDA_CHECK(cudaMemcpyAsync(y.p, x.p, n * sizeof(float), cudaMemcpyDeviceToDevice, 0));
  });
  const double copy_gbps = 2.0 * n * 4 / (copy * 1e-3) * 1e-9;
  auto row = [&](const char* what, double ms, double bytes) {
    const double gbps = bytes / (ms * 1e-3) * 1e-9;
    std::printf("{\"what\":\"%s\",\"impl\":\"%s\",\"size\":\"256x256x1152\",\"ms\":%.5f,\"gbps\":%.1f,"
                "\"of_copy\":%.3f}\n", what, ver.name(), ms, gbps, gbps / copy_gbps);
    std::fflush(stdout);
  };
  cuda::ln_modulate_forward(x.p, m.p, m.p + D, stride, y.p, mean.p, rstd.p, N, L, D, 1e-6f, 0);  // real stats
  row("ln_modulate_fwd", devcuda::median_ms(*G, iters, [&] { ver.ln_fwd(x.p, m.p, stride, y.p, mean.p, rstd.p, N, L, D); }),
      (2.0 * n + 2.0 * N * L) * 4);
  row("ln_modulate_bwd", devcuda::median_ms(*G, iters, [&] {
        ver.ln_bwd(y.p, x.p, mean.p, rstd.p, m.p, stride, dx.p, dm.p, N, L, D, false, pp);
      }), (3.0 * n + 2.0 * N * L) * 4);
  row("ln_modulate_bwd_acc", devcuda::median_ms(*G, iters, [&] {
        ver.ln_bwd(y.p, x.p, mean.p, rstd.p, m.p, stride, dx.p, dm.p, N, L, D, true, pp);
      }), (4.0 * n + 2.0 * N * L) * 4);
  row("gated_residual_bwd", devcuda::median_ms(*G, iters, [&] {
        ver.gated_bwd(y.p, m.p, stride, h.p, dx.p, dm.p, N, L, D, pp);
      }), 3.0 * n * 4);
}

}  // namespace

int main(int argc, char** argv) {
  const int only_v = argc > 1 ? std::atoi(argv[1]) : 0;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 10;
  if (only_v < 0 || only_v > 3 || iters < 0) {
    std::fprintf(stderr, "usage: %s [version 1|2|3] [iters]\n", argv[0]);
    return 2;
  }
  G = cuda_or_skip(CudaMath::FP32);
  C = make_cpu_backend<float>(0);
  std::vector<Version> versions;
  for (int v = 1; v <= 3; ++v)
    if (!only_v || v == only_v) versions.push_back(Version{v});
  try {
    for (const Version& ver : versions) {
      for (auto s : {std::array<int, 3>{2, 67, 384}, {1, 5, 72}, {3, 13, 1152}, {2, 7, 50}, {3, 29, 50}, {1, 3, 2056},
                     {32, 256, 1152}})
        check_ln(ver, s[0], s[1], s[2]);
      for (auto s : {std::array<int, 3>{2, 67, 384}, {1, 3, 50}, {3, 29, 50}, {3, 13, 1152}, {1, 3, 2056},
                     {32, 256, 1152}})
        check_gated(ver, s[0], s[1], s[2]);
    }
    if (iters > 0 && g_failures == 0)
      for (const Version& ver : versions) bench(ver, iters);
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
