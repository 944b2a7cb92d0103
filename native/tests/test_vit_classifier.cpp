// The ViT classifier (feature network): whole-model + cross-entropy backward
// against finite differences in float64; logits = head(pooled features);
// loss = an independent host cross-entropy of the logits; AdamW steps fit a
// fixed batch; argument errors.
#include <algorithm>
#include <cmath>

#include "speed/vit.h"
#include "classifier_test_util.h"

using namespace speed;
using clst::host_ce;

static ViTConfig tiny() {
  ViTConfig c;
  c.input_size = 8;
  c.patch_size = 2;  // 16 tokens
  c.in_channels = 3;
  c.hidden_size = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_ratio = 2.0;
  c.num_classes = 5;
  return c;
}

static void randomize(ViTClassifier<double>& m, std::mt19937_64& rng, double scale) {
  for (const ParamInfo& p : m.params()) {
    if (!p.trainable) continue;
    auto v = ditt::normal_vec<double>(rng, p.numel, scale);
    m.write_param(p.name, Slot::Model, v.data());
  }
}

static void gradcheck() {
  const ViTConfig cfg = tiny();
  auto be = make_cpu_backend<double>(2);
  ViTClassifier<double> m(cfg, be);
  m.init(3);
  std::mt19937_64 rng(17);
  randomize(m, rng, 0.3);
  const int N = 4, K = cfg.num_classes;
  auto x = ditt::normal_vec<double>(rng, size_t(N) * 3 * 8 * 8, 0.8);
  std::vector<int32_t> y = {0, 3, 4, 3};
  ViTStepResult r = m.loss_and_grad(x.data(), y.data(), N);
  CHECK(std::fabs(r.loss - host_ce(r.logits, y, K)) <= 1e-12 * (1 + r.loss), "loss %.15g vs host CE %.15g", r.loss,
        host_ce(r.logits, y, K));

  // logits = head(mean over tokens of the final LN output): checks features()
  std::vector<double> f(size_t(N) * cfg.hidden_size), z(size_t(N) * K), hw(size_t(K) * cfg.hidden_size), hb(K);
  m.features(x.data(), N, f.data());
  m.logits(x.data(), N, z.data());
  m.read_param("head.weight", Slot::Model, hw.data());
  m.read_param("head.bias", Slot::Model, hb.data());
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      double s = hb[k];
      for (int d = 0; d < cfg.hidden_size; ++d) s += hw[k * cfg.hidden_size + d] * f[n * cfg.hidden_size + d];
      CHECK(std::fabs(s - z[n * K + k]) <= 1e-10 * (1 + std::fabs(s)), "logit[%d,%d] %.15g vs head(features) %.15g",
            n, k, z[n * K + k], s);
      CHECK(std::fabs(z[n * K + k] - r.logits[n * K + k]) <= 1e-12, "logits() and loss_and_grad disagree");
    }
  // pooled final-LN features: each token is normalised, so the mean over
  // tokens has |mean| <= 1 per channel and is not all zero
  double fmax = 0;
  for (double v : f) fmax = std::max(fmax, std::fabs(v));
  CHECK(fmax > 1e-3, "features are all ~0");

  auto objective = [&]() {
    std::vector<double> zz(size_t(N) * K);
    m.logits(x.data(), N, zz.data());
    return host_ce(zz, y, K);
  };
  // fourth-order central differences; relative error < 1e-6, with an absolute floor
  // for coordinates whose true gradient is ~0 (the key bias: softmax is shift-invariant)
  clst::check_gradients(m, objective, rng, 1e-3, 5, true, 1e-6, 1e-10, "gradcheck");
}

static void fits_a_batch() {
  ViTConfig cfg = tiny();
  cfg.hidden_size = 32;
  auto be = make_cpu_backend<float>(2);
  ViTClassifier<float> m(cfg, be);
  m.init(5);
  std::mt19937_64 rng(23);
  const int N = 16;
  auto x = ditt::normal_vec<float>(rng, size_t(N) * 3 * 8 * 8, 1.0);
  std::vector<int32_t> y(N);
  for (int i = 0; i < N; ++i) y[i] = i % cfg.num_classes;
  OptimHyper hp;
  hp.lr = 3e-3;
  hp.weight_decay = 0.01;
  hp.max_grad_norm = 1.0;
  double first = 0, last = 0;
  int correct = 0;
  for (int s = 0; s < 60; ++s) {
    ViTStepResult r = m.train_step(x.data(), y.data(), N, hp);
    CHECK(!r.skipped && std::isfinite(r.loss), "step %d skipped or non-finite", s);
    if (s == 0) first = r.loss;
    last = r.loss;
    correct = r.correct;
  }
  std::printf("fit: loss %.4f -> %.4f, %d/%d correct, step %lld\n", first, last, correct, N,
              static_cast<long long>(m.step()));
  CHECK(m.step() == 60, "step counter %lld", static_cast<long long>(m.step()));
  CHECK(last < 0.25 * first, "loss did not fall: %.4f -> %.4f", first, last);
  CHECK(correct >= N - 2, "only %d/%d correct after fitting", correct, N);
}

static void errors() {
  auto be = make_cpu_backend<float>(1);
  ViTConfig c = tiny();
  c.input_size = 9;
  ditt::expect_error([&] { ViTClassifier<float> m(c, be); }, "not divisible by patch_size", "bad input size");
  c = tiny();
  c.num_classes = 1;
  ditt::expect_error([&] { ViTClassifier<float> m(c, be); }, "num_classes", "one class");
  c = tiny();
  c.hidden_size = 18;
  ditt::expect_error([&] { ViTClassifier<float> m(c, be); }, "multiple of 4", "hidden 18");
  ViTClassifier<float> m(tiny(), be);
  m.init(1);
  std::vector<float> x(3 * 8 * 8, 0.f), buf(16 * 16 * 4);
  std::vector<int32_t> y = {5};
  ditt::expect_error([&] { m.loss_and_grad(x.data(), y.data(), 1); }, "outside [0, 5)", "label 5");
  ditt::expect_error([&] { m.loss_and_grad(x.data(), y.data(), 0); }, "N must be >= 1", "N = 0");
  ditt::expect_error([&] { m.read_param("head.weight", Slot::EMA, buf.data()); }, "no EMA", "ema slot");
  ditt::expect_error([&] { m.read_param("head.wieght", Slot::Model, buf.data()); }, "unknown ViT parameter", "name");
  ditt::expect_error([&] { m.write_param("head.weight", Slot::Grad, buf.data()); }, "read-only", "grad write");
  ditt::expect_error([&] { m.read_param("pos_embed", Slot::AdamM, buf.data()); }, "fixed", "pos_embed moments");
  size_t total = 0;
  for (const ParamInfo& p : m.params())
    if (p.trainable) total += p.numel;
  CHECK(total == m.num_trainable(), "num_trainable %zu vs sum %zu", m.num_trainable(), total);
  CHECK(m.params().front().name == "pos_embed" && m.params().back().name == "head.bias", "parameter order");
}

int main() {
  try {
    gradcheck();
    fits_a_batch();
    errors();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_vit_classifier");
}
