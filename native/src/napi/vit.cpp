#include "vit.h"

#include <cmath>

#include "convert.h"
#include "guard.h"
#include "speed/cpu.h"
#include "speed/cuda.h"
#include "worker.h"

namespace speed_napi {

namespace {

const int64_t kMaxSafe = 9007199254740991LL;

// ViTConfig from { inputSize, patchSize, inChannels, hiddenSize, depth, numHeads, mlpRatio, numClasses }
speed::ViTConfig vit_config_from_js(const Napi::Value& v, const std::string& what) {
  Napi::Object o = require_object(v, what);
  speed::ViTConfig c;
  auto i = [&](const char* key, int lo) {
    return static_cast<int>(require_int(o.Get(key), what + "." + key, lo, 1 << 20));
  };
  c.input_size = i("inputSize", 1);
  c.patch_size = i("patchSize", 1);
  c.in_channels = i("inChannels", 1);
  c.hidden_size = i("hiddenSize", 1);
  c.depth = i("depth", 1);
  c.num_heads = i("numHeads", 1);
  c.mlp_ratio = require_number(o, "mlpRatio", what);
  c.num_classes = i("numClasses", 2);
  guard(v.Env(), what, [&] { c.validate(); });
  return c;
}

Napi::Object vit_config_to_js(Napi::Env env, const speed::ViTConfig& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("inputSize", c.input_size);
  o.Set("patchSize", c.patch_size);
  o.Set("inChannels", c.in_channels);
  o.Set("hiddenSize", c.hidden_size);
  o.Set("depth", c.depth);
  o.Set("numHeads", c.num_heads);
  o.Set("mlpRatio", c.mlp_ratio);
  o.Set("numClasses", c.num_classes);
  return o;
}

const speed::ParamInfo* find_param(const speed::ViTClassifier<float>& m, const std::string& name) {
  for (const auto& p : m.params())
    if (p.name == name) return &p;
  return nullptr;
}

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
  Napi::Value dev = o.Get("device");
  std::string device = dev.IsUndefined() ? "cpu" : require_string(dev, w + ": device");
  if (device != "cpu" && device != "cuda")
    throw_error(env, w + ": device must be 'cpu' or 'cuda', got '" + device + "'");
  uint64_t seed = static_cast<uint64_t>(require_int(o.Get("seed"), w + ": seed", 0, kMaxSafe));
  guard(env, w, [&] {
    std::shared_ptr<speed::Backend<float>> backend;
    if (device == "cpu") {
      Napi::Value th = o.Get("threads");
      int threads = th.IsUndefined() ? 0 : static_cast<int>(require_int(th, w + ": threads", 0, 4096));
      backend = speed::make_cpu_backend<float>(threads);
    } else {
      std::string why;
      if (!speed::cuda_available(&why)) throw_error(env, w + ": device 'cuda' is not available: " + why);
      speed::CudaOptions co;
      Napi::Value cd = o.Get("cudaDevice");
      co.device = cd.IsUndefined() ? 0 : static_cast<int>(require_int(cd, w + ": cudaDevice", 0, 1024));
      Napi::Value cm = o.Get("cudaMath");
      std::string math = cm.IsUndefined() ? "bf16" : require_string(cm, w + ": cudaMath");
      if (math == "bf16") co.math = speed::CudaMath::BF16;
      else if (math == "tf32") co.math = speed::CudaMath::TF32;
      else if (math == "fp32") co.math = speed::CudaMath::FP32;
      else throw_error(env, w + ": cudaMath must be 'bf16', 'tf32' or 'fp32', got '" + math + "'");
      backend = speed::make_cuda_backend(co);
    }
    auto model = std::make_unique<speed::ViTClassifier<float>>(cfg_, backend);
    model->init(seed);
    model_ = std::move(model);
  });
}

speed::ViTClassifier<float>& ViTModel::usable(Napi::Env env, const char* what) {
  if (!model_) throw_error(env, std::string(what) + ": the feature network has been disposed; create a new one");
  if (!busy_.empty())
    throw_error(env, std::string(what) + ": feature network is busy with " + busy_ + "; await the previous call");
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

Napi::Value ViTModel::queue(Napi::Env env, const std::string& what, std::function<void()> run,
                            std::function<Napi::Value(Napi::Env)> done) {
  auto* worker = new PromiseWorker(env, what, std::move(run), std::move(done), [this] { release_busy(); }, Value());
  Napi::Promise p = worker->promise();
  busy_ = what;  // set last, so that a failed call never leaves the model busy
  try {
    worker->Queue();
  } catch (...) {
    busy_.clear();
    throw;
  }
  return p;
}

Napi::Value ViTModel::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "params");
  const auto& ps = m.params();
  Napi::Array arr = Napi::Array::New(env, ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ps[i].name);
    Napi::Array shape = Napi::Array::New(env, ps[i].shape.size());
    for (size_t j = 0; j < ps[i].shape.size(); ++j)
      shape.Set(static_cast<uint32_t>(j), Napi::Number::New(env, static_cast<double>(ps[i].shape[j])));
    o.Set("shape", shape);
    o.Set("numel", Napi::Number::New(env, static_cast<double>(ps[i].numel)));
    o.Set("trainable", ps[i].trainable);
    arr.Set(static_cast<uint32_t>(i), o);
  }
  return arr;
}

Napi::Value ViTModel::NumTrainable(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "numTrainable");
  return Napi::Number::New(info.Env(), static_cast<double>(m.num_trainable()));
}

Napi::Value ViTModel::GetConfig(const Napi::CallbackInfo& info) { return vit_config_to_js(info.Env(), cfg_); }

// readParam(name, slot) -> Float32Array
Napi::Value ViTModel::ReadParam(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "readParam");
  std::string name = require_string(info[0], "readParam: name");
  speed::Slot slot = slot_from_js(info[1], "readParam: slot");
  const speed::ParamInfo* p = find_param(m, name);
  if (!p) throw_error(env, "readParam: unknown parameter '" + name + "' (see params() for the names)");
  Napi::Float32Array out = Napi::Float32Array::New(env, p->numel);
  guard(env, "readParam('" + name + "')", [&] { m.read_param(name, slot, out.Data()); });
  return out;
}

// writeParam(name, slot, Float32Array)
Napi::Value ViTModel::WriteParam(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "writeParam");
  std::string name = require_string(info[0], "writeParam: name");
  speed::Slot slot = slot_from_js(info[1], "writeParam: slot");
  const speed::ParamInfo* p = find_param(m, name);
  if (!p) throw_error(env, "writeParam: unknown parameter '" + name + "' (see params() for the names)");
  size_t n = 0;
  const float* data = view_f32(info[2], "writeParam: data", &n);
  if (n != p->numel)
    throw_error(env, "writeParam: data for '" + name + "' has " + std::to_string(n) + " elements, expected " +
                         std::to_string(p->numel));
  guard(env, "writeParam('" + name + "')", [&] { m.write_param(name, slot, data); });
  return env.Undefined();
}

Napi::Value ViTModel::GetStep(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "getStep");
  return Napi::Number::New(info.Env(), static_cast<double>(m.step()));
}

Napi::Value ViTModel::SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setStep");
  m.set_step(require_int(info[0], "setStep: step", 0, kMaxSafe));
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
  Napi::Object h = require_object(info[2], w + ": hp");
  speed::OptimHyper hp;
  hp.lr = require_number(h, "lr", w + ": hp");
  hp.beta1 = require_number(h, "beta1", w + ": hp");
  hp.beta2 = require_number(h, "beta2", w + ": hp");
  hp.eps = require_number(h, "eps", w + ": hp");
  hp.weight_decay = require_number(h, "weightDecay", w + ": hp");
  hp.max_grad_norm = require_number(h, "maxGradNorm", w + ": hp");
  auto range = [&](const char* key, double v, bool ok, const char* expect) {
    if (!ok) throw_error(env, w + ": hp." + key + " = " + std::to_string(v) + ", expected " + expect);
  };
  range("lr", hp.lr, hp.lr >= 0, ">= 0");
  range("beta1", hp.beta1, hp.beta1 >= 0 && hp.beta1 < 1, "a value in [0, 1)");
  range("beta2", hp.beta2, hp.beta2 >= 0 && hp.beta2 < 1, "a value in [0, 1)");
  range("eps", hp.eps, hp.eps > 0, "> 0");
  range("weightDecay", hp.weight_decay, hp.weight_decay >= 0, ">= 0");

  auto result = std::make_shared<speed::ViTStepResult>();
  return queue(
      env, w, [&m, x, y, N, hp, result] { *result = m.train_step(x->data(), y->data(), N, hp); },
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
      });
}

// logits(x) -> Promise<Float32Array [N, numClasses]>
Napi::Value ViTModel::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "logits");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], "logits: x"));
  const int N = image_count(env, *x, "logits: x");
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.num_classes);
  return queue(
      env, "logits", [&m, x, N, out] { m.logits(x->data(), N, out->data()); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); });
}

// features(x) -> Promise<Float32Array [N, hiddenSize]>
Napi::Value ViTModel::Features(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "features");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], "features: x"));
  const int N = image_count(env, *x, "features: x");
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.hidden_size);
  return queue(
      env, "features", [&m, x, N, out] { m.features(x->data(), N, out->data()); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); });
}

Napi::Value ViTModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!busy_.empty()) throw_error(env, "dispose: feature network is busy with " + busy_ + "; await the previous call");
  model_.reset();
  return env.Undefined();
}

Napi::Value ViTModel::Busy(const Napi::CallbackInfo& info) {
  if (busy_.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), busy_);
}

}  // namespace speed_napi
