#include "vit.h"

#include <cmath>

#include "convert.h"
#include "guard.h"
#include "worker.h"

namespace speed_napi {

namespace {

Napi::Float64Array make_f64(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = v[i];
  return a;
}

}  // namespace

Napi::Function ViTModel::Init(Napi::Env env) {
  return DefineClass(env, "ViTModel",
                     {
                         InstanceMethod<&ViTModel::Params>("params"),
                         InstanceMethod<&ViTModel::NumTrainable>("numTrainable"),
                         InstanceMethod<&ViTModel::GetConfig>("config"),
                         InstanceMethod<&ViTModel::ReadParam>("readParam"),
                         InstanceMethod<&ViTModel::WriteParam>("writeParam"),
                         InstanceMethod<&ViTModel::GetStep>("getStep"),
                         InstanceMethod<&ViTModel::SetStep>("setStep"),
                         InstanceMethod<&ViTModel::TrainStep>("trainStep"),
                         InstanceMethod<&ViTModel::Logits>("logits"),
                         InstanceMethod<&ViTModel::Features>("features"),
                         InstanceMethod<&ViTModel::Dispose>("dispose"),
                         InstanceMethod<&ViTModel::Busy>("busy"),
                     });
}

// new ViTModel(config, { device, threads, cudaDevice, cudaMath, seed })
ViTModel::ViTModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ViTModel>(info) {
  Napi::Env env = info.Env();
  const std::string w = "FeatNet.create";
  cfg_ = vit_config_from_js(info[0], w + ": config");
  Napi::Object o = require_object(info[1], w + ": options");
  const std::string device = device_from_js(o, w);
  uint64_t seed = static_cast<uint64_t>(require_int(o.Get("seed"), w + ": seed", 0, kMaxSafeInt));
  guard(env, w, [&] {
    auto model = std::make_unique<speed::ViTClassifier<float>>(cfg_, backend_from_js(env, o, device, w));
    model->init(seed);
    model_ = std::move(model);
  });
}

speed::ViTClassifier<float>& ViTModel::usable(Napi::Env env, const char* what) {
  if (!model_) throw_error(env, std::string(what) + ": the feature network has been disposed; create a new one");
  require_idle(env, what, busy_, "feature network");
  return *model_;
}

int ViTModel::image_count(Napi::Env env, const std::vector<float>& x, const std::string& what) const {
  const size_t per = size_t(cfg_.in_channels) * cfg_.input_size * cfg_.input_size;
  if (x.empty() || x.size() % per != 0 || x.size() / per > 1000000)
    throw_error(env, what + " has " + std::to_string(x.size()) + " elements, expected a positive multiple of C*H*W = " +
                         std::to_string(cfg_.in_channels) + "*" + std::to_string(cfg_.input_size) + "*" +
                         std::to_string(cfg_.input_size) + " = " + std::to_string(per));
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) throw_error(env, what + "[" + std::to_string(i) + "] is not finite");
  return static_cast<int>(x.size() / per);
}

Napi::Value ViTModel::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return params_to_js(env, usable(env, "params").params());
}

Napi::Value ViTModel::NumTrainable(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "numTrainable");
  return Napi::Number::New(info.Env(), static_cast<double>(m.num_trainable()));
}

Napi::Value ViTModel::GetConfig(const Napi::CallbackInfo& info) { return vit_config_to_js(info.Env(), cfg_); }

// readParam(name, slot) -> Float32Array
Napi::Value ViTModel::ReadParam(const Napi::CallbackInfo& info) {
  return read_param_js(info, usable(info.Env(), "readParam"), false);
}

// writeParam(name, slot, Float32Array)
Napi::Value ViTModel::WriteParam(const Napi::CallbackInfo& info) {
  return write_param_js(info, usable(info.Env(), "writeParam"), false);
}

Napi::Value ViTModel::GetStep(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "getStep");
  return Napi::Number::New(info.Env(), static_cast<double>(m.step()));
}

Napi::Value ViTModel::SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setStep");
  m.set_step(require_int(info[0], "setStep: step", 0, kMaxSafeInt));
  return env.Undefined();
}

// trainStep(x, y, hp) -> Promise<{loss, losses, logits, correct, gradNorm, skipped, step}>
Napi::Value ViTModel::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "trainStep";
  auto& m = usable(env, "trainStep");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], w + ": x"));
  auto y = std::make_shared<std::vector<int32_t>>(copy_i32(info[1], w + ": y"));
  const int N = image_count(env, *x, w + ": x");
  if (y->size() != size_t(N))
    throw_error(env, w + ": y has " + std::to_string(y->size()) + " elements, expected N = " + std::to_string(N));
  for (size_t i = 0; i < y->size(); ++i)
    if ((*y)[i] < 0 || (*y)[i] >= cfg_.num_classes)
      throw_error(env, w + ": y[" + std::to_string(i) + "] = " + std::to_string((*y)[i]) +
                           " is out of range: expected a label in [0, " + std::to_string(cfg_.num_classes - 1) + "]");
  const speed::OptimHyper hp = hyper_from_js(info[2], w + ": hp", false).optim;

  auto result = std::make_shared<speed::ViTStepResult>();
  return queue_long_call(
      env, w, busy_, [&m, x, y, N, hp, result] { *result = m.train_step(x->data(), y->data(), N, hp); },
      [result](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("loss", Napi::Number::New(e, result->loss));
        o.Set("losses", make_f64(e, result->losses));
        o.Set("logits", make_f64(e, result->logits));
        o.Set("correct", Napi::Number::New(e, result->correct));
        o.Set("gradNorm", Napi::Number::New(e, result->grad_norm));
        o.Set("skipped", Napi::Boolean::New(e, result->skipped));
        o.Set("step", Napi::Number::New(e, static_cast<double>(result->step)));
        return o;
      },
      Value());
}

// logits(x) -> Promise<Float32Array [N, numClasses]>
Napi::Value ViTModel::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "logits");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], "logits: x"));
  const int N = image_count(env, *x, "logits: x");
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.num_classes);
  return queue_long_call(
      env, "logits", busy_, [&m, x, N, out] { m.logits(x->data(), N, out->data()); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, Value());
}

// features(x) -> Promise<Float32Array [N, hiddenSize]>
Napi::Value ViTModel::Features(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "features");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], "features: x"));
  const int N = image_count(env, *x, "features: x");
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.hidden_size);
  return queue_long_call(
      env, "features", busy_, [&m, x, N, out] { m.features(x->data(), N, out->data()); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, Value());
}

Napi::Value ViTModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env, "dispose", busy_, "feature network");
  model_.reset();
  return env.Undefined();
}

Napi::Value ViTModel::Busy(const Napi::CallbackInfo& info) { return busy_to_js(info.Env(), busy_); }

}  // namespace speed_napi
