// The VAE ops of the CPU backend (conv2d, group_norm, upsample_nearest2x,
// transpose_batched, gaussian_sample) against naive float64 loops written
// here: float64 backend to ~1e-12, float32 to ~1e-5; (=) versus (+=) of conv,
// poisoned outputs, and bitwise identical float32 results for 1, 2 and 3
// threads. The conv cases include SD's asymmetric downsample padding (0,1,0,1)
// with stride 2, 1x1 convs (the direct GEMM path) and shapes whose output is
// larger than one im2col tile.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "../src/cpu/conv.h"
#include "cpu_test_util.h"
#include "speed/backend.h"
#include "speed/cpu.h"

using namespace cputest;
using speed::Backend;
using speed::Conv2dShape;
using V = std::vector<double>;

namespace {

V naive_conv(const V& x, const V& w, const V* b, const Conv2dShape& s) {
  const int Ho = s.Ho(), Wo = s.Wo();
  V y(static_cast<size_t>(s.N) * s.Co * Ho * Wo);
  for (int n = 0; n < s.N; ++n)
    for (int co = 0; co < s.Co; ++co)
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          double acc = b ? (*b)[co] : 0;
          for (int ci = 0; ci < s.Ci; ++ci)
            for (int ky = 0; ky < s.kh; ++ky)
              for (int kx = 0; kx < s.kw; ++kx) {
                const int iy = oy * s.stride - s.pad_t + ky, ix = ox * s.stride - s.pad_l + kx;
                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                acc += x[((size_t(n) * s.Ci + ci) * s.H + iy) * s.W + ix] *
                       w[((size_t(co) * s.Ci + ci) * s.kh + ky) * s.kw + kx];
              }
          y[((size_t(n) * s.Co + co) * Ho + oy) * Wo + ox] = acc;
        }
  return y;
}

V naive_gn(const V& x, const V& g, const V& b, int N, int C, int HW, int G, double eps, bool silu) {
  V y(x.size());
  const int cpg = C / G;
  for (int n = 0; n < N; ++n)
    for (int gi = 0; gi < G; ++gi) {
      double s = 0, ss = 0;
      const size_t base = (size_t(n) * C + size_t(gi) * cpg) * HW, cnt = size_t(cpg) * HW;
      for (size_t i = 0; i < cnt; ++i) s += x[base + i];
      const double mu = s / cnt;
      for (size_t i = 0; i < cnt; ++i) ss += (x[base + i] - mu) * (x[base + i] - mu);
      const double rstd = 1 / std::sqrt(ss / cnt + eps);
      for (size_t i = 0; i < cnt; ++i) {
        const int ch = gi * cpg + int(i / HW);
        double v = (x[base + i] - mu) * rstd * g[ch] + b[ch];
        if (silu) v = v / (1 + std::exp(-v));
        y[base + i] = v;
      }
    }
  return y;
}

template <typename T>
std::vector<T> cast(const V& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
std::vector<T> run_conv(Backend<T>& be, const V& x, const V& w, const V* b, const Conv2dShape& s, bool accum,
                        const V* y0) {
  auto xt = cast<T>(x), wt = cast<T>(w);
  std::vector<T> bt = b ? cast<T>(*b) : std::vector<T>();
  std::vector<T> y(size_t(s.N) * s.Co * s.Ho() * s.Wo());
  if (y0)
    y = cast<T>(*y0);
  else
    poison(y);
  be.conv2d_forward(xt.data(), wt.data(), b ? bt.data() : nullptr, y.data(), s, accum);
  return y;
}

Conv2dShape shape(int N, int Ci, int H, int W, int Co, int k, int stride, int t, int l, int b, int r) {
  Conv2dShape s;
  s.N = N;
  s.Ci = Ci;
  s.H = H;
  s.W = W;
  s.Co = Co;
  s.kh = s.kw = k;
  s.stride = stride;
  s.pad_t = t;
  s.pad_l = l;
  s.pad_b = b;
  s.pad_r = r;
  return s;
}

void test_conv(Rng& rng) {
  auto d = speed::make_cpu_backend<double>(2);
  auto f1 = speed::make_cpu_backend<float>(1), f2 = speed::make_cpu_backend<float>(2),
       f3 = speed::make_cpu_backend<float>(3);
  struct Case {
    const char* name;
    Conv2dShape s;
  };
  const Case cases[] = {
      {"3x3 pad 1", shape(2, 3, 7, 9, 5, 3, 1, 1, 1, 1, 1)},
      {"3x3 stride 2 pad (0,0,1,1) (SD downsample)", shape(2, 4, 8, 6, 3, 3, 2, 0, 0, 1, 1)},
      {"3x3 stride 2 pad (0,0,1,1) odd input", shape(1, 2, 7, 5, 3, 3, 2, 0, 0, 1, 1)},
      {"1x1 (direct GEMM)", shape(3, 6, 5, 4, 7, 1, 1, 0, 0, 0, 0)},
      {"1x1 stride 2", shape(1, 3, 6, 6, 2, 1, 2, 0, 0, 0, 0)},
      {"3x3 asymmetric pads (1,0,0,2)", shape(1, 2, 5, 6, 3, 3, 1, 1, 0, 0, 2)},
      {"3x3 output > one tile (48x40, K=9*5)", shape(2, 5, 48, 40, 4, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 Winograd, odd 45x47, Ci 16 Co 20", shape(2, 16, 45, 47, 20, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 Winograd, 2 tile blocks (128x96)", shape(1, 16, 128, 96, 16, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 Winograd, 32x32 (the pixel bound)", shape(2, 32, 32, 32, 16, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 32 channels at 9x11 (im2col: too few pixels)", shape(2, 32, 9, 11, 16, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 Winograd, 3x4101: a tile row longer than the block", shape(1, 16, 3, 4101, 16, 3, 1, 1, 1, 1, 1)},
      {"3x3 pad 1 31x33 (1023 pixels: im2col)", shape(1, 16, 31, 33, 16, 3, 1, 1, 1, 1, 1)},
  };
  expect(speed::cpu::conv_uses_winograd(cases[7].s) && speed::cpu::conv_uses_winograd(cases[8].s) &&
             speed::cpu::conv_uses_winograd(cases[9].s) && !speed::cpu::conv_uses_winograd(cases[10].s) &&
             !speed::cpu::conv_uses_winograd(cases[0].s) && !speed::cpu::conv_uses_winograd(cases[1].s) &&
             speed::cpu::conv_uses_winograd(cases[11].s) && !speed::cpu::conv_uses_winograd(cases[12].s),
         "Winograd serves 3x3/s1/pad-1 convs with >= 16 channels and >= 1024 pixels, im2col the rest");
  expect(speed::cpu::winograd_tile_block(16, 16) == 2048 && speed::cpu::winograd_tile_block(512, 512) == 256,
         "Winograd tile block depends only on the channel counts");
  for (int forced = 0; forced < 2; ++forced)
  for (const auto& c0 : cases) {
    speed::cpu::conv_force_im2col(forced == 1);
    Case c = c0;
    std::string label = std::string(c.name) + (forced ? " [im2col forced]" : "");
    c.name = label.c_str();
    const auto& s = c.s;
    const size_t nx = size_t(s.N) * s.Ci * s.H * s.W, nw = size_t(s.Co) * s.Ci * s.kh * s.kw;
    V x(nx), w(nw), b(s.Co);
    for (auto& v : x) v = rng.uniform();
    for (auto& v : w) v = rng.uniform();
    for (auto& v : b) v = rng.uniform();
    const V ref = naive_conv(x, w, &b, s);
    auto yd = run_conv<double>(*d, x, w, &b, s, false, nullptr);
    expect(rel_err(yd, ref) < 1e-12, std::string("conv2d f64 ") + c.name, "rel " + fmt(rel_err(yd, ref)));
    const V refnb = naive_conv(x, w, nullptr, s);
    auto ynb = run_conv<double>(*d, x, w, nullptr, s, false, nullptr);
    expect(rel_err(ynb, refnb) < 1e-12, std::string("conv2d f64 no bias ") + c.name);
    // accum: y0 + conv
    V y0(ref.size());
    for (auto& v : y0) v = rng.uniform();
    V refacc(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) refacc[i] = y0[i] + ref[i];
    auto ya = run_conv<double>(*d, x, w, &b, s, true, &y0);
    expect(rel_err(ya, refacc) < 1e-12, std::string("conv2d f64 accum ") + c.name);
    auto y1 = run_conv<float>(*f1, x, w, &b, s, false, nullptr);
    auto y2 = run_conv<float>(*f2, x, w, &b, s, false, nullptr);
    auto y3 = run_conv<float>(*f3, x, w, &b, s, false, nullptr);
    expect(rel_err(y1, ref) < 1e-5, std::string("conv2d f32 ") + c.name, "rel " + fmt(rel_err(y1, ref)));
    expect(bitwise_equal(y1, y2) && bitwise_equal(y1, y3), std::string("conv2d f32 1/2/3 threads bitwise ") + c.name);
  }
  speed::cpu::conv_force_im2col(false);
  // bad shapes are errors, not crashes
  bool threw = false;
  try {
    std::vector<float> z(16);
    f1->conv2d_forward(z.data(), z.data(), nullptr, z.data(), shape(1, 1, 2, 2, 1, 3, 3, 0, 0, 0, 0), false);
  } catch (const speed::Error&) {
    threw = true;
  }
  expect(threw, "conv2d stride 3 is refused with speed::Error");
  threw = false;
  try {
    std::vector<float> z(16);
    f1->conv2d_forward(z.data(), z.data(), nullptr, z.data(), shape(1, 1, 1, 1, 1, 3, 1, 0, 0, 0, 0), false);
  } catch (const speed::Error&) {
    threw = true;
  }
  expect(threw, "conv2d kernel larger than the padded input is refused");
}

void test_group_norm(Rng& rng) {
  auto d = speed::make_cpu_backend<double>(2);
  auto f1 = speed::make_cpu_backend<float>(1), f3 = speed::make_cpu_backend<float>(3);
  struct Case {
    int N, C, HW, G;
  };
  for (Case c : {Case{2, 8, 13, 4}, Case{1, 6, 64, 3}, Case{3, 4, 7, 1}, Case{2, 32, 50, 32}}) {
    for (bool silu : {false, true}) {
      V x(size_t(c.N) * c.C * c.HW), g(c.C), b(c.C);
      for (auto& v : x) v = rng.uniform(-3, 5);  // a non-zero mean
      for (auto& v : g) v = rng.uniform(0.5, 1.5);
      for (auto& v : b) v = rng.uniform();
      const V ref = naive_gn(x, g, b, c.N, c.C, c.HW, c.G, 1e-6, silu);
      const std::string tag = "group_norm N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " HW" +
                              std::to_string(c.HW) + " G" + std::to_string(c.G) + (silu ? " +silu" : "");
      V yd(x.size());
      poison(yd);
      d->group_norm_forward(x.data(), g.data(), b.data(), yd.data(), c.N, c.C, c.HW, c.G, 1e-6, silu);
      expect(rel_err(yd, ref) < 1e-12, tag + " f64", "rel " + fmt(rel_err(yd, ref)));
      V inplace = x;  // y may alias x
      d->group_norm_forward(inplace.data(), g.data(), b.data(), inplace.data(), c.N, c.C, c.HW, c.G, 1e-6, silu);
      expect(rel_err(inplace, ref) < 1e-12, tag + " f64 in place");
      auto xf = cast<float>(x), gf = cast<float>(g), bf = cast<float>(b);
      std::vector<float> y1(x.size()), y3(x.size());
      poison(y1);
      poison(y3);
      f1->group_norm_forward(xf.data(), gf.data(), bf.data(), y1.data(), c.N, c.C, c.HW, c.G, 1e-6, silu);
      f3->group_norm_forward(xf.data(), gf.data(), bf.data(), y3.data(), c.N, c.C, c.HW, c.G, 1e-6, silu);
      expect(rel_err(y1, ref) < 2e-6, tag + " f32", "rel " + fmt(rel_err(y1, ref)));
      expect(bitwise_equal(y1, y3), tag + " f32 1 vs 3 threads bitwise");
    }
  }
  bool threw = false;
  try {
    std::vector<float> z(12);
    f1->group_norm_forward(z.data(), nullptr, nullptr, z.data(), 1, 6, 2, 4, 1e-6, false);
  } catch (const speed::Error&) {
    threw = true;
  }
  expect(threw, "group_norm with groups not dividing C is refused");
}

void test_small_ops(Rng& rng) {
  auto d = speed::make_cpu_backend<double>(2);
  auto f1 = speed::make_cpu_backend<float>(1), f3 = speed::make_cpu_backend<float>(3);
  {  // upsample
    const int N = 2, C = 3, H = 5, W = 7;
    V x(size_t(N) * C * H * W);
    for (auto& v : x) v = rng.uniform();
    V ref(x.size() * 4);
    for (int p = 0; p < N * C; ++p)
      for (int i = 0; i < 2 * H; ++i)
        for (int j = 0; j < 2 * W; ++j) ref[(size_t(p) * 2 * H + i) * 2 * W + j] = x[(size_t(p) * H + i / 2) * W + j / 2];
    V y(ref.size());
    poison(y);
    d->upsample_nearest2x(x.data(), y.data(), N, C, H, W);
    expect(bitwise_equal(y, ref), "upsample_nearest2x exact");
  }
  {  // transpose
    const int B = 3, R = 37, C = 70;
    V x(size_t(B) * R * C);
    for (auto& v : x) v = rng.uniform();
    V ref(x.size()), y(x.size());
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) ref[(size_t(b) * C + c) * R + r] = x[(size_t(b) * R + r) * C + c];
    poison(y);
    d->transpose_batched(x.data(), y.data(), B, R, C);
    expect(bitwise_equal(y, ref), "transpose_batched exact");
  }
  {  // gaussian
    const int N = 2, C = 3, HW = 11;
    V m(size_t(N) * 2 * C * HW), e(size_t(N) * C * HW);
    for (auto& v : m) v = rng.uniform(-40, 30);  // logvar beyond both clamp bounds too
    for (auto& v : e) v = rng.uniform(-2, 2);
    V ref(e.size()), refm(e.size());
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < C * HW; ++i) {
        const double mu = m[size_t(n) * 2 * C * HW + i], lv = m[size_t(n) * 2 * C * HW + C * HW + i];
        const double cl = std::min(20.0, std::max(-30.0, lv));
        ref[size_t(n) * C * HW + i] = mu + std::exp(0.5 * cl) * e[size_t(n) * C * HW + i];
        refm[size_t(n) * C * HW + i] = mu;
      }
    V z(e.size());
    poison(z);
    d->gaussian_sample(m.data(), e.data(), z.data(), N, C, HW);
    expect(rel_err(z, ref) < 1e-13, "gaussian_sample mean + exp(0.5 clamp(logvar)) eps");
    poison(z);
    d->gaussian_sample(m.data(), nullptr, z.data(), N, C, HW);
    expect(bitwise_equal(z, refm), "gaussian_sample without eps is the mean");
    auto mf = cast<float>(m), ef = cast<float>(e);
    std::vector<float> z1(e.size()), z3(e.size());
    f1->gaussian_sample(mf.data(), ef.data(), z1.data(), N, C, HW);
    f3->gaussian_sample(mf.data(), ef.data(), z3.data(), N, C, HW);
    expect(rel_err(z1, ref) < 1e-6 && bitwise_equal(z1, z3), "gaussian_sample f32 and 1 vs 3 threads");
  }
  expect(speed::cpu::conv_tile_pixels(27) == 1024 && speed::cpu::conv_tile_pixels(4608) == 112 &&
             speed::cpu::conv_tile_pixels(1 << 20) == 64,
         "conv tile size depends only on K (64..1024, multiple of 16)");
}

}  // namespace

int main() {
  Rng rng(20261201);
  test_conv(rng);
  test_group_norm(rng);
  test_small_ops(rng);
  return finish("test_vae_ops");
}
