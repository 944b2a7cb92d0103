#include "model.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "convert.h"
#include "parallel.h"
#include "guard.h"
#include "speed/philox.h"
#include "worker.h"

namespace speed_napi {

namespace {

std::atomic<int64_t> g_live_models{0};

// "N*C*H*W = 8*4*32*32 = 32768"
std::string dims_text(const char* names, std::initializer_list<size_t> dims) {
  std::string prod, out = std::string(names) + " = ";
  size_t total = 1;
  for (size_t d : dims) {
    prod += (prod.empty() ? "" : "*") + std::to_string(d);
    total *= d;
  }
  return out + prod + " = " + std::to_string(total);
}

size_t product(std::initializer_list<size_t> dims) {
  size_t p = 1;
  for (size_t d : dims) p *= d;
  return p;
}

void check_length(Napi::Env env, const std::string& what, size_t got, const char* names,
                  std::initializer_list<size_t> dims) {
  if (got != product(dims))
    throw_error(env, what + " has " + std::to_string(got) + " elements, expected " +
                         dims_text(names, dims));
}

}  // namespace

Napi::Function Model::Init(Napi::Env env) {
  return DefineClass(
      env, "Model",
      {
          InstanceMethod<&Model::Params>("params"),
          InstanceMethod<&Model::NumTrainable>("numTrainable"),
          InstanceMethod<&Model::GetConfig>("config"),
          InstanceMethod<&Model::ReadParam>("readParam"),
          InstanceMethod<&Model::WriteParam>("writeParam"),
          InstanceMethod<&Model::SetTables>("setTables"),
          InstanceMethod<&Model::GetNoiseState>("getNoiseState"),
          InstanceMethod<&Model::SetNoiseState>("setNoiseState"),
          InstanceMethod<&Model::GetStep>("getStep"),
          InstanceMethod<&Model::SetStep>("setStep"),
          InstanceMethod<&Model::TrainStep>("trainStep"),
          InstanceMethod<&Model::Forward>("forward"),
          InstanceMethod<&Model::SampleStep>("sampleStep"),
          InstanceMethod<&Model::DrawNoise>("drawNoise"),
          InstanceMethod<&Model::Dispose>("dispose"),
          InstanceMethod<&Model::Busy>("busy"),
          InstanceMethod<&Model::Steps>("steps"),
          InstanceMethod<&Model::ActivationBytes>("activationBytes"),
          InstanceMethod<&Model::SetCollective>("setCollective"),
          InstanceMethod<&Model::BroadcastState>("broadcastState"),
      });
}

// new Model(config, { device, threads, cudaDevice, cudaMath, seed, noiseSeed, recompute })
Model::Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
  Napi::Env env = info.Env();
  const std::string w = "DiTModel.create";
  cfg_ = config_from_js(info[0], w + ": config");
  Napi::Object o = require_object(info[1], w + ": options");
  device_ = device_from_js(o, w);
  uint64_t seed = static_cast<uint64_t>(require_int(o.Get("seed"), w + ": seed", 0, kMaxSafeInt));
  Napi::Value ns = o.Get("noiseSeed");
  uint64_t noise_seed = ns.IsUndefined() ? seed
      : static_cast<uint64_t>(require_int(ns, w + ": noiseSeed", 0, kMaxSafeInt));
  const bool recompute = o.Get("recompute").IsUndefined() ? false : require_bool(o, "recompute", w + ": options");

  guard(env, w, [&] {
    auto model = std::make_unique<speed::DiT<float>>(cfg_, backend_from_js(env, o, device_, w));
    model->init(seed);
    model->set_noise_state(noise_seed, 0);
    model->set_recompute(recompute);
    model_ = std::move(model);
    ++g_live_models;
  });
}

int64_t Model::live_count() { return g_live_models.load(); }

void Model::free_model() {
  if (!model_) return;
  model_.reset();
  --g_live_models;
}

// The GC finalizer: frees native memory when the JS object dies undisposed.
// A running worker holds a reference to the object, so this never races it.
Model::~Model() { free_model(); }

speed::DiT<float>& Model::usable(Napi::Env env, const char* what) {
  if (!model_)
    throw_error(env, std::string(what) + ": the model has been disposed; create a new DiTModel");
  require_idle(env, what, busy_, "model");
  return *model_;
}

void Model::check_labels(Napi::Env env, const std::vector<int32_t>& y, int N,
                         const std::string& what) const {
  if (cfg_.num_classes == 0) {
    if (!y.empty() && y.size() != static_cast<size_t>(N))
      throw_error(env, what + " has " + std::to_string(y.size()) + " elements, expected N = " +
                           std::to_string(N) + " (or 0: the model is unconditional)");
    return;
  }
  if (y.size() != static_cast<size_t>(N))
    throw_error(env, what + " has " + std::to_string(y.size()) + " elements, expected N = " +
                         std::to_string(N));
  const int hi = cfg_.class_dropout_prob > 0 ? cfg_.num_classes : cfg_.num_classes - 1;
  for (size_t i = 0; i < y.size(); ++i)
    if (y[i] < 0 || y[i] > hi)
      throw_error(env, what + "[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
                           " is out of range: expected a label in [0, " + std::to_string(hi) + "]" +
                           (cfg_.class_dropout_prob > 0
                                ? " (" + std::to_string(cfg_.num_classes) + " = the null label)"
                                : " (no null label: classDropoutProb is 0)"));
}

void Model::check_times(Napi::Env env, const std::vector<int32_t>& t, const std::string& what,
                        bool need_tables) const {
  if (need_tables && steps_ == 0)
    throw_error(env, what + ": no diffusion tables; call setTables first");
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] < 0 || (steps_ > 0 && t[i] >= steps_))
      throw_error(env, what + "[" + std::to_string(i) + "] = " + std::to_string(t[i]) +
                           " is out of range: expected a time step in [0, " +
                           (steps_ > 0 ? std::to_string(steps_) + ")" : "T)"));
}

Napi::Value Model::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return params_to_js(env, usable(env, "params").params());
}

Napi::Value Model::NumTrainable(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "numTrainable");
  return Napi::Number::New(info.Env(), static_cast<double>(m.num_trainable()));
}

Napi::Value Model::GetConfig(const Napi::CallbackInfo& info) {
  return config_to_js(info.Env(), cfg_);
}

// readParam(name, slot) -> Float32Array
Napi::Value Model::ReadParam(const Napi::CallbackInfo& info) {
  return read_param_js(info, usable(info.Env(), "readParam"), true);
}

// writeParam(name, slot, Float32Array)
Napi::Value Model::WriteParam(const Napi::CallbackInfo& info) {
  return write_param_js(info, usable(info.Env(), "writeParam"), true);
}

// setTables({ sqrtAbar, sqrt1mAbar, ... }: Float64Array)
Napi::Value Model::SetTables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setTables");
  Napi::Object o = require_object(info[0], "setTables: tables");
  speed::DiffusionTables tab;
  struct Key { const char* name; std::vector<double>* dst; };
  const Key keys[] = {{"sqrtAbar", &tab.sqrt_abar},       {"sqrt1mAbar", &tab.sqrt_1m_abar},
                      {"sqrtRecipAbar", &tab.sqrt_recip_abar},
                      {"sqrtRecipm1Abar", &tab.sqrt_recipm1_abar},
                      {"coef1", &tab.coef1},              {"coef2", &tab.coef2},
                      {"logBeta", &tab.log_beta},         {"postLogVar", &tab.post_log_var}};
  for (const Key& k : keys) {
    *k.dst = copy_f64(o.Get(k.name), std::string("setTables: tables.") + k.name);
    if (k.dst->empty()) throw_error(env, std::string("setTables: tables.") + k.name + " is empty, expected T >= 1 values");
    if (k.dst->size() > 2147483647u) throw_error(env, std::string("setTables: tables.") + k.name + " is too long");
    if (k.dst->size() != tab.sqrt_abar.size())
      throw_error(env, std::string("setTables: tables.") + k.name + " has " +
                           std::to_string(k.dst->size()) + " values, expected T = " +
                           std::to_string(tab.sqrt_abar.size()) + " (the length of tables.sqrtAbar)");
    for (size_t i = 0; i < k.dst->size(); ++i)
      if (!std::isfinite((*k.dst)[i]))
        throw_error(env, std::string("setTables: tables.") + k.name + "[" + std::to_string(i) +
                             "] is not finite, expected finite values");
  }
  guard(env, "setTables", [&] { m.set_tables(tab); });
  steps_ = tab.steps();
  return env.Undefined();
}

Napi::Value Model::GetNoiseState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "getNoiseState");
  if (static_cast<double>(m.noise_offset()) > kMaxSafeInt || static_cast<double>(m.noise_seed()) > kMaxSafeInt)
    throw_error(env, "getNoiseState: the noise state no longer fits a JS safe integer");
  Napi::Object o = Napi::Object::New(env);
  o.Set("seed", Napi::Number::New(env, static_cast<double>(m.noise_seed())));
  o.Set("offset", Napi::Number::New(env, static_cast<double>(m.noise_offset())));
  return o;
}

// setNoiseState(seed, offset)
Napi::Value Model::SetNoiseState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setNoiseState");
  int64_t seed = require_int(info[0], "setNoiseState: seed", 0, kMaxSafeInt);
  int64_t offset = require_int(info[1], "setNoiseState: offset", 0, kMaxSafeInt);
  m.set_noise_state(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  return env.Undefined();
}

Napi::Value Model::GetStep(const Napi::CallbackInfo& info) {
  auto& m = usable(info.Env(), "getStep");
  return Napi::Number::New(info.Env(), static_cast<double>(m.step()));
}

Napi::Value Model::SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setStep");
  m.set_step(require_int(info[0], "setStep: step", 0, kMaxSafeInt));
  return env.Undefined();
}

// trainStep(x0, t, y, weight, hp) -> Promise<{loss, mse, vb, gradNorm, skipped, step}>
Napi::Value Model::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "trainStep";
  auto& m = usable(env, "trainStep");
  // Copies: JS may mutate its arrays while the worker runs.
  auto x0 = std::make_shared<std::vector<float>>(copy_f32(info[0], w + ": batch.x0"));
  auto t = std::make_shared<std::vector<int32_t>>(copy_i32(info[1], w + ": batch.t"));
  auto y = std::make_shared<std::vector<int32_t>>(copy_i32(info[2], w + ": batch.y"));
  auto weight = std::make_shared<std::vector<float>>(copy_f32(info[3], w + ": batch.weight"));
  const int N = static_cast<int>(t->size());
  if (t->empty() || t->size() > 1000000)
    throw_error(env, w + ": batch.t has " + std::to_string(t->size()) + " elements, expected N >= 1 time steps");
  const size_t C = cfg_.in_channels, H = cfg_.input_size;
  check_length(env, w + ": batch.x0", x0->size(), "N*C*H*W", {size_t(N), C, H, H});
  check_labels(env, *y, N, w + ": batch.y");
  check_length(env, w + ": batch.weight", weight->size(), "N", {size_t(N)});
  for (size_t i = 0; i < weight->size(); ++i)
    if (!std::isfinite((*weight)[i]))
      throw_error(env, w + ": batch.weight[" + std::to_string(i) + "] is not finite, expected finite weights");
  check_times(env, *t, w + ": batch.t", true);
  if (y->empty()) y->assign(N, 0);  // unconditional: labels are ignored

  const speed::TrainHyper hp = hyper_from_js(info[4], w + ": hp", true);

  auto result = std::make_shared<speed::TrainResult>();
  return queue_long_call(
      env, w, busy_,
      [&m, x0, t, y, weight, hp, N, result] {
        *result = m.train_step(x0->data(), t->data(), y->data(), weight->data(), N, hp);
      },
      [result](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("loss", make_f32(e, result->loss.data(), result->loss.size()));
        o.Set("mse", make_f32(e, result->mse.data(), result->mse.size()));
        o.Set("vb", make_f32(e, result->vb.data(), result->vb.size()));
        o.Set("gradNorm", Napi::Number::New(e, result->grad_norm));
        o.Set("skipped", Napi::Boolean::New(e, result->skipped));
        o.Set("step", Napi::Number::New(e, static_cast<double>(result->step)));
        return o;
      },
      Value());
}

// forward(x, t, y, useEma) -> Promise<Float32Array [N, Cout, H, W]>
Napi::Value Model::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "forward";
  auto& m = usable(env, "forward");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], w + ": x"));
  auto t = std::make_shared<std::vector<int32_t>>(copy_i32(info[1], w + ": t"));
  auto y = std::make_shared<std::vector<int32_t>>(copy_i32(info[2], w + ": y"));
  bool use_ema = info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  const int N = static_cast<int>(t->size());
  if (t->empty() || t->size() > 1000000)
    throw_error(env, w + ": t has " + std::to_string(t->size()) + " elements, expected N >= 1 time steps");
  const size_t C = cfg_.in_channels, H = cfg_.input_size;
  check_length(env, w + ": x", x->size(), "N*C*H*W", {size_t(N), C, H, H});
  check_labels(env, *y, N, w + ": y");
  check_times(env, *t, w + ": t", false);
  if (y->empty()) y->assign(N, 0);
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.out_channels() * H * H);

  return queue_long_call(
      env, w, busy_, [&m, x, t, y, N, out, use_ema] { m.forward(x->data(), t->data(), y->data(), N, out->data(), use_ema); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, Value());
}

// sampleStep(x, t, y, coefs, useEma) -> Promise<Float32Array> (x is not modified)
Napi::Value Model::SampleStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "sampleStep";
  auto& m = usable(env, "sampleStep");
  auto x = std::make_shared<std::vector<float>>(copy_f32(info[0], w + ": x"));
  if (steps_ == 0) throw_error(env, w + ": no diffusion tables; call setTables first");
  int t = static_cast<int>(require_int(info[1], w + ": t", 0, steps_ - 1));
  auto y = std::make_shared<std::vector<int32_t>>(copy_i32(info[2], w + ": y"));
  speed::SampleStepCoefs coefs = coefs_from_js(info[3], w + ": coefs");
  bool use_ema = info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
  const size_t C = cfg_.in_channels, H = cfg_.input_size, per = C * H * H;
  if (x->empty() || x->size() % per != 0)
    throw_error(env, w + ": x has " + std::to_string(x->size()) +
                         " elements, expected a positive multiple of C*H*W = " + std::to_string(C) +
                         "*" + std::to_string(H) + "*" + std::to_string(H) + " = " + std::to_string(per));
  const int N = static_cast<int>(x->size() / per);
  check_labels(env, *y, N, w + ": y");
  if (coefs.cfg && (cfg_.num_classes == 0 || cfg_.class_dropout_prob <= 0))
    throw_error(env, w + ": coefs.cfg needs a class-conditional model with a null label "
                         "(numClasses > 0 and classDropoutProb > 0)");
  if (y->empty()) y->assign(N, 0);

  return queue_long_call(
      env, w, busy_, [&m, x, t, y, N, coefs, use_ema] { m.sample_step(x->data(), t, y->data(), N, coefs, use_ema); },
      [x](Napi::Env e) -> Napi::Value { return make_f32(e, x->data(), x->size()); }, Value());
}

// drawNoise(n) -> Float32Array of n normals from the model's stream (advances it)
Napi::Value Model::DrawNoise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "drawNoise");
  int64_t n = require_int(info[0], "drawNoise: n", 0, int64_t(1) << 32);
  Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(n));
  if (n == 0) return out;
  guard(env, "drawNoise", [&] {
    speed::Backend<float>& be = m.backend();
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    void* buf = be.alloc_bytes(bytes);
    try {
      be.normal(static_cast<float*>(buf), static_cast<size_t>(n), m.noise_seed(), m.noise_offset());
      be.to_host(out.Data(), buf, bytes);
    } catch (...) {
      be.free_bytes(buf);
      throw;
    }
    be.free_bytes(buf);
    m.set_noise_state(m.noise_seed(), m.noise_offset() + speed::philox_blocks(static_cast<uint64_t>(n)));
  });
  return out;
}

Napi::Value Model::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env, "dispose", busy_, "model");
  free_model();
  return env.Undefined();
}

Napi::Value Model::Busy(const Napi::CallbackInfo& info) { return busy_to_js(info.Env(), busy_); }

Napi::Value Model::Steps(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), steps_);
}

// activationBytes(N, training) -> bytes of activation memory a call at batch N takes
Napi::Value Model::ActivationBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "activationBytes");
  const int N = static_cast<int>(require_int(info[0], "activationBytes: N", 1, 1 << 24));
  if (!info[1].IsBoolean())
    throw_error(env, "activationBytes: training must be a boolean, got " + describe(info[1]), true);
  size_t bytes = 0;
  guard(env, "activationBytes", [&] { bytes = m.activation_bytes(N, info[1].As<Napi::Boolean>().Value()); });
  return Napi::Number::New(env, static_cast<double>(bytes));
}

// setCollective("mpi" | "nccl" | null, cudaDevice): data-parallel gradient
// averaging in trainStep (data parallelism); null detaches.
Napi::Value Model::SetCollective(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "setCollective");
  if (info[0].IsNull() || info[0].IsUndefined()) {
    m.set_collective(nullptr);
    return env.Undefined();
  }
  const std::string kind = require_string(info[0], "setCollective: kind");
  const int dev = info[1].IsUndefined() ? 0 : static_cast<int>(require_int(info[1], "setCollective: cudaDevice", 0, 1024));
  guard(env, "setCollective", [&] { m.set_collective(collective_for(kind, dev)); });
  return env.Undefined();
}

// broadcastState(root): weights, EMA, moments, step and noise state from root.
Napi::Value Model::BroadcastState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "broadcastState");
  const int root = static_cast<int>(require_int(info[0], "broadcastState: root", 0, 1 << 20));
  guard(env, "broadcastState", [&] { m.broadcast_state(root); });
  return env.Undefined();
}

}  // namespace speed_napi
