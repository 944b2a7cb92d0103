// The Inception-v3 ops of the CUDA backend and the whole FID network against the CPU backend:
//   test_cuda_inception fp32|tf32|bf16 [filter]
// Filters: pool, gap, resize, copy, conv, model. Ops at the network's shapes and at odd ones:
// pool2d (the stem's and Mixed_6a/7a's 3x3 stride-2 max pools, the blocks' 3x3 average
// without padded positions at 35/17/8 and Mixed_7c's padded 3x3 max, plus odd sizes whose
// windows are clipped at the border and stride-2 windows with padding), global_avg_pool (8x8
// and odd planes), resize_bilinear (32, 64, 256 and odd sizes to 299, a down-size, a tiny
// one), channel_copy (into a channel slot of a wider tensor with and without ReLU; the
// in-place ReLU), conv2d at Inception's kernels (1x7 / 7x1 / 1x3 / 3x1 with one-sided
// padding, 3x3 stride 2 without padding on 299 and 35, 5x5 pad 2, 1x1 at 17x17); then
// the network's pool3, logits and spatial features on seeded random weights, images of
// 32x32 (resized), 299x299 (not resized) and 45x37 grey, with a different chunk on each side.
//
// Tolerances (relative norm). Pooling, the copy and the global average are computed in the
// same order as on the CPU (max exactly, averages to a rounding), so 0 / 1e-6 / 1e-7. The
// resize's taps may differ by one float rounding (the CPU compiler may fuse a multiply-add),
// a 1e-7 relative change of a weight: 1e-6. conv2d is a GEMM whose summation order differs
// from the CPU's: 1e-5 in fp32, 2e-3 / 2e-2 with tf32 / bf16 operands (10 / 8 mantissa bits).
// The network's longest path is 47 convs (94 in all; K up to 4032): each adds its
// summation-order difference (~1e-6 relative, as above) to what it is given, and He-scaled
// weights keep the relative error from growing much faster than the depth, so 1e-4 in fp32;
// tf32 / bf16 1e-2 / 5e-2 (the VAE's whole-model bounds).
// Device outputs are poisoned (NaN) first. Exits 77 without a GPU.
#include <cstdint>
#include <cstring>
#include <limits>

#include "cuda_test_util.h"
#include "speed/inception.h"

using namespace speed;
using namespace cudatest;

static std::shared_ptr<Backend<float>> G, C;
static CudaMath g_math;
static std::mt19937 rng(2718);
static const char* g_filter = nullptr;

static bool want(const char* name) { return !g_filter || std::strstr(name, g_filter); }
static double tol_mm() { return g_math == CudaMath::BF16 ? 2e-2 : g_math == CudaMath::TF32 ? 2e-3 : 1e-5; }
static double tol_model() { return g_math == CudaMath::BF16 ? 5e-2 : g_math == CudaMath::TF32 ? 1e-2 : 1e-4; }

// One tensor on both backends: the same values, or (size only) zero on the CPU and NaN on
// the GPU, so that an element the GPU kernel never writes fails the comparison.
struct IPF {
  DBuf<float> c, g;
  explicit IPF(const std::vector<float>& h) : c(*C, h), g(*G, h) {}
  explicit IPF(size_t n) : c(*C, n), g(*G, n) {
    g.poison();
    std::vector<float> z(n, 0.f);
    c.set(z);
  }
};
static void cmp(const std::string& what, IPF& p, double tol) { expect_close(what, p.g.get(), p.c.get(), tol); }

static void test_pool(int N, int Cc, int H, int W, int k, int stride, int pad, PoolMode m) {
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  IPF x(randn((size_t)N * Cc * H * W, rng)), y((size_t)N * Cc * Ho * Wo);
  C->pool2d_forward(x.c.p, y.c.p, N, Cc, H, W, k, stride, pad, m);
  G->pool2d_forward(x.g.p, y.g.p, N, Cc, H, W, k, stride, pad, m);
  const bool mx = m == PoolMode::Max;
  cmp(std::string("pool2d ") + (mx ? "max" : "avg") + " N" + std::to_string(N) + " C" + std::to_string(Cc) + " " +
          std::to_string(H) + "x" + std::to_string(W) + " k" + std::to_string(k) + " s" + std::to_string(stride) +
          " p" + std::to_string(pad),
      y, mx ? 0 : 1e-6);
}

static void test_resize(int N, int Cc, int H, int W, int Ho, int Wo) {
  std::uniform_real_distribution<float> u(0.f, 1.f);  // image values, as the network resizes them
  std::vector<float> h((size_t)N * Cc * H * W);
  for (float& v : h) v = u(rng);
  IPF x(h), y((size_t)N * Cc * Ho * Wo);
  C->resize_bilinear(x.c.p, y.c.p, N, Cc, H, W, Ho, Wo);
  G->resize_bilinear(x.g.p, y.g.p, N, Cc, H, W, Ho, Wo);
  cmp("resize_bilinear N" + std::to_string(N) + " C" + std::to_string(Cc) + " " + std::to_string(H) + "x" +
          std::to_string(W) + " -> " + std::to_string(Ho) + "x" + std::to_string(Wo),
      y, 1e-6);
}

static Conv2dShape shape(int N, int Ci, int H, int W, int Co, int kh, int kw, int s, int ph, int pw) {
  Conv2dShape c;
  c.N = N; c.Ci = Ci; c.H = H; c.W = W; c.Co = Co; c.kh = kh; c.kw = kw; c.stride = s;
  c.pad_t = c.pad_b = ph;
  c.pad_l = c.pad_r = pw;
  return c;
}

static void test_conv(const char* name, const Conv2dShape& s) {
  const size_t nx = (size_t)s.N * s.Ci * s.H * s.W, nw = (size_t)s.Co * s.Ci * s.kh * s.kw;
  const size_t ny = (size_t)s.N * s.Co * s.Ho() * s.Wo();
  IPF x(randn(nx, rng)), w(randn(nw, rng, 1.0f / std::sqrt((float)(s.Ci * s.kh * s.kw)))), b(randn(s.Co, rng, 0.3f));
  IPF y(ny);
  C->conv2d_forward(x.c.p, w.c.p, b.c.p, y.c.p, s, false);
  G->conv2d_forward(x.g.p, w.g.p, b.g.p, y.g.p, s, false);
  cmp(std::string("conv2d ") + name, y, tol_mm());
}

static void test_ops() {
  if (want("pool")) {
    // the stem's max pools (147 -> 73, 71 -> 35) and Mixed_6a / 7a's (35 -> 17, 17 -> 8)
    test_pool(2, 3, 147, 147, 3, 2, 0, PoolMode::Max);
    test_pool(1, 5, 71, 71, 3, 2, 0, PoolMode::Max);
    test_pool(2, 7, 35, 35, 3, 2, 0, PoolMode::Max);
    test_pool(2, 9, 17, 17, 3, 2, 0, PoolMode::Max);
    // Mixed_7c's padded max: the border windows hold 4 or 6 values, never the padding
    test_pool(2, 11, 8, 8, 3, 1, 1, PoolMode::Max);
    // the blocks' average (count_include_pad=False) at 35, 17 and 8
    for (int hw : {35, 17, 8}) test_pool(2, 6, hw, hw, 3, 1, 1, PoolMode::AvgExcludePad);
    // odd sizes and the general window: clipped at the border, stride 2 with padding
    test_pool(3, 2, 9, 7, 3, 2, 1, PoolMode::AvgExcludePad);
    test_pool(3, 2, 9, 7, 3, 2, 1, PoolMode::Max);
    test_pool(1, 4, 5, 6, 2, 2, 1, PoolMode::Max);
    test_pool(1, 4, 5, 6, 2, 1, 1, PoolMode::AvgExcludePad);
    test_pool(2, 3, 1, 1, 3, 1, 1, PoolMode::AvgExcludePad);  // a 1x1 plane: only the centre
    test_pool(2, 3, 4, 13, 5, 3, 2, PoolMode::AvgExcludePad);
    // a bad shape is an error naming the op on both backends
    for (auto* be : {C.get(), G.get()}) {
      bool threw = false;
      try {
        be->pool2d_forward(nullptr, nullptr, 1, 1, 4, 4, 3, 1, 3, PoolMode::Max);
      } catch (const Error& e) {
        threw = std::strstr(e.what(), "pool2d_forward") != nullptr;
      }
      expect(threw, be->name() + ": pool2d_forward with pad >= k throws naming the op");
    }
  }
  if (want("gap")) {
    struct S { int N, C, HW; };
    for (S s : {S{3, 2048, 64}, S{2, 5, 289}, S{1, 3, 1}, S{4, 7, 1225}}) {
      auto h = randn((size_t)s.N * s.C * s.HW, rng);
      for (float& v : h) v = std::fabs(v);  // post-ReLU values
      IPF x(h), y((size_t)s.N * s.C);
      C->global_avg_pool(x.c.p, y.c.p, s.N, s.C, s.HW);
      G->global_avg_pool(x.g.p, y.g.p, s.N, s.C, s.HW);
      cmp("global_avg_pool N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " HW" + std::to_string(s.HW), y,
          1e-7);
    }
  }
  if (want("resize")) {
    for (int S : {32, 64, 256}) test_resize(2, 3, S, S, 299, 299);
    test_resize(1, 3, 45, 37, 299, 299);  // odd, not square
    test_resize(1, 3, 300, 512, 299, 299);  // a down-size (no antialias, as torch's default)
    test_resize(2, 2, 7, 5, 3, 4);
    test_resize(1, 1, 1, 1, 299, 299);  // one pixel: every output is it
  }
  if (want("copy")) {
    const int N = 3, Cc = 5, HW = 17 * 17, Ctot = 12, off = 4;
    for (bool relu : {true, false}) {
      auto yh = randn((size_t)N * Ctot * HW, rng);  // the other channels must stay as they are
      IPF x(randn((size_t)N * Cc * HW, rng)), y(yh);
      C->channel_copy(x.c.p, y.c.p, N, Cc, HW, Ctot, off, relu);
      G->channel_copy(x.g.p, y.g.p, N, Cc, HW, Ctot, off, relu);
      cmp(std::string("channel_copy into [4, 9) of 12") + (relu ? " +relu" : ""), y, 0);
    }
    IPF z(randn((size_t)N * Cc * HW, rng));
    C->channel_copy(z.c.p, z.c.p, N, Cc, HW, Cc, 0, true);
    G->channel_copy(z.g.p, z.g.p, N, Cc, HW, Cc, 0, true);
    cmp("channel_copy in-place relu", z, 0);
  }
  if (want("conv")) {
    test_conv("1x7 pad (0,3) N2 24x17x17->20", shape(2, 24, 17, 17, 20, 1, 7, 1, 0, 3));
    test_conv("7x1 pad (3,0) N2 20x17x17->24", shape(2, 20, 17, 17, 24, 7, 1, 1, 3, 0));
    test_conv("1x3 pad (0,1) N2 32x8x8->16", shape(2, 32, 8, 8, 16, 1, 3, 1, 0, 1));
    test_conv("3x1 pad (1,0) N2 32x8x8->16", shape(2, 32, 8, 8, 16, 3, 1, 1, 1, 0));
    test_conv("3x3 s2 Conv2d_1a N2 3x299x299->32", shape(2, 3, 299, 299, 32, 3, 3, 2, 0, 0));
    test_conv("3x3 s2 Mixed_6a N1 288x35x35->96", shape(1, 288, 35, 35, 96, 3, 3, 2, 0, 0));
    test_conv("3x3 Conv2d_2a N1 32x149x149->32", shape(1, 32, 149, 149, 32, 3, 3, 1, 0, 0));
    test_conv("5x5 pad 2 N2 48x35x35->64", shape(2, 48, 35, 35, 64, 5, 5, 1, 2, 2));
    test_conv("1x1 N3 768x17x17->192", shape(3, 768, 17, 17, 192, 1, 1, 1, 0, 0));
    test_conv("1x7 pad (0,3) odd N1 5x9x11->6", shape(1, 5, 9, 11, 6, 1, 7, 1, 0, 3));
  }
}

// Seeded weights that keep the activations' scale through the depth: He-normal convs,
// BatchNorm statistics near identity (so the fold is exercised, not trivial).
static void randomize(InceptionV3<float>& a, InceptionV3<float>& b, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (const ParamInfo& p : a.params()) {
    std::vector<float> h(p.numel);
    const std::string& n = p.name;
    const auto ends = [&](const char* s) { return n.size() >= std::strlen(s) && n.compare(n.size() - std::strlen(s), std::string::npos, s) == 0; };
    if (ends("conv.weight") || ends("fc.weight")) {
      const double fan = double(p.numel) / double(p.shape[0]);
      const float sd = float(std::sqrt((ends("fc.weight") ? 1.0 : 2.0) / fan));
      for (float& v : h) v = g(r) * sd;
    } else if (ends("running_var") || ends("bn.weight")) {
      for (float& v : h) v = u(r);
    } else {  // bn.bias, running_mean, fc.bias
      for (float& v : h) v = 0.1f * g(r);
    }
    a.write_param(n, h.data());
    b.write_param(n, h.data());
  }
  a.prepare();
  b.prepare();
}

static void test_model(InceptionV3<float>& nc, InceptionV3<float>& ng, const char* name, int N, int H, int W, int Cin) {
  std::uniform_int_distribution<int> u(0, 255);
  std::vector<uint8_t> img((size_t)N * H * W * Cin);
  for (auto& v : img) v = (uint8_t)u(rng);
  using Net = InceptionV3<float>;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> pc((size_t)N * Net::kPool3), lc((size_t)N * Net::kLogits), sc((size_t)N * Net::kSpatial);
  std::vector<float> pg(pc.size(), nan), lg(lc.size(), nan), sg(sc.size(), nan);
  nc.run(img.data(), N, H, W, Cin, pc.data(), lc.data(), sc.data(), N);
  ng.run(img.data(), N, H, W, Cin, pg.data(), lg.data(), sg.data(), N > 1 ? N - 1 : 1);
  // the check means something only when the features are neither zero nor blown up
  double n2 = 0;
  size_t pos = 0;
  for (float v : pc) n2 += double(v) * v, pos += v > 0;
  const double rms = std::sqrt(n2 / pc.size());
  expect(rms > 1e-3 && rms < 1e3 && pos > pc.size() / 10,
         std::string("Inception ") + name + ": CPU pool3 rms " + std::to_string(rms) + ", " + std::to_string(pos) +
             " of " + std::to_string(pc.size()) + " positive");
  expect_close(std::string("Inception ") + name + " pool3", pg, pc, tol_model());
  expect_close(std::string("Inception ") + name + " logits", lg, lc, tol_model());
  expect_close(std::string("Inception ") + name + " spatial", sg, sc, tol_model());
}

int main(int argc, char** argv) {
  g_math = parse_math(argc, argv);
  g_filter = argc > 2 ? argv[2] : nullptr;
  G = cuda_or_skip(g_math);
  C = make_cpu_backend<float>(0);
  std::printf("CUDA Inception-v3 ops and network vs CPU, math %s\n", math_name(g_math));
  try {
    test_ops();
    if (want("model")) {
      InceptionV3<float> nc(C), ng(G);
      randomize(nc, ng, 31);
      test_model(nc, ng, "3x32x32 RGB (resized)", 3, 32, 32, 3);
      test_model(nc, ng, "1x299x299 RGBA (not resized)", 1, 299, 299, 4);
      test_model(nc, ng, "2x45x37 grey (resized)", 2, 45, 37, 1);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++g_failures;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
