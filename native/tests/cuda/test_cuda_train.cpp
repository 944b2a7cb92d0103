// A whole DiT train step on the CUDA backend against the CPU backend, through
// speed::DiT<float> (the same graph, the same seed):
//   test_cuda_train fp32|tf32|bf16
// Weights are first moved off the adaLN-Zero start by two CPU steps and copied
// to both models, so that every gradient is non-zero. Then: loss and gradient
// with given noise (and the same with activation recomputation, bitwise);
// a train step (Philox noise drawn on each backend, AdamW + clip + EMA); the
// forward pass; a skipped step on a NaN loss; (bf16) the weight cache's conversions
// per step, per forward, after a skipped step and after write_param.
// Exits 77 (skipped) when no GPU is usable.
#include <cstdint>

#include "../test_dit_util.h"
#include "cuda_test_util.h"
#include "speed/bench.h"
#include "speed/dit.h"

using namespace speed;
using namespace cudatest;

int main(int argc, char** argv) {
  CudaMath math = parse_math(argc, argv);
  auto G = cuda_or_skip(math);
  auto Cb = make_cpu_backend<float>(0);
  const bool bf16 = math == CudaMath::BF16;
  const double tol_loss = bf16 ? 3e-2 : math == CudaMath::TF32 ? 3e-3 : 1e-4;
  const double tol_grad = bf16 ? 8e-2 : math == CudaMath::TF32 ? 1e-2 : 1e-4;
  const double tol_param = bf16 ? 1e-2 : 1e-5;  // after one AdamW step from equal weights
  std::printf("DiT train step, CUDA (%s) vs CPU\n", math_name(math));
  try {
    DiTConfig c;
    c.input_size = 16;
    c.patch_size = 2;
    c.in_channels = 4;
    c.hidden_size = 144;
    c.depth = 2;
    c.num_heads = 2;  // head_dim 72, as DiT-XL
    c.num_classes = 5;
    c.class_dropout_prob = 0.1;
    c.learn_sigma = true;
    const int N = 3;
    DiT<float> mc(c, Cb), mg(c, G);
    mc.init(7);
    mc.set_tables(linear_diffusion_tables(1000));
    mg.set_tables(linear_diffusion_tables(1000));
    std::mt19937 rng(99);
    const size_t per = (size_t)c.in_channels * c.input_size * c.input_size;
    auto x0 = randn(N * per, rng, 0.5f);
    std::vector<int32_t> t = {0, 457, 999}, y = {1, 5, 3};  // 5 = null label
    std::vector<float> w = {1.0f, 0.7f, 1.3f};
    TrainHyper hp;
    hp.optim.lr = 3e-3;
    hp.optim.max_grad_norm = 1.0;
    hp.optim.ema_decay = 0.9;
    // move off adaLN-Zero on the CPU, then copy every slot to the GPU model
    for (int s = 0; s < 2; ++s) mc.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
    for (const ParamInfo& p : mc.params()) {
      std::vector<float> v(p.numel);
      for (Slot s : {Slot::Model, Slot::EMA, Slot::AdamM, Slot::AdamV}) {
        if (!p.trainable && s != Slot::Model && s != Slot::EMA) continue;
        mc.read_param(p.name, s, v.data());
        mg.write_param(p.name, s, v.data());
      }
    }
    mg.set_step(mc.step());
    mg.set_noise_state(mc.noise_seed(), mc.noise_offset());

    // 1. loss and gradient with the same noise
    auto eps = randn(N * per, rng);
    std::vector<float> lc, lg, mc_, mg_, vc, vg;
    double Lc = mc.loss_and_grad(x0.data(), eps.data(), t.data(), y.data(), w.data(), N, 1.0, &lc, &mc_, &vc);
    double Lg = mg.loss_and_grad(x0.data(), eps.data(), t.data(), y.data(), w.data(), N, 1.0, &lg, &mg_, &vg);
    expect(std::fabs(Lc - Lg) <= tol_loss * std::fabs(Lc),
           "mean loss " + std::to_string(Lg) + " vs cpu " + std::to_string(Lc));
    expect_close("per-sample loss", lg, lc, tol_loss);
    expect_close("per-sample mse", mg_, mc_, tol_loss);
    expect_close("per-sample vb", vg, vc, tol_loss * 3);
    expect_close("gradient (all parameters)", ditt::all_slot(mg, Slot::Grad), ditt::all_slot(mc, Slot::Grad), tol_grad);
    for (const ParamInfo& p : mc.params()) {  // per tensor, to name the one that is off
      if (!p.trainable) continue;
      std::vector<float> a(p.numel), b(p.numel);
      mc.read_param(p.name, Slot::Grad, a.data());
      mg.read_param(p.name, Slot::Grad, b.data());
      double num = 0, den = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        num += (double(b[i]) - a[i]) * (double(b[i]) - a[i]);
        den += double(a[i]) * a[i];
      }
      double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      if (!(rel <= tol_grad * 2)) expect(false, "gradient of " + p.name + " rel " + std::to_string(rel));
    }

    // 1b. activation recomputation on the GPU: the same kernels on the same
    // inputs, so the same loss and gradient bit for bit (needs deterministic
    // kernels: no atomics, the cached cuBLASLt algorithm per shape)
    {
      std::vector<float> g_plain = ditt::all_slot(mg, Slot::Grad), lr_;
      mg.set_recompute(true);
      double Lr = mg.loss_and_grad(x0.data(), eps.data(), t.data(), y.data(), w.data(), N, 1.0, &lr_);
      expect(Lr == Lg && lr_ == lg, "recompute: the same per-sample loss, bitwise");
      expect(ditt::all_slot(mg, Slot::Grad) == g_plain, "recompute: the same gradient, bitwise");
      mg.set_recompute(false);
    }

    // 2. a train step: noise from each backend's Philox stream, AdamW, EMA
    TrainResult rc = mc.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
    TrainResult rg = mg.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
    expect(!rc.skipped && !rg.skipped, "train step taken on both");
    expect_close("train step loss", rg.loss, rc.loss, tol_loss);
    expect(std::fabs(rg.grad_norm - rc.grad_norm) <= tol_grad * rc.grad_norm,
           "grad norm " + std::to_string(rg.grad_norm) + " vs cpu " + std::to_string(rc.grad_norm));
    expect(mg.noise_offset() == mc.noise_offset(), "noise offsets advance equally");
    expect_close("params after AdamW", ditt::all_slot(mg, Slot::Model), ditt::all_slot(mc, Slot::Model), tol_param);
    expect_close("EMA after step", ditt::all_slot(mg, Slot::EMA), ditt::all_slot(mc, Slot::EMA), tol_param);
    expect_close("Adam m after step", ditt::all_slot(mg, Slot::AdamM), ditt::all_slot(mc, Slot::AdamM), tol_grad);

    // 3. forward (model and EMA weights)
    std::vector<float> oc(N * per * 2), og(N * per * 2, NAN);
    mc.forward(x0.data(), t.data(), y.data(), N, oc.data(), false);
    mg.forward(x0.data(), t.data(), y.data(), N, og.data(), false);
    expect_close("forward output", og, oc, tol_loss);
    mc.forward(x0.data(), t.data(), y.data(), N, oc.data(), true);
    mg.forward(x0.data(), t.data(), y.data(), N, og.data(), true);
    expect_close("forward output (EMA)", og, oc, tol_loss);

    // 4. a NaN loss skips the step and leaves everything untouched
    auto before = ditt::all_slot(mg, Slot::Model), ema_before = ditt::all_slot(mg, Slot::EMA);
    int64_t step_before = mg.step();
    std::vector<float> wbad = {1.0f, NAN, 1.0f};
    TrainResult rs = mg.train_step(x0.data(), t.data(), y.data(), wbad.data(), N, hp);
    expect(rs.skipped, "NaN loss: step reported skipped");
    expect(mg.step() == step_before, "NaN loss: step counter unchanged");
    expect(ditt::all_slot(mg, Slot::Model) == before && ditt::all_slot(mg, Slot::EMA) == ema_before,
           "NaN loss: weights and EMA untouched");
    // and training goes on afterwards
    TrainResult r2 = mg.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
    expect(!r2.skipped && std::isfinite(r2.loss[0]), "step after a skipped one is taken");

    // 5. the bf16 weight cache: the core's activation copies no longer
    // invalidate it, so a train step converts each Linear weight once (the optimizer
    // wrote them all) and reuses the copy for dx; a forward right after converts
    // each once more, a second forward none. Linear weights: 5 per block (qkv, proj,
    // fc1, fc2, adaLN) + x_embedder, t_embedder (2), final adaLN and linear; dx is
    // not computed for x_embedder and t_embedder.mlp.0.
    if (bf16) {
      const uint64_t W = 5 * (uint64_t)c.depth + 5, uses = 2 * W - 2;
      auto s0 = cuda_weight_cache_stats(*G);
      TrainResult r3 = mg.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
      auto s1 = cuda_weight_cache_stats(*G);
      const uint64_t conv = s1.conversions - s0.conversions, hits = s1.hits - s0.hits;
      expect(!r3.skipped && conv == W && hits == uses - W,
             "weight cache, train step: each of the " + std::to_string(W) + " weights converted once (" +
                 std::to_string(conv) + " conversions, " + std::to_string(hits) + " hits; want " +
                 std::to_string(uses - W) + ")");
      mg.forward(x0.data(), t.data(), y.data(), N, og.data(), false);
      auto s2 = cuda_weight_cache_stats(*G);
      mg.forward(x0.data(), t.data(), y.data(), N, og.data(), false);
      auto s3 = cuda_weight_cache_stats(*G);
      expect(s2.conversions - s1.conversions == W && s3.conversions == s2.conversions && s3.hits - s2.hits == W,
             "weight cache, forward: " + std::to_string(s2.conversions - s1.conversions) +
                 " conversions after a step (want " + std::to_string(W) + "), then " +
                 std::to_string(s3.conversions - s2.conversions) + " (want 0) and " +
                 std::to_string(s3.hits - s2.hits) + " hits");
      // a skipped step writes nothing, so it invalidates nothing
      TrainResult rs2 = mg.train_step(x0.data(), t.data(), y.data(), wbad.data(), N, hp);
      auto s4 = cuda_weight_cache_stats(*G);
      expect(rs2.skipped && s4.conversions == s3.conversions,
             "weight cache: a skipped step converts nothing (" + std::to_string(s4.conversions - s3.conversions) + ")");
      // write_param into one weight: only that one goes stale
      for (const ParamInfo& p : mg.params())
        if (p.name == "blocks.0.attn.qkv.weight") {
          std::vector<float> wq(p.numel);
          mg.read_param(p.name, Slot::Model, wq.data());
          mg.write_param(p.name, Slot::Model, wq.data());
        }
      mg.forward(x0.data(), t.data(), y.data(), N, og.data(), false);
      auto s5 = cuda_weight_cache_stats(*G);
      expect(s5.conversions - s4.conversions == 1,
             "weight cache: write_param of one weight -> " + std::to_string(s5.conversions - s4.conversions) +
                 " conversion (want 1)");
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
