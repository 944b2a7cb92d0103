// DiT training and sampling behaviour: bitwise-identical losses for 1 and 2
// threads, a non-finite input skips the step and leaves every slot untouched,
// the loss falls on a fixed batch, and sample_step (with and without
// classifier-free guidance) equals a manual computation from forward().
#include <cmath>
#include <cstring>

#include "speed/philox.h"
#include "test_dit_util.h"

using namespace speed;

struct Batch {
  std::vector<float> x0, w;
  std::vector<int32_t> t, y;
};

static Batch make_batch(const DiTConfig& c, int N, uint64_t seed, int tmin, int tmax) {
  std::mt19937_64 rng(seed);
  Batch b;
  b.x0 = ditt::normal_vec<float>(rng, size_t(N) * c.in_channels * c.input_size * c.input_size, 0.5);
  std::uniform_int_distribution<int> dt(tmin, tmax), dy(0, c.num_classes);
  for (int i = 0; i < N; ++i) {
    b.t.push_back(dt(rng));
    b.y.push_back(dy(rng));
    b.w.push_back(1.0f);
  }
  b.t[0] = 0;
  return b;
}

static bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

static TrainHyper hyper(double lr) {
  TrainHyper hp;
  hp.optim.lr = lr;
  hp.optim.max_grad_norm = 1.0;
  hp.optim.ema_decay = 0.99;
  return hp;
}

static void test_threads_bitwise() {
  DiTConfig c = ditt::small_config(16);
  const int N = 6;
  std::vector<std::vector<float>> losses(2), weights(2);
  for (int k = 0; k < 2; ++k) {
    DiT<float> m(c, make_cpu_backend<float>(k + 1));
    m.init(21);
    m.set_tables(linear_diffusion_tables(1000));
    m.set_noise_state(99, 0);
    for (int s = 0; s < 3; ++s) {
      Batch b = make_batch(c, N, 100 + s, 0, 999);
      TrainResult r = m.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
      CHECK(!r.skipped && r.step == s + 1, "step %d: skipped %d step %lld", s, r.skipped, (long long)r.step);
      CHECK(r.grad_norm > 0 && std::isfinite(r.grad_norm), "grad norm %g", r.grad_norm);
      losses[k].insert(losses[k].end(), r.loss.begin(), r.loss.end());
      losses[k].push_back(float(r.grad_norm));
    }
    CHECK(m.noise_offset() == 3 * philox_blocks(size_t(N) * 3 * 256), "noise offset %llu after 3 steps",
          (unsigned long long)m.noise_offset());
    weights[k] = ditt::all_slot(m, Slot::Model);
  }
  CHECK(bitwise_equal(losses[0], losses[1]), "losses differ between 1 and 2 threads");
  CHECK(bitwise_equal(weights[0], weights[1]), "weights differ between 1 and 2 threads");
}

static void test_nan_skips() {
  DiTConfig c = ditt::small_config(16);
  const int N = 4;
  DiT<float> m(c, make_cpu_backend<float>(2));
  m.init(3);
  m.set_tables(linear_diffusion_tables(1000));
  Batch b = make_batch(c, N, 5, 0, 999);
  TrainResult r0 = m.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
  CHECK(!r0.skipped && r0.step == 1, "first step should apply");
  std::vector<std::vector<float>> before;
  for (Slot s : {Slot::Model, Slot::EMA, Slot::AdamM, Slot::AdamV}) before.push_back(ditt::all_slot(m, s));
  b.x0[17] = NAN;
  TrainResult r = m.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
  CHECK(r.skipped, "a NaN in x0 must skip the step");
  CHECK(r.step == 1 && m.step() == 1, "a skipped step must not count (step %lld)", (long long)r.step);
  int k = 0;
  for (Slot s : {Slot::Model, Slot::EMA, Slot::AdamM, Slot::AdamV})
    CHECK(bitwise_equal(before[k++], ditt::all_slot(m, s)), "slot %d changed by a skipped step", int(s));
  b.x0[17] = 0.1f;
  TrainResult r2 = m.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
  CHECK(!r2.skipped && r2.step == 2, "training resumes after a skipped step");
}

static void test_loss_falls() {
  DiTConfig c = ditt::small_config(16);
  const int N = 8;
  DiT<float> m(c, make_cpu_backend<float>(2));
  m.init(4);
  m.set_tables(linear_diffusion_tables(1000));
  Batch b = make_batch(c, N, 6, 300, 999);
  std::vector<double> mean_loss;
  for (int s = 0; s < 30; ++s) {
    TrainResult r = m.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(2e-3));
    double l = 0;
    for (float v : r.mse) l += v / N;
    mean_loss.push_back(l);
  }
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) { first += mean_loss[i] / 5; last += mean_loss[25 + i] / 5; }
  std::printf("mse over 30 steps: first five %.4f, last five %.4f\n", first, last);
  CHECK(last < 0.7 * first, "mse should fall on a fixed batch: first %.4f last %.4f", first, last);
}

// forward() twice by hand vs sample_step (DDIM, eta 0) with and without CFG.
static void test_sample_step() {
  DiTConfig c = ditt::small_config(16);
  c.input_size = 8;
  const int N = 3, C = c.in_channels, HW = 64, Co = c.out_channels();
  auto be = make_cpu_backend<float>(2);
  DiT<float> m(c, be);
  m.init(8);
  std::mt19937_64 rng(8);
  ditt::randomize_params(m, rng, 0.1);  // a new model outputs zeros: make it say something
  DiffusionTables tb = linear_diffusion_tables(1000);
  m.set_tables(tb);
  auto x = ditt::normal_vec<float>(rng, size_t(N) * C * HW, 1.0);
  std::vector<int32_t> y = {0, 2, 4};
  const int t = 500, tp = 480;
  SampleStepCoefs k;
  k.mode = SampleStepCoefs::DDIM;
  k.sqrt_recip_abar = tb.sqrt_recip_abar[t];
  k.sqrt_recipm1_abar = tb.sqrt_recipm1_abar[t];
  k.sqrt_abar_prev = tb.sqrt_abar[tp];
  k.eps_coef = tb.sqrt_1m_abar[tp];
  k.guidance = 3.0;

  auto manual = [&](const std::vector<int32_t>& yu, bool cfg) {
    std::vector<int32_t> tt(N, t);
    std::vector<float> oc(size_t(N) * Co * HW), ou(oc.size());
    m.forward(x.data(), tt.data(), y.data(), N, oc.data(), false);
    m.forward(x.data(), tt.data(), yu.data(), N, ou.data(), false);
    std::vector<double> res(x.size());
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < C * HW; ++i) {
        double ec = oc[size_t(n) * Co * HW + i], eu = ou[size_t(n) * Co * HW + i];
        double e = cfg ? eu + k.guidance * (ec - eu) : ec;
        double xi = x[size_t(n) * C * HW + i];
        double x0h = k.sqrt_recip_abar * xi - k.sqrt_recipm1_abar * e;
        res[size_t(n) * C * HW + i] = k.sqrt_abar_prev * x0h + k.eps_coef * e;
      }
    return res;
  };
  auto run = [&](bool cfg) {
    std::vector<float> xs = x;
    SampleStepCoefs kk = k;
    kk.cfg = cfg;
    m.sample_step(xs.data(), t, y.data(), N, kk, false);
    return xs;
  };
  auto maxdiff = [](const std::vector<float>& a, const std::vector<double>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
  };
  std::vector<int32_t> null_y(N, c.num_classes), wrong_y(N, 1);
  std::vector<float> got_cfg = run(true), got_plain = run(false);
  double d_null = maxdiff(got_cfg, manual(null_y, true));
  double d_wrong = maxdiff(got_cfg, manual(wrong_y, true));
  double d_plain = maxdiff(got_plain, manual(null_y, false));
  CHECK(d_null < 1e-4, "cfg sample step vs manual with the null label: max diff %g", d_null);
  CHECK(d_wrong > 1e-2, "cfg must use the null label (a different label gave max diff only %g)", d_wrong);
  CHECK(d_plain < 1e-4, "plain sample step vs manual: max diff %g", d_plain);

  // DDPM with noise: drawn from the stream, reproducible from the noise state
  SampleStepCoefs d;
  d.mode = SampleStepCoefs::DDPM;
  d.sqrt_recip_abar = tb.sqrt_recip_abar[t];
  d.sqrt_recipm1_abar = tb.sqrt_recipm1_abar[t];
  d.coef1 = tb.coef1[t];
  d.coef2 = tb.coef2[t];
  d.log_beta = tb.log_beta[t];
  d.post_log_var = tb.post_log_var[t];
  d.add_noise = true;
  m.set_noise_state(77, 10);
  std::vector<float> a = x, b = x;
  m.sample_step(a.data(), t, y.data(), N, d, false);
  CHECK(m.noise_offset() == 10 + philox_blocks(size_t(N) * C * HW), "noise offset after a noisy step: %llu",
        (unsigned long long)m.noise_offset());
  m.set_noise_state(77, 10);
  m.sample_step(b.data(), t, y.data(), N, d, false);
  CHECK(bitwise_equal(a, b), "same noise state must give the same DDPM step");
  std::vector<float> cpy = x;
  m.sample_step(cpy.data(), t, y.data(), N, d, false);  // next draw: different noise
  CHECK(!bitwise_equal(a, cpy), "the noise stream must advance");
}

// Arenas are re-allocated when the batch grows: results must not depend on
// the batch sizes seen before; forward(use_ema) must read the EMA weights.
static void test_batch_growth_and_ema() {
  DiTConfig c = ditt::small_config(16);
  c.input_size = 8;
  DiT<float> m(c, make_cpu_backend<float>(2));
  m.init(12);
  std::mt19937_64 rng(12);
  ditt::randomize_params(m, rng, 0.1);
  m.set_tables(linear_diffusion_tables(1000));
  Batch big = make_batch(c, 5, 31, 0, 999);
  const size_t per = size_t(c.in_channels) * 64;
  auto eps = ditt::normal_vec<float>(rng, 5 * per, 1.0);
  std::vector<float> l_a, l_b, l_c, g_a, g_c;
  m.loss_and_grad(big.x0.data(), eps.data(), big.t.data(), big.y.data(), big.w.data(), 2, 1.0, &l_a);
  g_a = ditt::all_slot(m, Slot::Grad);
  m.loss_and_grad(big.x0.data(), eps.data(), big.t.data(), big.y.data(), big.w.data(), 5, 1.0, &l_b);
  m.loss_and_grad(big.x0.data(), eps.data(), big.t.data(), big.y.data(), big.w.data(), 2, 1.0, &l_c);
  g_c = ditt::all_slot(m, Slot::Grad);
  CHECK(bitwise_equal(l_a, l_c) && bitwise_equal(g_a, g_c), "N=2 after N=5 differs from N=2 before it");
  // (not bitwise: the GEMM may block a different M differently)
  CHECK(l_b.size() == 5 && std::fabs(l_b[0] - l_a[0]) < 1e-5 * std::fabs(l_a[0]) &&
            std::fabs(l_b[1] - l_a[1]) < 1e-5 * std::fabs(l_a[1]),
        "the first two samples of N=5 differ from N=2: %g %g vs %g %g", l_b[0], l_b[1], l_a[0], l_a[1]);

  TrainHyper hp = hyper(1e-2);
  hp.optim.ema_decay = 0.5;
  for (int s = 0; s < 2; ++s) m.train_step(big.x0.data(), big.t.data(), big.y.data(), big.w.data(), 5, hp);
  std::vector<float> o_model(5 * 2 * per), o_ema(o_model.size()), o_ref(o_model.size());
  m.forward(big.x0.data(), big.t.data(), big.y.data(), 5, o_model.data(), false);
  m.forward(big.x0.data(), big.t.data(), big.y.data(), 5, o_ema.data(), true);
  CHECK(!bitwise_equal(o_model, o_ema), "EMA (decay 0.5) and model outputs should differ after training");
  DiT<float> r(c, make_cpu_backend<float>(1));
  for (const ParamInfo& p : m.params()) {
    std::vector<float> v(p.numel);
    m.read_param(p.name, Slot::EMA, v.data());
    r.write_param(p.name, Slot::Model, v.data());
  }
  r.forward(big.x0.data(), big.t.data(), big.y.data(), 5, o_ref.data(), false);
  CHECK(bitwise_equal(o_ema, o_ref), "forward(use_ema) must equal a model loaded with the EMA weights");
}

// Activation recomputation re-runs each block's forward in backward: the same
// ops on the same inputs, so losses, gradients and weights must be bitwise those
// of the saving arena, and it must hold (depth + 18) instead of 18 * depth
// [N, L, D]-sized buffers (plus the shared scratch both layouts have).
static void test_recompute_bitwise() {
  DiTConfig c = ditt::small_config(8);
  c.depth = 4;
  const int N = 3;
  std::vector<std::vector<float>> trace(2), weights(2);
  size_t bytes[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    DiT<float> m(c, make_cpu_backend<float>(2));
    m.init(5);
    std::mt19937_64 rng(5);
    ditt::randomize_params(m, rng, 0.1);  // adaLN-Zero would zero most branches
    m.set_tables(linear_diffusion_tables(1000));
    m.set_noise_state(7, 0);
    m.set_recompute(k == 1);
    CHECK(m.recompute() == (k == 1), "recompute() reads back the setting");
    Batch b = make_batch(c, N, 40, 0, 999);
    auto eps = ditt::normal_vec<float>(rng, size_t(N) * c.in_channels * 64, 1.0);
    std::vector<float> l;
    m.loss_and_grad(b.x0.data(), eps.data(), b.t.data(), b.y.data(), b.w.data(), N, 1.0, &l);
    trace[k] = l;
    std::vector<float> g = ditt::all_slot(m, Slot::Grad);
    trace[k].insert(trace[k].end(), g.begin(), g.end());
    for (int s = 0; s < 3; ++s) {
      Batch bs = make_batch(c, N, 50 + s, 0, 999);
      TrainResult r = m.train_step(bs.x0.data(), bs.t.data(), bs.y.data(), bs.w.data(), N, hyper(1e-3));
      trace[k].insert(trace[k].end(), r.loss.begin(), r.loss.end());
      trace[k].push_back(float(r.grad_norm));
    }
    weights[k] = ditt::all_slot(m, Slot::Model);
    bytes[k] = m.activation_bytes(N, true);
    CHECK(m.activation_bytes(N, false) < bytes[k], "inference needs less than training");
  }
  CHECK(bitwise_equal(trace[0], trace[1]), "recomputation changed the losses or gradients");
  CHECK(bitwise_equal(weights[0], weights[1]), "recomputation changed the trained weights");
  // per block: x_in, h1, 3 qkv, att, po, xmid, h2, f2 (10 BLD) + f1pre, f1 (2 BLH = 8 BLD)
  const size_t L = c.num_tokens(), D = c.hidden_size, BLD = size_t(N) * L * D;
  const size_t per_block_full = 18 * BLD + N * 6 * D + 4 * size_t(N) * L + size_t(N) * c.num_heads * L;
  const size_t per_block_kept = BLD + N * 6 * D;
  CHECK(bytes[0] - bytes[1] == (c.depth - 1) * (per_block_full - per_block_kept) * sizeof(float),
        "recomputation should save (depth-1) blocks minus their inputs: %zu - %zu", bytes[0], bytes[1]);

  // Switching mid-run re-allocates and keeps training: toggling back gives
  // the same step as a model that never toggled.
  DiT<float> a(c, make_cpu_backend<float>(1)), b2(c, make_cpu_backend<float>(1));
  for (DiT<float>* m : {&a, &b2}) {
    m->init(9);
    m->set_tables(linear_diffusion_tables(1000));
    m->set_noise_state(3, 0);
  }
  Batch b = make_batch(c, N, 60, 0, 999);
  std::vector<float> la, lb;
  for (int s = 0; s < 3; ++s) {
    a.set_recompute(s == 1);
    TrainResult ra = a.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
    TrainResult rb = b2.train_step(b.x0.data(), b.t.data(), b.y.data(), b.w.data(), N, hyper(1e-3));
    la.insert(la.end(), ra.loss.begin(), ra.loss.end());
    lb.insert(lb.end(), rb.loss.begin(), rb.loss.end());
  }
  CHECK(bitwise_equal(la, lb), "toggling recomputation between steps changed the losses");
  ditt::expect_error([&] { a.activation_bytes(0, true); }, "N must be >= 1", "activation_bytes(0)");
}

int main() {
  try {
    test_threads_bitwise();
    cpu_force_builtin_gemm(true);  // the built-in GEMM as well as BLAS (when built with one)
    test_threads_bitwise();
    cpu_force_builtin_gemm(false);
    test_nan_skips();
    test_loss_falls();
    test_sample_step();
    test_batch_growth_and_ema();
    test_recompute_bitwise();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_dit_train");
}
