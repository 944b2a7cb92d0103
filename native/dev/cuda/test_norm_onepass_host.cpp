// The one-pass norm kernels (norm_onepass.cuh in this folder; norm.cu here runs them on a GPU as
// version 2), compiled here as plain C++ and run on the host: one std::thread per CUDA thread, a
// real barrier for __syncthreads, the warp sums as kernel_common.cuh's xor butterfly of
// __shfl_xor_sync, __shared__ arrays as statics (one block runs at a time): cuda_host.h. The
// launch configuration is norm.cu's launchers' (grid
// (P, N), round_up(D / W, 32) threads, P = ceil(L / rows)). Checked against the CPU backend
// (relative error 1e-5), with poisoned outputs (every element written, nothing outside the
// mod_stride chunks), and for identical bits on a second run (threads interleave differently).
// So the kernels' indexing and reductions are tested in every build, GPU or not; timing and the
// device's memory model are not (gpu-check runs norm.cu, and racecheck on it).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cpu_test_util.h"
#include "cuda_host.h"
#include "speed/backend.h"
#include "speed/cpu.h"

namespace emu {

// warp_sum of kernel_common.cuh: for o = 16, 8, 4, 2, 1: v += shfl_xor(v, o), on every lane.
inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

#include "cuda_host_begin.h"
#include "norm_onepass.cuh"
#include "cuda_host_end.h"

}  // namespace emu

using namespace cputest;
using F = std::vector<float>;

namespace {

std::shared_ptr<speed::Backend<float>> C;
std::mt19937 rng(4321);
const float kNaN = std::numeric_limits<float>::quiet_NaN();

F randn(size_t n, float s = 1.f, float m = 0.f) {
  std::normal_distribution<float> d(m, s);
  F v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel(const F& got, const F& ref, size_t* bad) {
  double num = 0, den = 0;
  *bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) {
      ++*bad;
      continue;
    }
    if (std::isnan(ref[i])) continue;
    num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
bool close(const std::string& what, const F& got, const F& ref, double tol = 1e-5) {
  size_t bad = 0;
  const double r = rel(got, ref, &bad);
  char d[96];
  std::snprintf(d, sizeof d, "rel %.2e%s", r, bad ? " (NaN pattern differs)" : "");
  return expect(bad == 0 && r <= tol, what, d);
}
bool same_bits(const F& a, const F& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

int threads_for(int D, int W) { return ((D / W) + 31) / 32 * 32; }

// ln_modulate_backward as the CUDA launcher runs it on the one-pass path, W given.
void ln_bwd_1p(const F& dy, const F& x, const F& mean, const F& rstd, const float* scale, int ms,
               float* dx, float* dshift, float* dscale, int N, int L, int D, int W, int tr, bool accum) {
  const int P = (L + tr - 1) / tr;
  F part((size_t)N * P * 2 * D, kNaN);
  const emu::dim3 grid{(unsigned)P, (unsigned)N, 1};
  const unsigned th = threads_for(D, W);
  if (W == 4)
    emu::launch(grid, th, [&] {
      emu::ln_mod_bwd_1p_k<4>(dy.data(), x.data(), mean.data(), rstd.data(), scale, ms, dx, part.data(), L, D, tr, accum);
    });
  else
    emu::launch(grid, th, [&] {
      emu::ln_mod_bwd_1p_k<1>(dy.data(), x.data(), mean.data(), rstd.data(), scale, ms, dx, part.data(), L, D, tr, accum);
    });
  expect(std::none_of(part.begin(), part.end(), [](float v) { return std::isnan(v); }),
         "  every LN partial written");
  emu::launch(emu::dim3{(unsigned)((D + 127) / 128), (unsigned)N, 1}, 128,
              [&] { emu::colpart_sum_k(part.data(), P, 2, D, dshift, dscale, ms); });
}

void test_ln(int N, int L, int D, int W, int tr) {
  const std::string tag = "ln bwd 1p N" + std::to_string(N) + " L" + std::to_string(L) + " D" +
                          std::to_string(D) + " W" + std::to_string(W) + " rows " + std::to_string(tr);
  const int ms = 6 * D;
  const size_t n = (size_t)N * L * D;
  F x = randn(n, 2.f, 0.5f), mod = randn((size_t)N * ms, 0.3f), y(n), mean((size_t)N * L), rstd((size_t)N * L);
  C->ln_modulate_forward(x.data(), mod.data(), mod.data() + D, ms, y.data(), mean.data(), rstd.data(), N, L, D, 1e-6);
  F dy = randn(n), dx0 = randn(n);
  for (int accum = 1; accum >= 0; --accum) {
    F dxc = dx0, dmc((size_t)N * ms, kNaN);
    C->ln_modulate_backward(dy.data(), x.data(), mean.data(), rstd.data(), mod.data() + D, ms, dxc.data(),
                            dmc.data(), dmc.data() + D, N, L, D, accum);
    F dxg = accum ? dx0 : F(n, kNaN), dmg((size_t)N * ms, kNaN);
    ln_bwd_1p(dy, x, mean, rstd, mod.data() + D, ms, dxg.data(), dmg.data(), dmg.data() + D, N, L, D, W, tr, accum);
    close(tag + (accum ? " dx(+=)" : " dx(=)"), dxg, dxc);
    close(tag + " dshift,dscale (NaN outside the chunks)", dmg, dmc);
    if (!accum) {
      F dx2(n, kNaN), dm2((size_t)N * ms, kNaN);
      ln_bwd_1p(dy, x, mean, rstd, mod.data() + D, ms, dx2.data(), dm2.data(), dm2.data() + D, N, L, D, W, tr, false);
      expect(same_bits(dx2, dxg) && same_bits(dm2, dmg), tag + " bitwise identical on a second run");
      F dm3((size_t)N * ms, kNaN);
      ln_bwd_1p(dy, x, mean, rstd, mod.data() + D, ms, nullptr, dm3.data(), dm3.data() + D, N, L, D, W, tr, false);
      close(tag + " dshift,dscale (dx null)", dm3, dmc);
    }
  }
}

void test_gated(int N, int L, int D, int W, int tr) {
  const std::string tag = "gated bwd 1p N" + std::to_string(N) + " L" + std::to_string(L) + " D" +
                          std::to_string(D) + " W" + std::to_string(W) + " rows " + std::to_string(tr);
  const int ms = 6 * D;
  const size_t n = (size_t)N * L * D;
  F dx = randn(n), h = randn(n), mod = randn((size_t)N * ms);
  F dhc(n), dgc((size_t)N * ms, kNaN);
  C->gated_residual_backward(dx.data(), mod.data() + 2 * D, ms, h.data(), dhc.data(), dgc.data() + 2 * D, N, L, D);
  auto run = [&](F& dh, F& dg) {
    const int P = (L + tr - 1) / tr;
    F part((size_t)N * P * D, kNaN);
    const emu::dim3 grid{(unsigned)P, (unsigned)N, 1};
    if (W == 4)
      emu::launch(grid, threads_for(D, 4), [&] {
        emu::gated_res_bwd_1p_k<4>(dx.data(), mod.data() + 2 * D, ms, h.data(), dh.data(), part.data(), L, D, tr);
      });
    else
      emu::launch(grid, threads_for(D, 1), [&] {
        emu::gated_res_bwd_1p_k<1>(dx.data(), mod.data() + 2 * D, ms, h.data(), dh.data(), part.data(), L, D, tr);
      });
    emu::launch(emu::dim3{(unsigned)((D + 127) / 128), (unsigned)N, 1}, 128,
                [&] { emu::colpart_sum_k(part.data(), P, 1, D, dg.data() + 2 * D, nullptr, ms); });
  };
  F dhg(n, kNaN), dgg((size_t)N * ms, kNaN);
  run(dhg, dgg);
  close(tag + " dh", dhg, dhc);
  close(tag + " dgate (NaN outside the chunk)", dgg, dgc);
  F dh2(n, kNaN), dg2((size_t)N * ms, kNaN);
  run(dh2, dg2);
  expect(same_bits(dh2, dhg) && same_bits(dg2, dgg), tag + " bitwise identical on a second run");
}

void test_fwd(int N, int L, int D) {
  const std::string tag = "ln fwd reg N" + std::to_string(N) + " L" + std::to_string(L) + " D" + std::to_string(D);
  const int ms = 6 * D, D4 = D / 4, vpl = (D4 + 31) / 32;
  const size_t n = (size_t)N * L * D, rows = (size_t)N * L;
  F x = randn(n, 2.f, 0.5f), mod = randn((size_t)N * ms, 0.3f);
  F yc(n), mc(rows), rc(rows), yg(n, kNaN), mg(rows, kNaN), rg(rows, kNaN);
  C->ln_modulate_forward(x.data(), mod.data(), mod.data() + D, ms, yc.data(), mc.data(), rc.data(), N, L, D, 1e-6);
  const emu::dim3 grid{(unsigned)((rows + 7) / 8), 1, 1};
  auto x4 = reinterpret_cast<const emu::float4*>(x.data());
  auto y4 = reinterpret_cast<emu::float4*>(yg.data());
  auto go = [&](auto k) { emu::launch(grid, 256, k); };
  switch (vpl) {  // the launcher's switch, for the sizes below
    case 1: go([&] { emu::ln_mod_fwd_reg_k<1>(x4, mod.data(), mod.data() + D, ms, y4, mg.data(), rg.data(), N, L, D4, 1e-6f); }); break;
    case 3: go([&] { emu::ln_mod_fwd_reg_k<3>(x4, mod.data(), mod.data() + D, ms, y4, mg.data(), rg.data(), N, L, D4, 1e-6f); }); break;
    case 9: go([&] { emu::ln_mod_fwd_reg_k<9>(x4, mod.data(), mod.data() + D, ms, y4, mg.data(), rg.data(), N, L, D4, 1e-6f); }); break;
    default: expect(false, tag + ": no instantiation for VPL " + std::to_string(vpl)); return;
  }
  close(tag + " y", yg, yc);
  close(tag + " mean", mg, mc);
  close(tag + " rstd", rg, rc);
}

}  // namespace

int main() {
  C = speed::make_cpu_backend<float>(1);
  // rows per block at DiT sizes (the CUDA launcher's choice)
  expect(emu::norm_onepass_rows_policy(256, 256, 1152) == 64 && emu::norm_onepass_rows_policy(32, 256, 1152) == 16 &&
             emu::norm_onepass_rows_policy(256, 256, 384) == 32 && emu::norm_onepass_rows_policy(32, 256, 384) == 8,
         "rows per block: XL/2 b256 64, b32 16; S/2 b256 32, b32 8");
  // several samples, L not a multiple of the rows per block; groups of 4 ending inside a block
  // (rows 10: 3 groups per block, the double-buffered table reused); the scalar form at D = 50;
  // 9 warps per block at D = 1152
  for (int tr : {emu::norm_onepass_rows_policy(2, 67, 384), 10}) {
    test_ln(2, 67, 384, 4, tr);
    test_ln(3, 29, 50, 1, tr);
    test_gated(2, 67, 384, 4, tr);
    test_gated(3, 29, 50, 1, tr);
  }
  test_ln(2, 13, 1152, 4, 8);
  test_gated(2, 13, 1152, 4, 8);
  test_fwd(2, 67, 384);
  test_fwd(1, 5, 72);
  test_fwd(2, 5, 1152);
  return finish("test_norm_onepass_host");
}
