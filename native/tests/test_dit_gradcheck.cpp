// Whole model + IDDPM loss backward against central finite differences in
// float64, on tiny configurations with every parameter set to random values.
// The vb term holds eps_hat constant (stop-gradient), so the finite-difference
// objective does the same: eps_hat inside vb comes from the unperturbed output.
#include <algorithm>
#include <cmath>

#include "test_dit_util.h"

using namespace speed;

static void gradcheck(const char* label, const DiTConfig& cfg, uint64_t seed, double vb_scale) {
  if (getenv("SEED")) seed += atoi(getenv("SEED"));
  auto be = make_cpu_backend<double>(2);
  DiT<double> m(cfg, be);
  m.init(1);
  std::mt19937_64 rng(seed);
  ditt::randomize_params(m, rng, 0.35);
  // Keep the outputs O(1): with large eps_hat the t = 0 likelihood sits in
  // the far tail, where cdf_plus - cdf_min cancels and the objective itself
  // becomes too noisy for a 1e-6 finite-difference check.
  for (const char* nm : {"final_layer.linear.weight", "final_layer.linear.bias"}) {
    size_t n = 0;
    for (const ParamInfo& p : m.params())
      if (p.name == nm) n = p.numel;
    auto v = ditt::normal_vec<double>(rng, n, 0.08);
    m.write_param(nm, Slot::Model, v.data());
  }
  DiffusionTables tb = linear_diffusion_tables(1000);
  m.set_tables(tb);

  const int N = 3, C = cfg.in_channels, HW = cfg.input_size * cfg.input_size, Co = cfg.out_channels();
  const size_t n_img = size_t(N) * C * HW;
  std::vector<double> x0 = ditt::normal_vec<double>(rng, n_img, 0.6);
  for (auto& v : x0) v = std::max(-1.0, std::min(1.0, v));
  x0[0] = -1.0;  // the open edge bins of the t = 0 likelihood
  x0[1] = 1.0;
  std::vector<double> eps = ditt::normal_vec<double>(rng, n_img, 1.0);
  std::vector<int32_t> t = {0, 9, 420};  // t = 0: NLL branch; t > 0: KL
  if (getenv("T0")) t[0] = atoi(getenv("T0"));
  std::vector<int32_t> y = {2, 0, 3};    // 3 = null label
  if (cfg.num_classes == 0) y = {0, 0, 0};
  std::vector<double> w = {1.0, 0.7, 1.3};

  std::vector<double> loss_k, mse_k, vb_k;
  double L = m.loss_and_grad(x0.data(), eps.data(), t.data(), y.data(), w.data(), N, vb_scale, &loss_k,
                             &mse_k, &vb_k);
  // x_t and the model output at the unperturbed weights, on the host
  std::vector<double> xt(n_img);
  for (int n = 0; n < N; ++n)
    for (size_t i = 0; i < size_t(C) * HW; ++i) {
      size_t k = n * size_t(C) * HW + i;
      xt[k] = tb.sqrt_abar[t[n]] * x0[k] + tb.sqrt_1m_abar[t[n]] * eps[k];
    }
  std::vector<double> out0(size_t(N) * Co * HW);
  m.forward(xt.data(), t.data(), y.data(), N, out0.data(), false);
  std::vector<double> mse_r, vb_r;
  auto loss_r = ditt::iddpm_loss_ref(tb, out0, out0, x0, xt, eps, t, w, N, C, HW, cfg.learn_sigma, vb_scale,
                                     &mse_r, &vb_r);
  double Lr = 0;
  for (int n = 0; n < N; ++n) {
    Lr += loss_r[n] / N;
    CHECK(std::fabs(loss_k[n] - loss_r[n]) <= 1e-10 * (1 + std::fabs(loss_r[n])),
          "%s: loss[%d] kernel %.15g vs reference %.15g", label, n, loss_k[n], loss_r[n]);
    CHECK(std::fabs(mse_k[n] - mse_r[n]) <= 1e-10 * (1 + std::fabs(mse_r[n])), "%s: mse[%d] %.15g vs %.15g",
          label, n, mse_k[n], mse_r[n]);
    CHECK(std::fabs(vb_k[n] - vb_r[n]) <= 1e-10 * (1 + std::fabs(vb_r[n])), "%s: vb[%d] %.15g vs %.15g", label,
          n, vb_k[n], vb_r[n]);
  }
  std::printf("%s: loss %.6g %.6g %.6g, vb %.6g %.6g %.6g\n", label, loss_r[0], loss_r[1], loss_r[2], vb_r[0], vb_r[1], vb_r[2]);
  CHECK(std::fabs(L - Lr) <= 1e-10 * (1 + std::fabs(Lr)), "%s: mean loss %.15g vs %.15g", label, L, Lr);
  if (cfg.learn_sigma) CHECK(vb_r[0] > 0 && vb_r[1] > 0, "%s: vb should be positive", label);

  auto objective = [&]() {
    std::vector<double> out(out0.size());
    m.forward(xt.data(), t.data(), y.data(), N, out.data(), false);
    auto l = ditt::iddpm_loss_ref(tb, out, out0, x0, xt, eps, t, w, N, C, HW, cfg.learn_sigma, vb_scale);
    double s = 0;
    for (double v : l) s += v;
    return s / N;
  };

  const double h = getenv("H") ? atof(getenv("H")) : 1e-3;
  double worst = 0;
  std::string worst_name;
  int checked = 0;
  for (const ParamInfo& p : m.params()) {
    if (!p.trainable) continue;
    std::vector<double> g(p.numel), val(p.numel);
    m.read_param(p.name, Slot::Grad, g.data());
    m.read_param(p.name, Slot::Model, val.data());
    // the null-label row and the used class rows get gradient; check those and random others
    std::vector<size_t> idx;
    std::uniform_int_distribution<size_t> pick(0, p.numel - 1);
    for (int k = 0; k < 5; ++k) idx.push_back(pick(rng));
    idx.push_back(p.numel - 1);
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    CHECK(gmax > 0, "%s: gradient of %s is all zero", label, p.name.c_str());
    for (size_t i : idx) {
      double keep = val[i];
      auto at = [&](double d) {
        val[i] = keep + d;
        m.write_param(p.name, Slot::Model, val.data());
        return objective();
      };
      // fourth-order central difference: the vb term at small t (variance
      // ~beta_0) is stiff enough that the O(h^2) truncation of the plain
      // central difference would exceed 1e-6
      double f1 = at(h) - at(-h), f2 = at(2 * h) - at(-2 * h);
      val[i] = keep;
      m.write_param(p.name, Slot::Model, val.data());
      double num = (8 * f1 - f2) / (12 * h);
      // relative error, with an absolute floor of 1e-9 for coordinates whose
      // true gradient is ~0 (the key bias of attention, unused class rows)
      double rel = std::fabs(num - g[i]) / std::max({std::fabs(num), std::fabs(g[i]), 1e-3});
      bool ok = std::fabs(num - g[i]) <= 1e-6 * std::max(std::fabs(num), std::fabs(g[i])) + 1e-9;
      ++checked;
      if (rel > worst) { worst = rel; worst_name = p.name + "[" + std::to_string(i) + "]"; }
      CHECK(ok, "%s: %s[%zu] analytic %.12g numeric %.12g rel %.3g", label, p.name.c_str(), i, g[i], num,
            rel);
    }
  }
  std::printf("%s: %d coordinates checked, worst relative error %.3g (floor 1e-3) at %s\n", label, checked, worst,
              worst_name.c_str());
}

int main() {
  try {
    gradcheck("conditional, learn_sigma", ditt::tiny_config(true, true), 11, 1.0);
    gradcheck("conditional, learn_sigma, vb_scale 0.25", ditt::tiny_config(true, true), 12, 0.25);
    DiTConfig u = ditt::tiny_config(false, false);
    u.patch_size = 1;  // 16 tokens, patch dim C
    u.depth = 1;
    gradcheck("unconditional, no sigma, patch 1", u, 13, 1.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_dit_gradcheck");
}
