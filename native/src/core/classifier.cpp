#include "classifier.h"

#include <cmath>

namespace speed {

void check_classifier_input(const void* x, int N, const char* what) {
  if (N < 1) throw Error(std::string(what) + ": batch size N must be >= 1, got " + std::to_string(N));
  if (!x) throw Error(std::string(what) + ": x is null");
}

void check_classifier_labels(const int32_t* y, int N, int num_classes, const char* what) {
  if (!y) throw Error(std::string(what) + ": y (labels) is null");
  for (int i = 0; i < N; ++i)
    if (y[i] < 0 || y[i] >= num_classes)
      throw Error(std::string(what) + ": y[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
                  " is outside [0, " + std::to_string(num_classes) + ")");
}

std::vector<double> softmax_cross_entropy(std::vector<double> logits, const int32_t* y, int N, int K,
                                          ClassifierStepResult& r) {
  r.logits = std::move(logits);
  r.losses.assign(N, 0.0);
  r.loss = 0.0;
  r.correct = 0;
  std::vector<double> d(static_cast<size_t>(N) * K);
  for (int n = 0; n < N; ++n) {
    const double* z = &r.logits[static_cast<size_t>(n) * K];
    int arg = 0;
    double mx = z[0];
    for (int k = 1; k < K; ++k)
      if (z[k] > mx) {
        mx = z[k];
        arg = k;
      }
    if (arg == y[n]) ++r.correct;
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp(z[k] - mx);
    const double lse = mx + std::log(se);
    r.losses[n] = lse - z[y[n]];
    r.loss += r.losses[n] / N;
    for (int k = 0; k < K; ++k)
      d[static_cast<size_t>(n) * K + k] = (std::exp(z[k] - lse) - (k == y[n] ? 1.0 : 0.0)) / N;
  }
  return d;
}

const ParamInfo& find_classifier_param(const std::vector<ParamInfo>& params, const std::string& name,
                                       const char* model) {
  for (const ParamInfo& p : params)
    if (p.name == name) return p;
  throw Error("unknown " + std::string(model) + " parameter '" + name + "'; this model has " +
              std::to_string(params.size()) + " parameters: " + params.front().name + ", " + params[1].name +
              ", ..., " + params.back().name);
}

}  // namespace speed
