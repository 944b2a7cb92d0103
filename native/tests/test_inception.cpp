// The Inception-v3 ops of the CPU backend (pool2d max / average without padded
// positions, global_avg_pool, resize_bilinear, channel_copy) and the conv shapes the
// network adds to the VAE's (1x7 / 7x1 / 1x3 / 3x1 with their one-sided paddings,
// 3x3 stride 2 without padding, 5x5 pad 2) against naive float64 loops written here;
// results identical for 1 and 3 threads. Then the whole network's structure
// (pytorch-fid's parameter names, count and order), its branch concatenation order and
// the (h, w, c) flatten order of the spatial features, from weights whose every conv is
// zero so that each BasicConv2d outputs relu(bn.bias): the outputs are then known
// exactly. The numerical match with PyTorch is test/inception.test.ts.
#include <algorithm>
#include <array>
#include <functional>
#include <utility>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cpu_test_util.h"
#include "speed/backend.h"
#include "speed/cpu.h"
#include "speed/inception.h"

using namespace cputest;
using speed::Backend;
using speed::Conv2dShape;
using speed::PoolMode;
using V = std::vector<double>;

namespace {

V naive_conv(const V& x, const V& w, const V& b, const Conv2dShape& s) {
  const int Ho = s.Ho(), Wo = s.Wo();
  V y(static_cast<size_t>(s.N) * s.Co * Ho * Wo);
  for (int n = 0; n < s.N; ++n)
    for (int co = 0; co < s.Co; ++co)
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          double acc = b[co];
          for (int ci = 0; ci < s.Ci; ++ci)
            for (int ky = 0; ky < s.kh; ++ky)
              for (int kx = 0; kx < s.kw; ++kx) {
                const int iy = oy * s.stride - s.pad_t + ky, ix = ox * s.stride - s.pad_l + kx;
                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                acc += x[((size_t(n) * s.Ci + ci) * s.H + iy) * s.W + ix] * w[((size_t(co) * s.Ci + ci) * s.kh + ky) * s.kw + kx];
              }
          y[((size_t(n) * s.Co + co) * Ho + oy) * Wo + ox] = acc;
        }
  return y;
}

V naive_pool(const V& x, int N, int C, int H, int W, int k, int st, int pad, bool max) {
  const int Ho = (H + 2 * pad - k) / st + 1, Wo = (W + 2 * pad - k) / st + 1;
  V y(size_t(N) * C * Ho * Wo);
  for (int p = 0; p < N * C; ++p)
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox) {
        double m = -INFINITY, s = 0;
        int cnt = 0;
        for (int ky = 0; ky < k; ++ky)
          for (int kx = 0; kx < k; ++kx) {
            const int iy = oy * st - pad + ky, ix = ox * st - pad + kx;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            const double v = x[(size_t(p) * H + iy) * W + ix];
            m = std::max(m, v);
            s += v;
            ++cnt;
          }
        y[(size_t(p) * Ho + oy) * Wo + ox] = max ? m : s / cnt;
      }
  return y;
}

// F.interpolate(mode='bilinear', align_corners=False) written from its definition
V naive_resize(const V& x, int P, int H, int W, int Ho, int Wo) {
  V y(size_t(P) * Ho * Wo);
  auto src = [](int o, int in, int out, int& i0, int& i1, double& l) {
    double s = (o + 0.5) * in / out - 0.5;
    if (s < 0) s = 0;
    i0 = std::min(static_cast<int>(std::floor(s)), in - 1);
    i1 = std::min(i0 + 1, in - 1);
    l = s - i0;
  };
  for (int p = 0; p < P; ++p)
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox) {
        int y0, y1, x0, x1;
        double ly, lx;
        src(oy, H, Ho, y0, y1, ly);
        src(ox, W, Wo, x0, x1, lx);
        auto at = [&](int iy, int ix) { return x[(size_t(p) * H + iy) * W + ix]; };
        y[(size_t(p) * Ho + oy) * Wo + ox] = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
                                             ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
      }
  return y;
}

template <typename T>
std::vector<T> cast(const V& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
double tol() {
  return sizeof(T) == 8 ? 1e-12 : 2e-5;
}
template <typename T>
const char* tname() {
  return sizeof(T) == 8 ? "f64" : "f32";
}

template <typename T>
void check_conv(Backend<T>& be, Rng& rng, Conv2dShape s, const std::string& label) {
  const V x = rng.vec<double>(size_t(s.N) * s.Ci * s.H * s.W), w = rng.vec<double>(size_t(s.Co) * s.Ci * s.kh * s.kw),
          b = rng.vec<double>(s.Co);
  const V ref = naive_conv(x, w, b, s);
  auto xt = cast<T>(x), wt = cast<T>(w), bt = cast<T>(b);
  std::vector<T> y(ref.size());
  poison(y);
  be.conv2d_forward(xt.data(), wt.data(), bt.data(), y.data(), s, false);
  expect(rel_err(y, ref) < tol<T>() * 5, std::string("conv ") + tname<T>() + " " + label,
         "rel " + std::to_string(rel_err(y, ref)));
}

template <typename T>
void op_tests(int threads) {
  auto be = speed::make_cpu_backend<T>(threads);
  Rng rng(7);
  const std::string th = " threads=" + std::to_string(threads);
  // the conv shapes of Inception that the VAE does not use
  auto shape = [](int N, int Ci, int H, int W, int Co, int kh, int kw, int st, int ph, int pw) {
    Conv2dShape s;
    s.N = N, s.Ci = Ci, s.H = H, s.W = W, s.Co = Co, s.kh = kh, s.kw = kw, s.stride = st;
    s.pad_t = s.pad_b = ph;
    s.pad_l = s.pad_r = pw;
    return s;
  };
  check_conv<T>(*be, rng, shape(2, 5, 9, 11, 6, 1, 7, 1, 0, 3), "1x7 pad (0,3)" + th);
  check_conv<T>(*be, rng, shape(2, 5, 11, 9, 6, 7, 1, 1, 3, 0), "7x1 pad (3,0)" + th);
  check_conv<T>(*be, rng, shape(1, 4, 8, 8, 5, 1, 3, 1, 0, 1), "1x3 pad (0,1)" + th);
  check_conv<T>(*be, rng, shape(1, 4, 8, 8, 5, 3, 1, 1, 1, 0), "3x1 pad (1,0)" + th);
  check_conv<T>(*be, rng, shape(2, 3, 17, 15, 8, 3, 3, 2, 0, 0), "3x3 stride 2 no pad, odd sides" + th);
  check_conv<T>(*be, rng, shape(1, 6, 13, 13, 7, 5, 5, 1, 2, 2), "5x5 pad 2" + th);
  check_conv<T>(*be, rng, shape(1, 20, 35, 35, 18, 3, 3, 1, 1, 1), "3x3 pad 1 at 35x35 (Winograd)" + th);

  // pools: 3x3 stride 2 max (the stem, Mixed_6a, Mixed_7a), 3x3 stride 1 pad 1 max
  // (Mixed_7c) and average without the padded positions (the FID blocks)
  struct P {
    int N, C, H, W, k, st, pad;
    PoolMode m;
    const char* what;
  };
  for (const P& p : {P{2, 3, 15, 13, 3, 2, 0, PoolMode::Max, "max 3x3/2"},
                     P{1, 4, 8, 8, 3, 1, 1, PoolMode::Max, "max 3x3/1 pad 1"},
                     P{2, 3, 7, 9, 3, 1, 1, PoolMode::AvgExcludePad, "avg 3x3/1 pad 1 exclude pad"},
                     P{1, 2, 1, 1, 3, 1, 1, PoolMode::AvgExcludePad, "avg on a 1x1 plane"},
                     P{1, 2, 9, 8, 3, 2, 1, PoolMode::AvgExcludePad, "avg 3x3/2 pad 1 (the general loop)"}}) {
    const V x = rng.vec<double>(size_t(p.N) * p.C * p.H * p.W, -2, 2);
    const V ref = naive_pool(x, p.N, p.C, p.H, p.W, p.k, p.st, p.pad, p.m == PoolMode::Max);
    auto xt = cast<T>(x);
    std::vector<T> y(ref.size());
    poison(y);
    be->pool2d_forward(xt.data(), y.data(), p.N, p.C, p.H, p.W, p.k, p.st, p.pad, p.m);
    expect(rel_err(y, ref) < tol<T>(), std::string("pool2d ") + tname<T>() + " " + p.what + th,
           "rel " + std::to_string(rel_err(y, ref)));
  }
  {
    const V x = rng.vec<double>(3 * 5 * 64);
    V ref(15, 0);
    for (int p = 0; p < 15; ++p) {
      for (int i = 0; i < 64; ++i) ref[p] += x[p * 64 + i];
      ref[p] /= 64;
    }
    auto xt = cast<T>(x);
    std::vector<T> y(15);
    be->global_avg_pool(xt.data(), y.data(), 3, 5, 64);
    expect(rel_err(y, ref) < tol<T>(), std::string("global_avg_pool ") + tname<T>() + th);
  }
  // resize: up (32 -> 299, what CIFAR-size samples go through), down, odd, identity
  for (auto [H, W, Ho, Wo] : {std::array<int, 4>{32, 32, 299, 299}, std::array<int, 4>{45, 37, 17, 23},
                              std::array<int, 4>{1, 2, 5, 3}, std::array<int, 4>{9, 7, 9, 7}}) {
    const int P = 2;
    const V x = rng.vec<double>(size_t(P) * H * W, 0, 1);
    const V ref = naive_resize(x, P, H, W, Ho, Wo);
    auto xt = cast<T>(x);
    std::vector<T> y(ref.size());
    poison(y);
    be->resize_bilinear(xt.data(), y.data(), 1, P, H, W, Ho, Wo);
    const std::string l = std::to_string(H) + "x" + std::to_string(W) + "->" + std::to_string(Ho) + "x" + std::to_string(Wo);
    expect(rel_err(y, ref) < (sizeof(T) == 8 ? 1e-12 : 1e-5), std::string("resize_bilinear ") + tname<T>() + " " + l + th,
           "rel " + std::to_string(rel_err(y, ref)));
    if (H == Ho && W == Wo) expect(bitwise_equal(y, xt), "resize_bilinear to the same size is the identity" + th);
  }
  // channel_copy into a concat slot, with and without ReLU, and in place
  {
    const int N = 2, C = 3, HW = 5, Ct = 7, off = 2;
    const V x = rng.vec<double>(size_t(N) * C * HW);
    auto xt = cast<T>(x);
    std::vector<T> y(size_t(N) * Ct * HW, T(9));
    be->channel_copy(xt.data(), y.data(), N, C, HW, Ct, off, true);
    bool ok = true;
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < Ct; ++c)
        for (int i = 0; i < HW; ++i) {
          const T got = y[(size_t(n) * Ct + c) * HW + i];
          const T want = (c < off || c >= off + C) ? T(9) : std::max(T(0), xt[(size_t(n) * C + c - off) * HW + i]);
          ok = ok && got == want;
        }
    expect(ok, std::string("channel_copy relu into channels [2, 5) of 7, others untouched ") + tname<T>() + th);
    be->channel_copy(xt.data(), y.data(), N, C, HW, Ct, 4, false);
    ok = y[(size_t(1) * Ct + 4) * HW + 3] == xt[(size_t(1) * C) * HW + 3];
    expect(ok, std::string("channel_copy without relu keeps negatives ") + tname<T>() + th);
    std::vector<T> z = xt;
    be->channel_copy(z.data(), z.data(), N, C, HW, C, 0, true);
    ok = true;
    for (size_t i = 0; i < z.size(); ++i) ok = ok && z[i] == std::max(T(0), xt[i]);
    expect(ok, std::string("channel_copy in place is a ReLU ") + tname<T>() + th);
  }
  // bad shapes are errors, not wild writes
  bool threw = false;
  try {
    std::vector<T> a(4), b(4);
    be->pool2d_forward(a.data(), b.data(), 1, 1, 2, 2, 3, 1, 0, PoolMode::Max);
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("pool2d_forward") != std::string::npos;
  }
  expect(threw, std::string("pool2d_forward refuses a window larger than the padded input ") + tname<T>());
}

// Same outputs for 1 and 3 threads (each value is computed by one task in a fixed order).
void determinism() {
  Rng rng(3);
  const int N = 2, C = 5, H = 21, W = 19;
  const V x = rng.vec<double>(size_t(N) * C * H * W);
  auto xt = cast<float>(x);
  std::vector<float> outs[2];
  int i = 0;
  for (int th : {1, 3}) {
    auto be = speed::make_cpu_backend<float>(th);
    std::vector<float> r(size_t(N) * C * 299 * 299), p(size_t(N) * C * 10 * 9), a(size_t(N) * C * H * W);
    be->resize_bilinear(xt.data(), r.data(), N, C, H, W, 299, 299);
    be->pool2d_forward(xt.data(), p.data(), N, C, H, W, 3, 2, 0, PoolMode::Max);
    be->pool2d_forward(xt.data(), a.data(), N, C, H, W, 3, 1, 1, PoolMode::AvgExcludePad);
    outs[i] = r;
    outs[i].insert(outs[i].end(), p.begin(), p.end());
    outs[i].insert(outs[i].end(), a.begin(), a.end());
    ++i;
  }
  expect(bitwise_equal(outs[0], outs[1]), "resize / pools bitwise identical for 1 and 3 threads");
}

// The network with every conv weight zero: each BasicConv2d outputs relu(bn.bias)
// everywhere (bn.weight 0, so the running statistics do not matter), which makes the
// outputs known in closed form.
void network() {
  using Net = speed::InceptionV3<float>;
  auto be = speed::make_cpu_backend<float>(2);
  Net net(be);
  const auto& ps = net.params();
  size_t total = 0;
  for (const auto& p : ps) total += p.numel;
  // 94 BasicConv2d of 5 tensors each, then fc.weight and fc.bias
  expect(ps.size() == 94 * 5 + 2, "parameter count " + std::to_string(ps.size()) + " (94 convs x 5 + fc)");
  expect(ps.front().name == "Conv2d_1a_3x3.conv.weight" && ps.back().name == "fc.bias", "first and last names");
  // the state dict of torchvision's Inception3 without AuxLogits, 1008 classes (weights
  // and BN running statistics, num_batches_tracked aside): 23,885,392 elements
  expect(total == 23885392, "elements in all");
  std::printf("      total elements (params + BN running statistics): %zu\n", total);
  auto find = [&](const std::string& n) -> const speed::ParamInfo* {
    for (const auto& p : ps)
      if (p.name == n) return &p;
    return nullptr;
  };
  const auto* c7 = find("Mixed_6b.branch7x7_2.conv.weight");
  expect(c7 && c7->shape == std::vector<int64_t>{128, 128, 1, 7}, "Mixed_6b.branch7x7_2 is [128, 128, 1, 7]");
  const auto* e3b = find("Mixed_7c.branch3x3dbl_3b.conv.weight");
  expect(e3b && e3b->shape == std::vector<int64_t>{384, 384, 3, 1}, "Mixed_7c.branch3x3dbl_3b is [384, 384, 3, 1]");
  const auto* fc = find("fc.weight");
  expect(fc && fc->shape == std::vector<int64_t>{1008, 2048}, "fc.weight is [1008, 2048]");

  bool threw = false;
  try {
    net.prepare();
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("Conv2d_1a_3x3.conv.weight") != std::string::npos;
  }
  expect(threw, "prepare() names the parameters never written");

  // bias pattern: a distinct value per (conv, channel), some negative (ReLU must cut them)
  auto bias_of = [](const std::string& conv, int c) {
    const double h = static_cast<double>(std::hash<std::string>{}(conv) % 1000) / 1000.0;
    return std::fmod(h + 0.37 * c, 1.5) - 0.25;
  };
  for (const auto& p : ps) {
    std::vector<float> v(p.numel, 0.0f);
    const std::string& n = p.name;
    const std::string conv = n.substr(0, n.find(".bn.") == std::string::npos ? n.size() : n.find(".bn."));
    if (n.size() > 8 && n.compare(n.size() - 8, 8, ".bn.bias") == 0)
      for (size_t c = 0; c < p.numel; ++c) v[c] = static_cast<float>(bias_of(conv, static_cast<int>(c)));
    else if (n.find("running_var") != std::string::npos)
      std::fill(v.begin(), v.end(), 1.0f);
    else if (n == "fc.weight")
      for (size_t i = 0; i < p.numel; ++i) v[i] = static_cast<float>(((i * 7919) % 13) / 13.0 - 0.5);
    else if (n == "fc.bias")
      for (size_t i = 0; i < p.numel; ++i) v[i] = static_cast<float>(i % 5) * 0.1f;
    net.write_param(n, v.data());
  }
  expect(net.unwritten().empty(), "every parameter written");
  net.prepare();

  const int N = 2, H = 13, W = 11, C = 3;
  std::vector<uint8_t> img(size_t(N) * H * W * C);
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>(i * 31);
  std::vector<float> pool3(N * Net::kPool3), logits(N * Net::kLogits), spatial(N * Net::kSpatial);
  net.run(img.data(), N, H, W, C, pool3.data(), logits.data(), spatial.data(), 1);

  // pool3: Mixed_7c's concat [branch1x1 320 | 3x3_2a 384 | 3x3_2b 384 | dbl_3a 384 | dbl_3b 384 | branch_pool 192]
  V want3;
  for (auto [b, n] : {std::pair<const char*, int>{"branch1x1", 320}, {"branch3x3_2a", 384}, {"branch3x3_2b", 384},
                      {"branch3x3dbl_3a", 384}, {"branch3x3dbl_3b", 384}, {"branch_pool", 192}})
    for (int c = 0; c < n; ++c) want3.push_back(std::max(0.0, bias_of(std::string("Mixed_7c.") + b, c)));
  V want_all;
  for (int n = 0; n < N; ++n) want_all.insert(want_all.end(), want3.begin(), want3.end());
  expect(rel_err(pool3, want_all) < 1e-6, "pool3 is Mixed_7c's branches in torch.cat order",
         "rel " + std::to_string(rel_err(pool3, want_all)));
  V wantl(size_t(N) * Net::kLogits);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < Net::kLogits; ++o) {
      double s = (o % 5) * 0.1;
      for (int k = 0; k < Net::kPool3; ++k)
        s += static_cast<double>(static_cast<float>((((size_t(o) * 2048 + k) * 7919) % 13) / 13.0 - 0.5)) * want3[k];
      wantl[size_t(n) * Net::kLogits + o] = s;
    }
  expect(rel_err(logits, wantl) < 1e-5, "logits = fc(pool3)", "rel " + std::to_string(rel_err(logits, wantl)));
  // spatial: Mixed_6d.branch1x1 channel c at every (h, w), c fastest
  V wants;
  for (int n = 0; n < N; ++n)
    for (int p = 0; p < 17 * 17; ++p)
      for (int c = 0; c < 7; ++c) wants.push_back(std::max(0.0, bias_of("Mixed_6d.branch1x1", c)));
  expect(rel_err(spatial, wants) < 1e-6, "spatial is Mixed_6d.branch1x1[:7] in (h, w, c) order",
         "rel " + std::to_string(rel_err(spatial, wants)));

  threw = false;
  try {
    net.run(img.data(), 1, H, W, 2, pool3.data(), nullptr, nullptr, 1);
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("channels") != std::string::npos;
  }
  expect(threw, "run() refuses 2-channel images");
  const double gf = net.flops() / 1e9;
  expect(gf > 11 && gf < 12, "flops per image " + std::to_string(gf) + " GFLOP (5.7 G multiply-adds)");
}

}  // namespace

int main() {
  op_tests<double>(1);
  op_tests<float>(1);
  op_tests<float>(3);
  determinism();
  network();
  return finish("test_inception");
}
