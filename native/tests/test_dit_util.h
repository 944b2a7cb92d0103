// Shared helpers of the test_dit_* programs: a tiny check framework, seeded
// host random numbers, and an independent float64 IDDPM loss written from
// the IDDPM formulas (it shares no code with the kernels).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "speed/bench.h"
#include "speed/cpu.h"
#include "speed/dit.h"

namespace ditt {

inline int g_failures = 0;

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      ++ditt::g_failures;                                                 \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                  \
      std::fprintf(stderr, "\n");                                         \
    }                                                                     \
  } while (0)

// Runs f and checks that it throws speed::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle, const char* what) {
  try {
    f();
  } catch (const speed::Error& e) {
    std::string m = e.what();
    CHECK(m.find(needle) != std::string::npos, "%s: message '%s' lacks '%s'", what, m.c_str(), needle.c_str());
    return;
  }
  CHECK(false, "%s: expected speed::Error mentioning '%s'", what, needle.c_str());
}

inline int finish(const char* name) {
  if (g_failures) {
    std::fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
    return 1;
  }
  std::printf("%s: all checks passed\n", name);
  return 0;
}

template <typename T>
std::vector<T> normal_vec(std::mt19937_64& rng, size_t n, double scale) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

// Every trainable parameter's `s` copy (weights, EMA, Adam moments or gradient),
// concatenated in state_dict order: the whole model in one vector to compare.
template <typename T>
std::vector<T> all_slot(const speed::DiT<T>& m, speed::Slot s) {
  std::vector<T> v;
  v.reserve(m.num_trainable());
  for (const speed::ParamInfo& p : m.params()) {
    if (!p.trainable) continue;
    std::vector<T> x(p.numel);
    m.read_param(p.name, s, x.data());
    v.insert(v.end(), x.begin(), x.end());
  }
  return v;
}

// Sets every parameter (pos_embed too) to random values, so that no gradient
// is zero by construction (adaLN-Zero would make most of them zero).
template <typename T>
void randomize_params(speed::DiT<T>& m, std::mt19937_64& rng, double scale) {
  for (const speed::ParamInfo& p : m.params()) {
    auto v = normal_vec<T>(rng, p.numel, p.trainable ? scale : 1.0);
    m.write_param(p.name, speed::Slot::Model, v.data());
  }
}

inline double approx_std_normal_cdf(double x) {
  return 0.5 * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

// Per-sample IDDPM hybrid loss (L_simple + vb_scale L_vb). out [N, Cout, HW]; eps_hat for
// the vb term is read from `frozen` (the stop-gradient), everything else from
// `out`. Returns loss; mse/vb per sample through the pointers.
inline std::vector<double> iddpm_loss_ref(const speed::DiffusionTables& tb, const std::vector<double>& out,
                                          const std::vector<double>& frozen, const std::vector<double>& x0,
                                          const std::vector<double>& xt, const std::vector<double>& eps,
                                          const std::vector<int32_t>& t, const std::vector<double>& w,
                                          int N, int C, int HW, bool learn_sigma, double vb_scale,
                                          std::vector<double>* mse_out = nullptr,
                                          std::vector<double>* vb_out = nullptr) {
  const int Co = learn_sigma ? 2 * C : C;
  std::vector<double> loss(N), mse(N), vb(N);
  for (int n = 0; n < N; ++n) {
    const int tt = t[n];
    double se = 0, v_sum = 0;
    for (int c = 0; c < C; ++c) {
      for (int i = 0; i < HW; ++i) {
        size_t ix = (size_t(n) * C + c) * HW + i;
        size_t io = (size_t(n) * Co + c) * HW + i;
        double d = eps[ix] - out[io];
        se += d * d;
        if (!learn_sigma) continue;
        double v = out[(size_t(n) * Co + C + c) * HW + i];
        double frac = (v + 1) / 2;
        double lv = frac * tb.log_beta[tt] + (1 - frac) * tb.post_log_var[tt];
        double x0h = tb.sqrt_recip_abar[tt] * xt[ix] - tb.sqrt_recipm1_abar[tt] * frozen[io];
        double mu = tb.coef1[tt] * x0h + tb.coef2[tt] * xt[ix];
        if (tt > 0) {
          double tm = tb.coef1[tt] * x0[ix] + tb.coef2[tt] * xt[ix];
          double lv1 = tb.post_log_var[tt];
          v_sum += 0.5 * (-1 + lv - lv1 + std::exp(lv1 - lv) + (tm - mu) * (tm - mu) * std::exp(-lv));
        } else {
          double x = x0[ix], cx = x - mu, inv = std::exp(-0.5 * lv);
          double cdf_plus = approx_std_normal_cdf(inv * (cx + 1.0 / 255));
          double cdf_min = approx_std_normal_cdf(inv * (cx - 1.0 / 255));
          double lp;
          if (x < -0.999) lp = std::log(std::max(cdf_plus, 1e-12));
          else if (x > 0.999) lp = std::log(std::max(1 - cdf_min, 1e-12));
          else lp = std::log(std::max(cdf_plus - cdf_min, 1e-12));
          v_sum += -lp;
        }
      }
    }
    mse[n] = w[n] * se / (C * HW);
    vb[n] = v_sum / (C * HW) / std::log(2.0);
    loss[n] = mse[n] + vb_scale * vb[n];
  }
  if (mse_out) *mse_out = mse;
  if (vb_out) *vb_out = vb;
  return loss;
}

// The tiny configuration the gradient and training tests use.
inline speed::DiTConfig tiny_config(bool conditional, bool learn_sigma) {
  speed::DiTConfig c;
  c.input_size = 4;
  c.patch_size = 2;
  c.in_channels = 2;
  c.hidden_size = 8;
  c.depth = 2;
  c.num_heads = 2;
  c.num_classes = conditional ? 3 : 0;
  c.class_dropout_prob = conditional ? 0.1 : 0.0;
  c.learn_sigma = learn_sigma;
  return c;
}

// A small class-conditional DiT (patch 2, RGB, D 64, depth 2, 4 heads, 5 classes with
// label dropout, learned sigma) at the given input size.
inline speed::DiTConfig small_config(int input_size) {
  speed::DiTConfig c;
  c.input_size = input_size;
  c.patch_size = 2;
  c.in_channels = 3;
  c.hidden_size = 64;
  c.depth = 2;
  c.num_heads = 4;
  c.num_classes = 5;
  c.class_dropout_prob = 0.1;
  c.learn_sigma = true;
  return c;
}

}  // namespace ditt
