// Kernel development: bf16 tensor-core flash attention, forward and backward (BF16 math), laid
// out as llm.c's dev/cuda: the versions of the kernels, a check of each against the CPU backend,
// and a timing of each at DiT's attention shapes.
//   version 1  tc   the product's kernels (native/src/cuda/attention_tc.cu), 4 or 8 warps
//                   (SPEED_CUDA_ATTN_WARPS, as the backend reads it). Ran on an H100.
//   version 2  tc2  one bf16 copy of Q/K/V (and dO) per call into a workspace, cp.async double
//                   buffering of the streamed tiles, B fragments by ldmatrix (device code in
//                   attention_tc2_kernels.cuh). Compiled, linked and emulated (attention_tc_emu.py,
//                   test_attention_tc_host), never run on a GPU: native/bench/NOTES.md
//                   "Attention tc2" says what it is expected to gain and how to promote it.
// Check, per version, warp count and shape: out and lse against the CPU (2e-2, bf16 operands),
// dqkv from the CPU's out and lse (2e-2), and identical backward bits on a second run.
//   dev_cuda_attention                  every version, 4 and 8 warps: check, then time
//   dev_cuda_attention V [W] [iters]    version V (1 or 2), W warps (4 or 8)
//   dev_cuda_attention V W 0 [quick]    check only; `quick`: 3 of the shapes (compute-sanitizer)
// Prints ok/FAIL lines, a JSON line per timing ({"what": "attn_fwd"|"attn_bwd", "impl", ...}),
// and "PASSED"/"FAILED: n failure(s)"; exits 1 on a failure, 77 without a GPU.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common.h"

using namespace speed;
using namespace cudatest;

namespace dev {
using namespace speed::cuda;
#include "mma_ptx.cuh"
// the other inline-PTX wrappers that the tc2 kernels call (the host test gives them host bodies)
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
#include "attention_tc2_kernels.cuh"
#undef SPEED_UNROLL

template <int HD>
void tc2_convert_qkv(const float* qkv, const Tc2Ws& w, int N, int L, int Lp, int heads, int which0,
                     cudaStream_t st) {
  constexpr int C8 = Dims<HD>::HDP / 8;
  dim3 grid((Lp * C8 + 255) / 256, (3 - which0) * heads, N);
  attn_tc2_qkv_bf16_k<HD><<<grid, 256, 0, st>>>(qkv, w.q, N, L, Lp, heads, which0);
  SPEED_CUDA_LAUNCH_CHECK("attention tc2: qkv -> bf16");
}

template <int HD>
void tc2_fwd(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads, int warps,
             cudaStream_t st) {
  const int Lp = tc2_lp(L);
  const Tc2Ws w = tc2_ws(ws, N, L, heads, HD);
  tc2_convert_qkv<HD>(qkv, w, N, L, Lp, heads, 1, st);  // K, V (Q is read from float32)
  const float scale_log2 = 1.0f / sqrtf((float)HD) * kLog2e;
  if (warps == 8) {
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
             void* ws, int N, int L, int heads, int warps, cudaStream_t st) {
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
  if (warps == 8)
    attn_tc2_bwd_dkv_k<HD, 8><<<dim3((L + 127) / 128, heads, N), 256, 0, st>>>(
        w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * kLog2e);
  else
    attn_tc2_bwd_dkv_k<HD, 4><<<dim3((L + 63) / 64, heads, N), 128, 0, st>>>(
        w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * kLog2e);
  SPEED_CUDA_LAUNCH_CHECK("attention_backward dk,dv (bf16 tensor cores, tc2)");
}

void tc2_forward(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads, int hd,
                 int warps) {
  switch (hd) {
    case 16: return tc2_fwd<16>(qkv, out, lse, ws, N, L, heads, warps, 0);
    case 32: return tc2_fwd<32>(qkv, out, lse, ws, N, L, heads, warps, 0);
    case 64: return tc2_fwd<64>(qkv, out, lse, ws, N, L, heads, warps, 0);
    case 72: return tc2_fwd<72>(qkv, out, lse, ws, N, L, heads, warps, 0);
    default: throw Error("tc2: head_dim " + std::to_string(hd) + " not supported");
  }
}
void tc2_backward(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv,
                  void* ws, int N, int L, int heads, int hd, int warps) {
  switch (hd) {
    case 16: return tc2_bwd<16>(qkv, out, dout, lse, dqkv, ws, N, L, heads, warps, 0);
    case 32: return tc2_bwd<32>(qkv, out, dout, lse, dqkv, ws, N, L, heads, warps, 0);
    case 64: return tc2_bwd<64>(qkv, out, dout, lse, dqkv, ws, N, L, heads, warps, 0);
    case 72: return tc2_bwd<72>(qkv, out, dout, lse, dqkv, ws, N, L, heads, warps, 0);
    default: throw Error("tc2: head_dim " + std::to_string(hd) + " not supported");
  }
}
}  // namespace dev

namespace {

std::shared_ptr<Backend<float>> G;  // device memory
std::shared_ptr<Backend<float>> C;  // the reference
std::mt19937 rng(1234);

// One version with its warp count: forward and backward on device buffers. `ws` is sized for the
// largest call by the caller (version 2 only; the product's backward takes `scratch` instead).
struct Version {
  int v, warps;
  std::string name() const { return std::string(v == 1 ? "bf16_tc" : "bf16_tc2") + (warps == 8 ? "_w8" : ""); }
  void forward(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads, int hd) const {
    if (v == 1) {
      setenv("SPEED_CUDA_ATTN_WARPS", warps == 8 ? "8" : "4", 1);
      cuda::attention_tc_forward(qkv, out, lse, N, L, heads, hd, 0);
    } else {
      dev::tc2_forward(qkv, out, lse, ws, N, L, heads, hd, warps);
    }
  }
  void backward(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv,
                float* scratch, void* ws, int N, int L, int heads, int hd) const {
    if (v == 1) {
      setenv("SPEED_CUDA_ATTN_WARPS", warps == 8 ? "8" : "4", 1);
      cuda::attention_tc_backward(qkv, out, dout, lse, dqkv, scratch, N, L, heads, hd, 0);
    } else {
      dev::tc2_backward(qkv, out, dout, lse, dqkv, ws, N, L, heads, hd, warps);
    }
  }
};

size_t ws_bytes(int N, int L, int heads, int hd) { return dev::tc2_ws_bytes(N, L, heads, hd, true); }

void check(const Version& ver, int N, int L, int heads, int hd) {
  const std::string tag = ver.name() + " N" + std::to_string(N) + " L" + std::to_string(L) + " h" +
                          std::to_string(heads) + " hd" + std::to_string(hd);
  const size_t nq = (size_t)N * L * 3 * heads * hd, no = (size_t)N * L * heads * hd, nl = (size_t)N * heads * L;
  const std::vector<float> qkvh = randn(nq, rng, 1.5f), douth = randn(no, rng);
  DBuf<float> qc(*C, qkvh), oc(*C, no), lc(*C, nl), dc(*C, douth), gc(*C, nq);
  C->attention_forward(qc.p, oc.p, lc.p, N, L, heads, hd);
  C->attention_backward(qc.p, oc.p, dc.p, lc.p, gc.p, N, L, heads, hd);
  const std::vector<float> outc = oc.get(), lsec = lc.get(), dqc = gc.get();
  DBuf<float> q(*G, qkvh), o(*G, no), l(*G, nl), d(*G, douth), g(*G, nq), sc(*G, nl);
  DBuf<char> ws(*G, ws_bytes(N, L, heads, hd));
  o.poison();
  l.poison();
  devcuda::sync_all(*G);
  ver.forward(q.p, o.p, l.p, ws.p, N, L, heads, hd);
  devcuda::sync_all(*G);
  expect_close(tag + " out", o.get(), outc, 2e-2);
  expect_close(tag + " lse", l.get(), lsec, 2e-2);
  o.set(outc);  // the backward starts from the CPU's out and lse
  l.set(lsec);
  g.poison();
  devcuda::sync_all(*G);
  ver.backward(q.p, o.p, d.p, l.p, g.p, sc.p, ws.p, N, L, heads, hd);
  devcuda::sync_all(*G);
  const std::vector<float> dq1 = g.get();
  expect_close(tag + " dqkv", dq1, dqc, 2e-2);
  g.poison();
  devcuda::sync_all(*G);
  ver.backward(q.p, o.p, d.p, l.p, g.p, sc.p, ws.p, N, L, heads, hd);
  devcuda::sync_all(*G);
  expect(devcuda::same_bits(g.get(), dq1), tag + " dqkv bitwise identical on a second run");
}

void bench(const Version& ver, int iters) {
  struct Shape { int B, H, L, hd; };
  for (Shape s : {Shape{256, 16, 256, 72}, Shape{256, 6, 256, 64}}) {
    const size_t nq = (size_t)s.B * s.L * 3 * s.H * s.hd, no = (size_t)s.B * s.L * s.H * s.hd;
    DBuf<float> q(*G, nq), o(*G, no), l(*G, (size_t)s.B * s.H * s.L), d(*G, no), g(*G, nq),
        sc(*G, (size_t)s.B * s.H * s.L);
    devcuda::fill_normal(*G, q.p, nq, 1);
    devcuda::fill_normal(*G, d.p, no, 2);
    DBuf<char> ws(*G, ws_bytes(s.B, s.L, s.H, s.hd));
    const double f = 4.0 * s.B * s.H * (double)s.L * s.L * s.hd;  // forward FLOPs (2 products)
    const double fw = devcuda::median_ms(*G, iters, [&] { ver.forward(q.p, o.p, l.p, ws.p, s.B, s.L, s.H, s.hd); });
    const double bw = devcuda::median_ms(
        *G, iters, [&] { ver.backward(q.p, o.p, d.p, l.p, g.p, sc.p, ws.p, s.B, s.L, s.H, s.hd); });
    for (int b = 0; b < 2; ++b)
      std::printf("{\"what\":\"%s\",\"impl\":\"%s\",\"batch\":%d,\"heads\":%d,\"seq\":%d,\"head_dim\":%d,"
                  "\"ms\":%.5f,\"tflops\":%.2f}\n",
                  b ? "attn_bwd" : "attn_fwd", ver.name().c_str(), s.B, s.H, s.L, s.hd, b ? bw : fw,
                  (b ? 2.5 * f / (bw * 1e-3) : f / (fw * 1e-3)) * 1e-12);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int only_v = argc > 1 ? std::atoi(argv[1]) : 0;
  const int only_w = argc > 2 ? std::atoi(argv[2]) : 0;
  const int iters = argc > 3 ? std::atoi(argv[3]) : 10;
  const bool quick = argc > 4 && std::strcmp(argv[4], "quick") == 0;
  if (only_v < 0 || only_v > 2 || (only_w != 0 && only_w != 4 && only_w != 8) || iters < 0 ||
      (argc > 4 && !quick)) {
    std::fprintf(stderr, "usage: %s [version 0|1|2] [warps 0|4|8] [iters] [quick]  (0: all)\n", argv[0]);
    return 2;
  }
  G = cuda_or_skip(CudaMath::BF16);
  C = make_cpu_backend<float>(0);
  std::vector<Version> versions;
  for (int v = 1; v <= 2; ++v)
    for (int w : {4, 8})
      if ((!only_v || v == only_v) && (!only_w || w == only_w)) versions.push_back(Version{v, w});
  struct S { int N, L, heads, hd; };
  // L not a multiple of any tile, DiT-S/XL heads at DiT's L, hd 72 padded to 80, L = 1
  const std::vector<S> cases = {S{2, 67, 3, 64}, S{1, 256, 2, 72}, S{2, 67, 3, 72}, S{1, 200, 2, 72},
                                S{3, 33, 2, 32}, S{1, 1, 1, 64},  S{1, 130, 1, 16}, S{2, 70, 2, 16},
                                S{1, 1, 1, 72},  S{2, 256, 6, 64}, S{1, 300, 1, 72}};
  const std::vector<S> quick_cases = {S{2, 67, 3, 72}, S{1, 1, 1, 64}, S{1, 130, 1, 16}};
  try {
    for (const Version& ver : versions)
      for (const S& c : quick ? quick_cases : cases) check(ver, c.N, c.L, c.heads, c.hd);
    if (iters > 0 && g_failures == 0)
      for (const Version& ver : versions) bench(ver, iters);
    unsetenv("SPEED_CUDA_ATTN_WARPS");
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
