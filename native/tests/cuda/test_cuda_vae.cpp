// The VAE ops of the CUDA backend and the whole VAE against the CPU backend:
//   test_cuda_vae fp32|tf32|bf16 [filter]
// conv2d (3x3 pad 1, SD's stride-2 (0,0,1,1) downsample, 1x1 direct, a shape whose
// im2col exceeds one GPU tile, accum), group_norm (+SiLU, in place), upsample,
// transpose, gaussian_sample, attention_forward at head dims the fused kernels do not
// serve (the GEMM path: the VAE's single head of 512), and VAE encode/decode (a tiny
// config and SD's kl-f8 at 64x64, random weights). Device outputs are poisoned first.
// Tolerances (relative norm): fp32 1e-5 per op, 1e-4 for the whole VAE; tf32 / bf16
// 2e-3 / 2e-2 for matrix products, 1e-2 / 5e-2 for the whole VAE. Exits 77 without a GPU.
#include <cstdint>

#include "cuda_test_util.h"
#include "speed/vae.h"

using namespace speed;
using namespace cudatest;

static std::shared_ptr<Backend<float>>& G = env.gpu;
static std::shared_ptr<Backend<float>>& C = env.cpu;
static std::mt19937 rng(4321);

static void test_conv(const char* name, const Conv2dShape& s, bool accum) {
  const size_t nx = (size_t)s.N * s.Ci * s.H * s.W, nw = (size_t)s.Co * s.Ci * s.kh * s.kw;
  const size_t ny = (size_t)s.N * s.Co * s.Ho() * s.Wo();
  PF x(randn(nx, rng)), w(randn(nw, rng, 1.0f / std::sqrt((float)(s.Ci * s.kh * s.kw)))), b(randn(s.Co, rng, 0.3f));
  PF y(ny);
  if (accum) {
    auto y0 = randn(ny, rng);
    y.c.set(y0);
    y.g.set(y0);
  }
  C->conv2d_forward(x.c.p, w.c.p, b.c.p, y.c.p, s, accum);
  G->conv2d_forward(x.g.p, w.g.p, b.g.p, y.g.p, s, accum);
  cmp(std::string("conv2d ") + name + (accum ? " accum" : ""), y, env.tol_mm());
}

static void test_ops() {
  if (env.want("conv")) {
    test_conv("3x3 pad1 N2 5x7x9->6", conv_shape(2, 5, 7, 9, 6, 3, 1, 1, 1, 1, 1), false);
    test_conv("3x3 s2 pad(0,0,1,1) N2 8x16x12->8", conv_shape(2, 8, 16, 12, 8, 3, 2, 0, 0, 1, 1), false);
    test_conv("1x1 direct N3 16x9x7->24", conv_shape(3, 16, 9, 7, 24, 1, 1, 0, 0, 0, 0), true);
    test_conv("3x3 pad1 accum N1 32x20x20->32", conv_shape(1, 32, 20, 20, 32, 3, 1, 1, 1, 1, 1), true);
    // K = 4608, Ho*Wo = 9216: K*HW > 32M elements, so the GPU runs several pixel tiles
    test_conv("3x3 tiled im2col N1 512x96x96->8", conv_shape(1, 512, 96, 96, 8, 3, 1, 1, 1, 1, 1), false);
  }
  if (env.want("group_norm")) {
    for (bool silu : {false, true}) {
      const int N = 2, Cc = 64, HW = 33 * 17, groups = 32;
      auto xh = randn((size_t)N * Cc * HW, rng, 2.0f);
      for (auto& v : xh) v += 3.0f;  // a mean far from 0
      PF x(xh), g(randn(Cc, rng, 0.3f)), b(randn(Cc, rng, 0.3f)), y((size_t)N * Cc * HW);
      C->group_norm_forward(x.c.p, g.c.p, b.c.p, y.c.p, N, Cc, HW, groups, 1e-6, silu);
      G->group_norm_forward(x.g.p, g.g.p, b.g.p, y.g.p, N, Cc, HW, groups, 1e-6, silu);
      cmp(std::string("group_norm") + (silu ? "+silu" : ""), y, 1e-5);
      C->group_norm_forward(x.c.p, g.c.p, b.c.p, x.c.p, N, Cc, HW, groups, 1e-6, silu);  // in place
      G->group_norm_forward(x.g.p, g.g.p, b.g.p, x.g.p, N, Cc, HW, groups, 1e-6, silu);
      cmp(std::string("group_norm in place") + (silu ? "+silu" : ""), x, 1e-5);
    }
  }
  if (env.want("small")) {
    PF x(randn(2 * 3 * 5 * 7, rng)), y(2 * 3 * 10 * 14);
    C->upsample_nearest2x(x.c.p, y.c.p, 2, 3, 5, 7);
    G->upsample_nearest2x(x.g.p, y.g.p, 2, 3, 5, 7);
    cmp("upsample_nearest2x", y, 0);
    PF t(randn(3 * 37 * 70, rng)), tt(3 * 37 * 70);
    C->transpose_batched(t.c.p, tt.c.p, 3, 37, 70);
    G->transpose_batched(t.g.p, tt.g.p, 3, 37, 70);
    cmp("transpose_batched", tt, 0);
    auto mh = randn(2 * 8 * 50, rng, 15.f);  // logvar beyond the clamp too
    PF m(mh), e(randn(2 * 4 * 50, rng)), z(2 * 4 * 50), zm(2 * 4 * 50);
    C->gaussian_sample(m.c.p, e.c.p, z.c.p, 2, 4, 50);
    G->gaussian_sample(m.g.p, e.g.p, z.g.p, 2, 4, 50);
    cmp("gaussian_sample", z, 1e-5);
    C->gaussian_sample(m.c.p, nullptr, zm.c.p, 2, 4, 50);
    G->gaussian_sample(m.g.p, nullptr, zm.g.p, 2, 4, 50);
    cmp("gaussian_sample mean", zm, 0);
  }
  if (env.want("attention")) {
    struct A { int N, L, heads, hd; };
    for (A a : {A{2, 1024, 1, 512}, A{1, 37, 2, 96}, A{3, 64, 1, 16 * 3}}) {
      const size_t D = (size_t)a.heads * a.hd;
      PF qkv(randn((size_t)a.N * a.L * 3 * D, rng, 0.5f)), out((size_t)a.N * a.L * D), lse((size_t)a.N * a.heads * a.L);
      C->attention_forward(qkv.c.p, out.c.p, lse.c.p, a.N, a.L, a.heads, a.hd);
      G->attention_forward(qkv.g.p, out.g.p, lse.g.p, a.N, a.L, a.heads, a.hd);
      const std::string tag = "attention (GEMM path) N" + std::to_string(a.N) + " L" + std::to_string(a.L) + " h" +
                              std::to_string(a.heads) + " hd" + std::to_string(a.hd);
      cmp(tag + " out", out, env.tol_mm());
      cmp(tag + " lse", lse, env.math == CudaMath::BF16 ? 5e-3 : 1e-5);
    }
  }
}

static void randomize(VAE<float>& a, VAE<float>& b, uint64_t seed) {
  std::mt19937_64 r(seed);
  for (const ParamInfo& p : a.params()) {
    const bool vec = p.shape.size() == 1;
    const bool norm_w = vec && p.name.find("norm") != std::string::npos && p.name.find("weight") != std::string::npos;
    const double bound = vec ? 0.1 : std::sqrt(3.0 * p.shape[0] / double(p.numel));
    std::uniform_real_distribution<float> u(-float(bound), float(bound));
    std::vector<float> h(p.numel);
    for (float& v : h) v = norm_w ? 1.0f + u(r) : u(r);
    a.write_param(p.name, h.data());
    b.write_param(p.name, h.data());
  }
}

static void test_model(const char* name, const VAEConfig& cfg, int N, int S) {
  VAE<float> vc(cfg, C), vg(cfg, G);
  randomize(vc, vg, 17);
  const int f = cfg.down_factor(), h = S / f, zc = cfg.latent_channels;
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x((size_t)N * cfg.in_channels * S * S);
  for (auto& v : x) v = u(rng);
  std::vector<float> mc((size_t)N * 2 * zc * h * h), mg(mc.size());
  vc.encode_moments(x.data(), N, S, S, mc.data(), N);
  vg.encode_moments(x.data(), N, S, S, mg.data(), 2);
  expect_close(std::string("VAE ") + name + " encoder moments", mg, mc, env.tol_model());
  std::vector<float> zs_c((size_t)N * zc * h * h), zs_g(zs_c.size());
  vc.encode(x.data(), N, S, S, zs_c.data(), true, 5, 9, N);
  vg.encode(x.data(), N, S, S, zs_g.data(), true, 5, 9, 1);
  expect_close(std::string("VAE ") + name + " sampled latents (Philox eps on both)", zs_g, zs_c, env.tol_model());
  std::vector<float> yc((size_t)N * cfg.out_channels * S * S), yg(yc.size());
  vc.decode(zs_c.data(), N, h, h, yc.data(), N);
  vg.decode(zs_c.data(), N, h, h, yg.data(), 1);
  expect_close(std::string("VAE ") + name + " decoded", yg, yc, env.tol_model());
}

int main(int argc, char** argv) {
  env.init(argc, argv);
  std::printf("CUDA VAE ops and model vs CPU, math %s\n", math_name(env.math));
  try {
    test_ops();
    if (env.want("model")) {
      VAEConfig tiny;
      tiny.block_out_channels = {32, 64};
      tiny.layers_per_block = 1;
      tiny.norm_num_groups = 8;
      test_model("tiny [32,64] 3x32x32", tiny, 3, 32);
      test_model("SD kl-f8 3x64x64", VAEConfig(), 2, 64);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++g_failures;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
