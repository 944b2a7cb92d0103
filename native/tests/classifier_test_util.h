// What the classifier tests (test_vit_classifier, test_cnn_classifier) share: an
// independent host cross-entropy and the check of every parameter's gradient
// against central finite differences of an objective.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "test_dit_util.h"

namespace clst {

// Mean softmax cross-entropy of logits z [N, K] against y, written out on its own.
inline double host_ce(const std::vector<double>& z, const std::vector<int32_t>& y, int K) {
  double s = 0;
  const int N = static_cast<int>(y.size());
  for (int n = 0; n < N; ++n) {
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp(z[n * K + k]);
    s += std::log(se) - z[n * K + y[n]];
  }
  return s / N;
}

// For every trainable parameter of m (whose Grad slot holds d objective / d param):
// the first, the last and `picks` random coordinates against a central difference of
// step h (fourth order when `fourth`), |num - analytic| <= rel * max(|num|, |analytic|) + abs.
// A gradient that is all zero fails. Prints and returns the worst relative error.
template <typename M, typename F>
double check_gradients(M& m, F&& objective, std::mt19937_64& rng, double h, int picks, bool fourth, double rel,
                       double abs, const char* what) {
  double worst = 0;
  int checked = 0;
  for (const speed::ParamInfo& p : m.params()) {
    if (!p.trainable) continue;
    std::vector<double> g(p.numel), val(p.numel);
    m.read_param(p.name, speed::Slot::Grad, g.data());
    m.read_param(p.name, speed::Slot::Model, val.data());
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    CHECK(gmax > 0, "gradient of %s is all zero", p.name.c_str());
    std::vector<size_t> idx = {0, p.numel - 1};
    std::uniform_int_distribution<size_t> pick(0, p.numel - 1);
    for (int k = 0; k < picks; ++k) idx.push_back(pick(rng));
    for (size_t i : idx) {
      const double keep = val[i];
      auto at = [&](double d) {
        val[i] = keep + d;
        m.write_param(p.name, speed::Slot::Model, val.data());
        return objective();
      };
      const double f1 = at(h) - at(-h);
      const double num = fourth ? (8 * f1 - (at(2 * h) - at(-2 * h))) / (12 * h) : f1 / (2 * h);
      val[i] = keep;
      m.write_param(p.name, speed::Slot::Model, val.data());
      const double den = std::max(std::fabs(num), std::fabs(g[i]));
      if (den > 1e-6) worst = std::max(worst, std::fabs(num - g[i]) / den);
      ++checked;
      CHECK(std::fabs(num - g[i]) <= rel * den + abs, "%s[%zu]: analytic %.12g numeric %.12g", p.name.c_str(), i,
            g[i], num);
    }
  }
  std::printf("%s: %d coordinates, worst relative error %.3g\n", what, checked, worst);
  return worst;
}

}  // namespace clst
