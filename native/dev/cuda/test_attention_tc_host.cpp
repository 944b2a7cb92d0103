// The bf16 tensor-core attention kernels: tc, what the CUDA backend runs in BF16 math
// (native/src/cuda/attention_tc_kernels.cuh), and tc2, the candidate in this folder
// (attention_tc2_kernels.cuh; attention.cu here runs it on a GPU), compiled here as plain C++ and
// run on the host, the way test_norm_onepass_host runs norm_onepass.cuh: one std::thread per CUDA
// thread, a real barrier for __syncthreads, __shared__ arrays as statics (one block at a time),
// the launch configurations of attention_tc.cu's launchers (tc) and attention.cu's (tc2). The
// inline-PTX wrappers get host bodies that follow the PTX ISA:
//   mma16816      warp-collective: the 32 lanes deposit their A/B/C fragments, warp barrier, each
//                 lane assembles the 16x16 A and 16x8 B ("Matrix Fragments for mma.m16n8k16 with
//                 floating point type") and computes its own D fragment (float32 sums of the
//                 exact bf16 products);
//   ldsm_x4(_t)   warp-collective ldmatrix .x4 (.trans): lanes 8i..8i+7 give matrix i's row
//                 addresses (16-byte aligned, checked), lane l gets (row l/4, cols 2(l%4), +1) of
//                 each matrix, or with .trans (rows 2(l%4), +1; col l/4);
//   cp_async16    16-byte copy, both addresses 16-byte aligned (checked). Mode Immediate copies at
//                 issue; mode Deferred fills the destination with NaN bytes at issue and copies at
//                 the cp_async_wait<N> that retires its commit group (per thread, as the PTX
//                 wait_group), so a read of a stage before its wait + barrier, or a prefetch into
//                 a stage still being read, shows; a copy never waited for fails the test;
//   __shfl_xor_sync  warp-collective through memory (full mask checked);
//   smem_u32      a 32-bit offset of the static from an anchor (the host image's .bss).
// A warp collective deposits into one of two slot sets (alternating per call) and waits once at
// the warp barrier: a lane can only overwrite a set after the next barrier, which the others pass
// after reading it. Each lane also deposits which collective it is in; a mismatch fails.
// Checked against the CPU backend's attention (bf16 tolerances), poisoned outputs (every element
// written), and identical bits on a second run (threads interleave differently; tc2's second run
// copies immediately). What this cannot show: timing, the device's memory model (weak ordering,
// caches), real cp.async asynchrony beyond the deferred mode, bank conflicts, register spills.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "cpu_test_util.h"
#include "cuda_host.h"
#include "speed/backend.h"
#include "speed/cpu.h"

namespace emu {

// this test's warp collectives (cuda_host.h's Slot carries their operands)
enum AttnOp : int { kMma = kUserOp, kLdsm, kLdsmT };

inline float lo_bf(uint32_t w) { return bf_bits2f(static_cast<uint16_t>(w & 0xffffu)); }
inline float hi_bf(uint32_t w) { return bf_bits2f(static_cast<uint16_t>(w >> 16)); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, D = A B + C, per the PTX ISA fragments
// (g = lane / 4, t = lane % 4): A a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
// B b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8.., n = g); C/D c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..).
inline void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Slot m{};
  m.op = kMma;
  std::memcpy(m.a, a, sizeof m.a);
  m.b0 = b0;
  m.b1 = b1;
  const Slot* s = warp_exchange(m);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const uint32_t* r = s[l].a;
    A[g][2 * t] = lo_bf(r[0]), A[g][2 * t + 1] = hi_bf(r[0]);
    A[g + 8][2 * t] = lo_bf(r[1]), A[g + 8][2 * t + 1] = hi_bf(r[1]);
    A[g][2 * t + 8] = lo_bf(r[2]), A[g][2 * t + 9] = hi_bf(r[2]);
    A[g + 8][2 * t + 8] = lo_bf(r[3]), A[g + 8][2 * t + 9] = hi_bf(r[3]);
    B[2 * t][g] = lo_bf(s[l].b0), B[2 * t + 1][g] = hi_bf(s[l].b0);
    B[2 * t + 8][g] = lo_bf(s[l].b1), B[2 * t + 9][g] = hi_bf(s[l].b1);
  }
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = 0.f;
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    c[e] += acc;
  }
}

// Shared addresses (smem_u32): 32-bit offsets of the __shared__ statics from an anchor static
// (the host image's .bss is well within 2 GB). The tc2 kernels take the address of their one
// __shared__ array `sm`; the launcher helpers below say its size (g_sm_bytes), smem_u32 records
// the region, every ldmatrix / cp.async address is checked to lie inside a recorded region, and
// run() fills the regions with NaN bytes before every block, as a block's shared memory starts
// with garbage on a GPU (a block reading what it did not write would otherwise see the previous
// block's tile; the first block of a kernel's first launch still sees zeros, but every case runs
// twice and must give the same bits).
alignas(16) inline char g_smem_anchor[16];
struct SmRegion {
  char* p;
  size_t bytes;
};
inline std::mutex g_sm_mu;
inline std::vector<SmRegion> g_sm_regions;
inline size_t g_sm_bytes = 0;  // size of the __shared__ array of the kernel being launched
inline uint32_t smem_u32(const void* p) {
  char* c = const_cast<char*>(static_cast<const char*>(p));
  const std::ptrdiff_t d = c - g_smem_anchor;
  if (d != static_cast<std::ptrdiff_t>(static_cast<std::int32_t>(d))) die("shared static too far from the anchor");
  {
    std::lock_guard<std::mutex> lk(g_sm_mu);
    bool known = false;
    for (const SmRegion& r : g_sm_regions) known |= r.p == c;
    if (!known) {
      if (g_sm_bytes == 0) die("smem_u32 in a kernel whose shared size the test does not know");
      g_sm_regions.push_back(SmRegion{c, g_sm_bytes});
    }
  }
  return static_cast<uint32_t>(static_cast<std::int32_t>(d));
}
inline char* smem_ptr(uint32_t a, size_t bytes) {
  char* c = g_smem_anchor + static_cast<std::int32_t>(a);
  // no lock: regions are added only by a kernel's first smem_u32 calls (under the lock), which
  // come before any use of the address in every thread
  for (const SmRegion& r : g_sm_regions)
    if (c >= r.p && c + bytes <= r.p + r.bytes) return c;
  die("shared address outside the kernel's __shared__ array");
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16
inline void ldsm_common(uint32_t (&r)[4], uint32_t addr, bool trans) {
  Slot m{};
  m.op = trans ? kLdsmT : kLdsm;
  m.addr = addr;
  if (addr & 15u) die("ldmatrix row address not 16-byte aligned");
  const Slot* s = warp_exchange(m);
  const int lane = threadIdx.x & 31;
  for (int i = 0; i < 4; ++i) {
    auto el = [&](int row, int col) {  // element (row, col) of matrix i
      uint16_t v;
      std::memcpy(&v, smem_ptr(s[8 * i + row].addr + 2 * col, 2), 2);
      return static_cast<uint32_t>(v);
    };
    if (!trans)
      r[i] = el(lane >> 2, 2 * (lane & 3)) | el(lane >> 2, 2 * (lane & 3) + 1) << 16;
    else
      r[i] = el(2 * (lane & 3), lane >> 2) | el(2 * (lane & 3) + 1, lane >> 2) << 16;
  }
}
inline void ldsm_x4(uint32_t (&r)[4], uint32_t addr) { ldsm_common(r, addr, false); }
inline void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) { ldsm_common(r, addr, true); }

// cp.async.cg.shared.global 16 B, commit_group, wait_group N (per thread)
enum class CpMode { Immediate, Deferred };
inline CpMode g_cp_mode = CpMode::Immediate;
struct CpPending {
  uint32_t dst;
  const void* src;
  int group;
};
inline thread_local std::vector<CpPending> t_cp;
inline thread_local int t_groups = 0;  // committed groups; copies issued now belong to group t_groups
inline std::atomic<int> g_cp_lost{0};  // copies never waited for (at thread exit)
inline void cp_async16(uint32_t dst, const void* src) {
  if ((dst & 15u) || (reinterpret_cast<std::uintptr_t>(src) & 15u)) die("cp.async address not 16-byte aligned");
  if (g_cp_mode == CpMode::Immediate) {
    std::memcpy(smem_ptr(dst, 16), src, 16);
  } else {
    std::memset(smem_ptr(dst, 16), 0xff, 16);  // bf16 / float NaN until the wait
    t_cp.push_back(CpPending{dst, src, t_groups});
  }
}
inline void cp_async_commit() { ++t_groups; }
template <int PENDING>
inline void cp_async_wait() {
  const int done_below = t_groups - PENDING;  // groups older than the newest PENDING complete
  size_t k = 0;
  for (const CpPending& c : t_cp) {
    if (c.group < done_below)
      std::memcpy(smem_ptr(c.dst, 16), c.src, 16);
    else
      t_cp[k++] = c;
  }
  t_cp.resize(k);
}

#include "cuda_host_begin.h"
#include "attention_tc_kernels.cuh"
#include "attention_tc2_kernels.cuh"
#include "cuda_host_end.h"

// cuda_host.h's launch() with this test's per-thread state: the cp.async groups start empty
// for every thread of every block, and a copy never waited for is counted; before every
// block the kernel's shared array is filled with NaN bytes.
template <typename K>
void run(dim3 grid, unsigned threads, K kernel) {
  launch(
      grid, threads,
      [&kernel] {
        t_cp.clear();
        t_groups = 0;
        kernel();
        g_cp_lost += static_cast<int>(t_cp.size());
      },
      [] {
        for (const SmRegion& r : g_sm_regions) std::memset(r.p, 0xff, r.bytes);
      });
}

}  // namespace emu

using namespace cputest;
using F = std::vector<float>;

namespace {

std::shared_ptr<speed::Backend<float>> C;
std::mt19937 rng(1234);
const float kNaN = std::numeric_limits<float>::quiet_NaN();

F randn(size_t n, float s = 1.f) {
  std::normal_distribution<float> d(0.f, s);
  F v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// relative L2 error of the elements where `pick` is true; absolute where the reference is ~0
// (dQ, dK at L = 1); NaN anywhere in got (an element not written) is +inf.
double rel(const F& got, const F& ref, const std::vector<char>& pick) {
  double num = 0, den = 0;
  size_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!pick.empty() && !pick[i]) continue;
    if (!std::isfinite(got[i])) return INFINITY;
    num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
    den += (double)ref[i] * ref[i];
    ++n;
  }
  return den > 1e-6 * n ? std::sqrt(num / den) : std::sqrt(num);
}
bool close(const std::string& what, const F& got, const F& ref, double tol, const std::vector<char>& pick = {}) {
  const double r = rel(got, ref, pick);
  char d[64];
  std::snprintf(d, sizeof d, "rel %.2e (tol %.0e)", r, tol);
  return expect(r <= tol, what, d);
}
bool same_bits(const F& a, const F& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// 16-byte aligned, NaN-byte-filled buffer (the tc2 workspace)
struct Ws {
  std::vector<emu::uint4> v;
  explicit Ws(size_t bytes) : v((bytes + 15) / 16) { std::memset(v.data(), 0xff, v.size() * 16); }
  char* p() { return reinterpret_cast<char*>(v.data()); }
};

// ---- the launchers of attention_tc.cu and attention.cu (grid, block, arguments), host side ----
template <int HD, int W>
void tc_fwd(const float* qkv, float* out, float* lse, int N, int L, int heads) {
  constexpr int ROWS = 16 * W;
  const float scale = 1.0f / sqrtf((float)HD);
  emu::run(emu::dim3{(unsigned)((L + ROWS - 1) / ROWS), (unsigned)heads, (unsigned)N}, W * 32,
              [&] { emu::attn_tc_fwd_k<HD, W>(qkv, out, lse, L, heads, scale * emu::kLog2e); });
}
template <int HD, int W>
void tc_bwd(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv, float* scratch,
            int N, int L, int heads) {
  const float scale = 1.0f / sqrtf((float)HD);
  const emu::dim3 grid{(unsigned)((L + emu::kRows - 1) / emu::kRows), (unsigned)heads, (unsigned)N};
  emu::run(grid, emu::kThreads, [&] {
    emu::attn_tc_bwd_dq_k<HD>(qkv, out, dout, lse, dqkv, scratch, L, heads, scale, scale * emu::kLog2e);
  });
  if (W == 8)
    emu::run(emu::dim3{(unsigned)((L + 127) / 128), (unsigned)heads, (unsigned)N}, 256, [&] {
      emu::attn_tc_bwd_dkv_k<HD, 8>(qkv, dout, lse, scratch, dqkv, L, heads, scale, scale * emu::kLog2e);
    });
  else
    emu::run(grid, emu::kThreads, [&] {
      emu::attn_tc_bwd_dkv_k<HD, 4>(qkv, dout, lse, scratch, dqkv, L, heads, scale, scale * emu::kLog2e);
    });
}

// tc2 workspace: attention_tc2_kernels.cuh's, as the launchers of attention.cu use it
using emu::tc2_lp;
using emu::Tc2Ws;
using emu::tc2_ws_bytes;
using emu::tc2_ws;
template <int HD>
void tc2_convert(const float* qkv, const Tc2Ws& w, int N, int L, int Lp, int heads, int which0) {
  constexpr int C8 = emu::Dims<HD>::HDP / 8;
  emu::run(emu::dim3{(unsigned)((Lp * C8 + 255) / 256), (unsigned)((3 - which0) * heads), (unsigned)N}, 256,
              [&] { emu::attn_tc2_qkv_bf16_k<HD>(qkv, w.q, N, L, Lp, heads, which0); });
}
template <int HD, int W>
void tc2_fwd(const float* qkv, float* out, float* lse, void* ws, int N, int L, int heads) {
  const int Lp = tc2_lp(L);
  const Tc2Ws w = tc2_ws(ws, N, L, heads, HD);
  tc2_convert<HD>(qkv, w, N, L, Lp, heads, 1);
  const float scale_log2 = 1.0f / sqrtf((float)HD) * emu::kLog2e;
  emu::g_sm_bytes = 4 * emu::kKeys * emu::Dims<HD>::SW * 4;  // sm of attn_tc2_fwd_k
  emu::run(emu::dim3{(unsigned)((L + 16 * W - 1) / (16 * W)), (unsigned)heads, (unsigned)N}, W * 32,
              [&] { emu::attn_tc2_fwd_k<HD, W>(qkv, w.k, w.v, out, lse, L, Lp, heads, scale_log2); });
}
template <int HD, int W>
void tc2_bwd(const float* qkv, const float* out, const float* dout, const float* lse, float* dqkv, void* ws, int N,
             int L, int heads) {
  const int Lp = tc2_lp(L);
  const Tc2Ws w = tc2_ws(ws, N, L, heads, HD);
  tc2_convert<HD>(qkv, w, N, L, Lp, heads, 0);
  emu::run(emu::dim3{(unsigned)(Lp / 8), (unsigned)heads, (unsigned)N}, 256,
              [&] { emu::attn_tc2_dout_prep_k<HD>(out, dout, lse, w.dO, w.lse2, w.D, L, Lp, heads); });
  const float scale = 1.0f / sqrtf((float)HD);
  emu::g_sm_bytes = 4 * emu::kKeys * emu::Dims<HD>::SW * 4;  // sm of attn_tc2_bwd_dq_k
  emu::run(emu::dim3{(unsigned)((L + emu::kRows - 1) / emu::kRows), (unsigned)heads, (unsigned)N}, emu::kThreads,
              [&] {
                emu::attn_tc2_bwd_dq_k<HD>(w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale,
                                           scale * emu::kLog2e);
              });
  emu::g_sm_bytes = 2 * emu::Tc2DkvStage<HD>::bytes;  // sm of attn_tc2_bwd_dkv_k
  emu::run(emu::dim3{(unsigned)((L + 16 * W - 1) / (16 * W)), (unsigned)heads, (unsigned)N}, W * 32, [&] {
    emu::attn_tc2_bwd_dkv_k<HD, W>(w.q, w.k, w.v, w.dO, w.lse2, w.D, dqkv, L, Lp, heads, scale, scale * emu::kLog2e);
  });
}

// which part of dqkv [N, L, 3, heads, hd] an element is (0 dQ, 1 dK, 2 dV)
std::vector<char> part_mask(int N, int L, int heads, int hd, int which) {
  std::vector<char> m((size_t)N * L * 3 * heads * hd, 0);
  for (int r = 0; r < N * L; ++r)
    for (int i = 0; i < heads * hd; ++i) m[((size_t)r * 3 + which) * heads * hd + i] = 1;
  return m;
}

template <int HD, int W>
void test_case(bool tc2, int N, int L, int heads) {
  const std::string tag = std::string(tc2 ? "tc2" : "tc ") + " w" + std::to_string(W) + " N" + std::to_string(N) +
                          " L" + std::to_string(L) + " heads" + std::to_string(heads) + " hd" + std::to_string(HD);
  const size_t nq = (size_t)N * L * 3 * heads * HD, no = (size_t)N * L * heads * HD, nl = (size_t)N * heads * L;
  const F qkv = randn(nq), dout = randn(no);
  F outc(no), lsec(nl), dqkvc(nq);
  C->attention_forward(qkv.data(), outc.data(), lsec.data(), N, L, heads, HD);
  C->attention_backward(qkv.data(), outc.data(), dout.data(), lsec.data(), dqkvc.data(), N, L, heads, HD);

  auto run = [&](F& out, F& lse, F& dqkv) {
    if (tc2) {
      Ws wf(tc2_ws_bytes(N, L, heads, HD, false)), wb(tc2_ws_bytes(N, L, heads, HD, true));
      tc2_fwd<HD, W>(qkv.data(), out.data(), lse.data(), wf.p(), N, L, heads);
      // the backward takes the CPU's out and lse, so that its check does not depend on the forward
      tc2_bwd<HD, W>(qkv.data(), outc.data(), dout.data(), lsec.data(), dqkv.data(), wb.p(), N, L, heads);
    } else {
      F scratch(nl, kNaN);
      tc_fwd<HD, W>(qkv.data(), out.data(), lse.data(), N, L, heads);
      tc_bwd<HD, W>(qkv.data(), outc.data(), dout.data(), lsec.data(), dqkv.data(), scratch.data(), N, L, heads);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  F out(no, kNaN), lse(nl, kNaN), dqkv(nq, kNaN);
  emu::g_cp_mode = emu::CpMode::Deferred;
  emu::g_cp_lost = 0;
  run(out, lse, dqkv);
  expect(emu::g_cp_lost == 0, tag + " every cp.async waited for");
  close(tag + " out", out, outc, 8e-3);
  close(tag + " lse", lse, lsec, 1e-2);  // bf16 q.k alone at L = 1: ~5e-3
  close(tag + " dQ", dqkv, dqkvc, 2e-2, part_mask(N, L, heads, HD, 0));
  close(tag + " dK", dqkv, dqkvc, 2e-2, part_mask(N, L, heads, HD, 1));
  close(tag + " dV", dqkv, dqkvc, 2e-2, part_mask(N, L, heads, HD, 2));
  std::printf("     %s: %.1f s\n", tag.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  F out2(no, kNaN), lse2(nl, kNaN), dqkv2(nq, kNaN);
  emu::g_cp_mode = emu::CpMode::Immediate;
  run(out2, lse2, dqkv2);
  expect(same_bits(out, out2) && same_bits(lse, lse2) && same_bits(dqkv, dqkv2),
         tag + (tc2 ? " bitwise identical on a second run (cp.async immediate)" : " bitwise identical on a second run"));
}

}  // namespace

int main(int argc, char** argv) {
  C = speed::make_cpu_backend<float>(1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int tc2 = 0; tc2 < 2; ++tc2) {
    const bool b = tc2 != 0;
    test_case<72, 4>(b, 2, 67, 2);
    test_case<16, 4>(b, 2, 1, 2);
    test_case<32, 8>(b, 2, 33, 2);
    test_case<64, 8>(b, 2, 70, 2);
    test_case<72, 8>(b, 1, 130, 2);
    test_case<16, 4>(b, 1, 130, 2);
    test_case<72, 8>(b, 2, 1, 2);
    test_case<32, 4>(b, 2, 70, 2);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.1f s\n", s);
  return finish("test_attention_tc_host");
}
