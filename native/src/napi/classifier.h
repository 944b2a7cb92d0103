// The JS classes wrapping the core's image classifiers (the feature networks of
// src/featnet): ViTModel (vit.h) and CNNModel (cnn.h) are ClassifierModel over
// their Traits, so both have exactly the same methods. Long calls (trainStep,
// logits, features) run on a libuv worker and resolve a Promise; while one runs,
// every other call is refused at once, exactly as for the DiT Model (model.h).
//
// Traits: Net (the float32 classifier), Config, kClass (the JS class name),
// config_from_js / config_to_js, feature_dim(config).
#pragma once
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "convert.h"
#include "guard.h"
#include "speed/classifier.h"
#include "worker.h"

namespace speed_napi {

Napi::Float64Array make_f64(Napi::Env env, const std::vector<double>& v);
// trainStep's resolved value {loss, losses, logits, correct, gradNorm, skipped, step}
Napi::Object classifier_step_to_js(Napi::Env env, const speed::ClassifierStepResult& r);
// Checks that x holds N whole finite images of C x S x S and returns N.
int classifier_image_count(Napi::Env env, const std::vector<float>& x, int C, int S, const std::string& what);
// Checks y holds N labels in [0, num_classes).
void classifier_check_labels(Napi::Env env, const std::vector<int32_t>& y, int N, int num_classes,
                             const std::string& what);

template <typename Traits>
class ClassifierModel : public Napi::ObjectWrap<ClassifierModel<Traits>> {
  using Base = Napi::ObjectWrap<ClassifierModel<Traits>>;
  using Net = typename Traits::Net;

 public:
  static Napi::Function Init(Napi::Env env) {
    return Base::DefineClass(env, Traits::kClass,
                             {
                                 Base::template InstanceMethod<&ClassifierModel::Params>("params"),
                                 Base::template InstanceMethod<&ClassifierModel::NumTrainable>("numTrainable"),
                                 Base::template InstanceMethod<&ClassifierModel::GetConfig>("config"),
                                 Base::template InstanceMethod<&ClassifierModel::ReadParam>("readParam"),
                                 Base::template InstanceMethod<&ClassifierModel::WriteParam>("writeParam"),
                                 Base::template InstanceMethod<&ClassifierModel::GetStep>("getStep"),
                                 Base::template InstanceMethod<&ClassifierModel::SetStep>("setStep"),
                                 Base::template InstanceMethod<&ClassifierModel::TrainStep>("trainStep"),
                                 Base::template InstanceMethod<&ClassifierModel::Logits>("logits"),
                                 Base::template InstanceMethod<&ClassifierModel::Features>("features"),
                                 Base::template InstanceMethod<&ClassifierModel::Dispose>("dispose"),
                                 Base::template InstanceMethod<&ClassifierModel::Busy>("busy"),
                             });
  }

  // new <kClass>(config, { device, threads, cudaDevice, cudaMath, seed })
  explicit ClassifierModel(const Napi::CallbackInfo& info) : Base(info) {
    Napi::Env env = info.Env();
    const std::string w = "FeatNet.create";
    cfg_ = Traits::config_from_js(info[0], w + ": config");
    Napi::Object o = require_object(info[1], w + ": options");
    const std::string device = device_from_js(o, w);
    uint64_t seed = static_cast<uint64_t>(require_int(o.Get("seed"), w + ": seed", 0, kMaxSafeInt));
    guard(env, w, [&] {
      auto model = std::make_unique<Net>(cfg_, backend_from_js(env, o, device, w));
      model->init(seed);
      model_ = std::move(model);
    });
  }

 private:
  Net& usable(Napi::Env env, const char* what) {
    if (!model_) throw_error(env, std::string(what) + ": the feature network has been disposed; create a new one");
    require_idle(env, what, busy_, "feature network");
    return *model_;
  }
  int image_count(Napi::Env env, const std::vector<float>& x, const std::string& what) const {
    return classifier_image_count(env, x, cfg_.in_channels, cfg_.input_size, what);
  }

  Napi::Value Params(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return params_to_js(env, usable(env, "params").params());
  }
  Napi::Value NumTrainable(const Napi::CallbackInfo& info) {
    auto& m = usable(info.Env(), "numTrainable");
    return Napi::Number::New(info.Env(), static_cast<double>(m.num_trainable()));
  }
  Napi::Value GetConfig(const Napi::CallbackInfo& info) { return Traits::config_to_js(info.Env(), cfg_); }
  // readParam(name, slot) -> Float32Array
  Napi::Value ReadParam(const Napi::CallbackInfo& info) {
    return read_param_js(info, usable(info.Env(), "readParam"), false);
  }
  // writeParam(name, slot, Float32Array)
  Napi::Value WriteParam(const Napi::CallbackInfo& info) {
    return write_param_js(info, usable(info.Env(), "writeParam"), false);
  }
  Napi::Value GetStep(const Napi::CallbackInfo& info) {
    auto& m = usable(info.Env(), "getStep");
    return Napi::Number::New(info.Env(), static_cast<double>(m.step()));
  }
  Napi::Value SetStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& m = usable(env, "setStep");
    m.set_step(require_int(info[0], "setStep: step", 0, kMaxSafeInt));
    return env.Undefined();
  }

  // trainStep(x, y, hp) -> Promise<{loss, losses, logits, correct, gradNorm, skipped, step}>
  Napi::Value TrainStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::string w = "trainStep";
    auto& m = usable(env, "trainStep");
    auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], w + ": x"));
    auto y = std::make_shared<std::vector<int32_t>>(copy_i32(info[1], w + ": y"));
    const int N = image_count(env, *x, w + ": x");
    classifier_check_labels(env, *y, N, cfg_.num_classes, w);
    const speed::OptimHyper hp = hyper_from_js(info[2], w + ": hp", false).optim;
    auto result = std::make_shared<speed::ClassifierStepResult>();
    return queue_long_call(
        env, w, busy_, [&m, x, y, N, hp, result] { *result = m.train_step(x->data(), y->data(), N, hp); },
        [result](Napi::Env e) -> Napi::Value { return classifier_step_to_js(e, *result); }, this->Value());
  }

  // logits(x) -> Promise<Float32Array [N, numClasses]>
  Napi::Value Logits(const Napi::CallbackInfo& info) {
    return forward_call(info, "logits", cfg_.num_classes,
                        [](Net& m, const float* x, int N, float* out) { m.logits(x, N, out); });
  }
  // features(x) -> Promise<Float32Array [N, feature_dim]>
  Napi::Value Features(const Napi::CallbackInfo& info) {
    return forward_call(info, "features", Traits::feature_dim(cfg_),
                        [](Net& m, const float* x, int N, float* out) { m.features(x, N, out); });
  }
  template <typename F>
  Napi::Value forward_call(const Napi::CallbackInfo& info, const char* what, int width, F f) {
    Napi::Env env = info.Env();
    auto& m = usable(env, what);
    auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], std::string(what) + ": x"));
    const int N = image_count(env, *x, std::string(what) + ": x");
    auto out = std::make_shared<std::vector<float>>(size_t(N) * width);
    return queue_long_call(
        env, what, busy_, [&m, x, N, out, f] { f(m, x->data(), N, out->data()); },
        [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, this->Value());
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    require_idle(env, "dispose", busy_, "feature network");
    model_.reset();
    return env.Undefined();
  }
  Napi::Value Busy(const Napi::CallbackInfo& info) { return busy_to_js(info.Env(), busy_); }

  std::unique_ptr<Net> model_;
  typename Traits::Config cfg_;
  std::string busy_;
};

}  // namespace speed_napi
