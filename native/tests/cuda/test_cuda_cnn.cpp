// The CNN classifier's training ops on the CUDA backend and a whole CNNClassifier
// training step, against the CPU backend:
//   test_cuda_cnn fp32|tf32|bf16 [filter]
// conv2d_backward (dx, dw, db; dx null as for a first layer; stride 2; asymmetric
// pads; a shape whose im2col exceeds one GPU tile), relu_forward/backward (in place
// too), then the model: the same seeded init on both backends, one loss_and_grad
// (loss, logits, every gradient, features) and three train_steps (the weights after).
// Device outputs are poisoned first. Tolerances (relative norm): fp32 1e-5 per op and
// 1e-4 for the model; tf32 / bf16 2e-3 / 2e-2 for matrix products, 1e-2 / 5e-2 for the
// model. Exits 77 without a GPU.
#include <cstdint>

#include "cuda_test_util.h"
#include "speed/cnn.h"

using namespace speed;
using namespace cudatest;

static std::shared_ptr<Backend<float>>& G = env.gpu;
static std::shared_ptr<Backend<float>>& C = env.cpu;
static std::mt19937 rng(2468);

static void test_conv_backward(const char* name, const Conv2dShape& s, bool with_dx) {
  const size_t nx = (size_t)s.N * s.Ci * s.H * s.W, nw = (size_t)s.Co * s.Ci * s.kh * s.kw;
  const size_t ny = (size_t)s.N * s.Co * s.Ho() * s.Wo();
  PF x(randn(nx, rng)), w(randn(nw, rng, 1.0f / std::sqrt((float)(s.Ci * s.kh * s.kw)))), dy(randn(ny, rng));
  PF dx(nx), dw(nw), db(s.Co);
  C->conv2d_backward(x.c.p, w.c.p, dy.c.p, with_dx ? dx.c.p : nullptr, dw.c.p, db.c.p, s);
  G->conv2d_backward(x.g.p, w.g.p, dy.g.p, with_dx ? dx.g.p : nullptr, dw.g.p, db.g.p, s);
  const std::string tag = std::string("conv2d_backward ") + name;
  if (with_dx) cmp(tag + " dx", dx, env.tol_mm());
  cmp(tag + " dw", dw, env.tol_mm());
  cmp(tag + " db", db, 1e-5);  // a sum of dy, no matrix product
}

static void test_ops() {
  if (env.want("conv")) {
    test_conv_backward("3x3 pad1 N3 4x9x7->6", conv_shape(3, 4, 9, 7, 6, 3, 1, 1, 1, 1, 1), true);
    test_conv_backward("3x3 s2 pad1 N2 8x15x15->16", conv_shape(2, 8, 15, 15, 16, 3, 2, 1, 1, 1, 1), true);
    test_conv_backward("3x3 s2 pad(0,0,1,1) N2 5x12x10->7", conv_shape(2, 5, 12, 10, 7, 3, 2, 0, 0, 1, 1), true);
    test_conv_backward("first layer (dx null) N4 1x28x28->32", conv_shape(4, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1), false);
    test_conv_backward("1x1 N2 16x6x6->8", conv_shape(2, 16, 6, 6, 8, 1, 1, 0, 0, 0, 0), true);
    // K = 4608, Ho*Wo = 9216: K*HW > 32M elements, so the GPU runs several pixel tiles
    test_conv_backward("tiled im2col N1 512x96x96->4", conv_shape(1, 512, 96, 96, 4, 3, 1, 1, 1, 1, 1), true);
  }
  if (env.want("relu")) {
    const size_t n = 100003;
    PF x(randn(n, rng)), y(n), dy(randn(n, rng)), dx(n);
    C->relu_forward(x.c.p, y.c.p, n);
    G->relu_forward(x.g.p, y.g.p, n);
    cmp("relu_forward", y, 0);
    C->relu_backward(y.c.p, dy.c.p, dx.c.p, n);
    G->relu_backward(y.g.p, dy.g.p, dx.g.p, n);
    cmp("relu_backward", dx, 0);
    C->relu_backward(y.c.p, dy.c.p, dy.c.p, n);  // in place, as the CNN runs them
    G->relu_backward(y.g.p, dy.g.p, dy.g.p, n);
    cmp("relu_backward in place", dy, 0);
    C->relu_forward(x.c.p, x.c.p, n);
    G->relu_forward(x.g.p, x.g.p, n);
    cmp("relu_forward in place", x, 0);
  }
}

static std::vector<float> slot(const CNNClassifier<float>& m, const ParamInfo& p, Slot s) {
  std::vector<float> v(p.numel);
  m.read_param(p.name, s, v.data());
  return v;
}

// The Fashion-MNIST shape (1x32x32, stages [32, 64], fc 128) at batch 16.
static void test_model() {
  CNNConfig cfg;
  cfg.input_size = 32;
  cfg.in_channels = 1;
  cfg.channels = {32, 64};
  cfg.fc_hidden = 128;
  cfg.num_classes = 10;
  CNNClassifier<float> mc(cfg, C), mg(cfg, G);
  mc.init(7);
  mg.init(7);
  const int N = 16;
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x((size_t)N * 32 * 32);
  for (auto& v : x) v = u(rng);
  std::vector<int32_t> y(N);
  for (int i = 0; i < N; ++i) y[i] = (i * 7) % 10;

  ClassifierStepResult rc = mc.loss_and_grad(x.data(), y.data(), N);
  ClassifierStepResult rg = mg.loss_and_grad(x.data(), y.data(), N);
  expect_close("CNN loss", {(float)rg.loss}, {(float)rc.loss}, env.tol_model());
  expect_close("CNN logits", std::vector<float>(rg.logits.begin(), rg.logits.end()),
               std::vector<float>(rc.logits.begin(), rc.logits.end()), env.tol_model());
  for (const ParamInfo& p : mc.params())
    expect_close("CNN grad " + p.name, slot(mg, p, Slot::Grad), slot(mc, p, Slot::Grad), env.tol_model());
  std::vector<float> fc((size_t)N * cfg.fc_hidden), fg(fc.size());
  mc.features(x.data(), N, fc.data());
  mg.features(x.data(), N, fg.data());
  expect_close("CNN features", fg, fc, env.tol_model());

  std::vector<std::vector<float>> w0;
  for (const ParamInfo& p : mc.params()) w0.push_back(slot(mc, p, Slot::Model));
  OptimHyper hp;
  hp.lr = 1e-3;
  hp.weight_decay = 0.05;
  hp.max_grad_norm = 1.0;
  for (int s = 0; s < 3; ++s) {
    ClassifierStepResult a = mc.train_step(x.data(), y.data(), N, hp);
    ClassifierStepResult b = mg.train_step(x.data(), y.data(), N, hp);
    if (a.skipped || b.skipped || a.step != b.step) {
      std::printf("FAIL CNN train_step %d: skipped cpu %d cuda %d, steps %lld / %lld\n", s, a.skipped, b.skipped,
                  (long long)a.step, (long long)b.step);
      ++g_failures;
    }
    expect_close("CNN train_step " + std::to_string(s) + " grad norm", {(float)b.grad_norm}, {(float)a.grad_norm},
                 env.tol_model());
  }
  // The updates themselves (the weights are mostly their init): Adam's first steps move
  // each weight by about +-lr whatever its gradient's size, so a weight whose gradient is
  // near zero can move the other way on the other backend; hence the looser bound.
  const double tol_update = env.math == CudaMath::BF16 ? 2e-1 : env.math == CudaMath::TF32 ? 5e-2 : 1e-3;
  size_t k = 0;
  for (const ParamInfo& p : mc.params()) {
    std::vector<float> a = slot(mc, p, Slot::Model), b = slot(mg, p, Slot::Model);
    expect_close("CNN weights after 3 steps " + p.name, b, a, env.tol_model());
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] -= w0[k][i];
      b[i] -= w0[k][i];
    }
    expect_close("CNN update of 3 steps " + p.name, b, a, tol_update);
    ++k;
  }
}

int main(int argc, char** argv) {
  env.init(argc, argv);
  std::printf("CUDA CNN ops and classifier vs CPU, math %s\n", math_name(env.math));
  try {
    test_ops();
    if (env.want("model")) test_model();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++g_failures;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
