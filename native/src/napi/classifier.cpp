// What ViTModel and CNNModel share beyond the ClassifierModel template.
#include "classifier.h"

namespace speed_napi {

Napi::Float64Array make_f64(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = v[i];
  return a;
}

Napi::Object classifier_step_to_js(Napi::Env e, const speed::ClassifierStepResult& r) {
  Napi::Object o = Napi::Object::New(e);
  o.Set("loss", Napi::Number::New(e, r.loss));
  o.Set("losses", make_f64(e, r.losses));
  o.Set("logits", make_f64(e, r.logits));
  o.Set("correct", Napi::Number::New(e, r.correct));
  o.Set("gradNorm", Napi::Number::New(e, r.grad_norm));
  o.Set("skipped", Napi::Boolean::New(e, r.skipped));
  o.Set("step", Napi::Number::New(e, static_cast<double>(r.step)));
  return o;
}

int classifier_image_count(Napi::Env env, const std::vector<float>& x, int C, int S, const std::string& what) {
  const size_t per = size_t(C) * S * S;
  if (x.empty() || x.size() % per != 0 || x.size() / per > 1000000)
    throw_error(env, what + " has " + std::to_string(x.size()) + " elements, expected a positive multiple of C*H*W = " +
                         std::to_string(C) + "*" + std::to_string(S) + "*" + std::to_string(S) + " = " +
                         std::to_string(per));
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) throw_error(env, what + "[" + std::to_string(i) + "] is not finite");
  return static_cast<int>(x.size() / per);
}

void classifier_check_labels(Napi::Env env, const std::vector<int32_t>& y, int N, int num_classes,
                             const std::string& w) {
  if (y.size() != size_t(N))
    throw_error(env, w + ": y has " + std::to_string(y.size()) + " elements, expected N = " + std::to_string(N));
  for (size_t i = 0; i < y.size(); ++i)
    if (y[i] < 0 || y[i] >= num_classes)
      throw_error(env, w + ": y[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
                           " is out of range: expected a label in [0, " + std::to_string(num_classes - 1) + "]");
}

}  // namespace speed_napi
