// Conversions between JavaScript values and the core's C++ types, with the
// argument checks of the addon's own API. Every failed check throws a
// Napi::Error whose message names the call and the argument ("trainStep:
// batch.x0 ...") and says what was expected. Only files under native/src/napi
// include napi.h.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "guard.h"
#include "speed/backend.h"
#include "speed/dit.h"
#include "speed/cnn.h"
#include "speed/vit.h"

namespace speed_napi {

constexpr int64_t kMaxSafeInt = 9007199254740991LL;  // Number.MAX_SAFE_INTEGER

// Throws a JS Error with `msg` (a TypeError when `type` is true).
[[noreturn]] void throw_error(Napi::Env env, const std::string& msg, bool type = false);

// A JS value's kind for messages: "a Float64Array", "undefined", "a string", ...
std::string describe(const Napi::Value& v);

// ---- typed arrays --------------------------------------------------------------
// The view of a TypedArray of the required kind; `what` names it in messages.
Napi::TypedArray require_typed(const Napi::Value& v, napi_typedarray_type type,
                               const std::string& what);
std::vector<float> copy_f32(const Napi::Value& v, const std::string& what);
std::vector<int32_t> copy_i32(const Napi::Value& v, const std::string& what);
std::vector<double> copy_f64(const Napi::Value& v, const std::string& what);
// Pointer + length of a Float32Array without a copy (for sync calls only).
const float* view_f32(const Napi::Value& v, const std::string& what, size_t* n);
Napi::Float32Array make_f32(Napi::Env env, const float* data, size_t n);

// ---- plain values ----------------------------------------------------------------
Napi::Object require_object(const Napi::Value& v, const std::string& what);
double require_number(const Napi::Object& o, const char* key, const std::string& what);
double require_finite(const Napi::Value& v, const std::string& what);
// A safe integer in [lo, hi].
int64_t require_int(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi);
bool require_bool(const Napi::Object& o, const char* key, const std::string& what);
std::string require_string(const Napi::Value& v, const std::string& what);

// ---- core types ----------------------------------------------------------------
// ModelConfig (camelCase keys, all required) <-> speed::DiTConfig; also runs
// DiTConfig::validate().
speed::DiTConfig config_from_js(const Napi::Value& v, const std::string& what);
// Like config_from_js, but only the keys present override `base` (presets).
speed::DiTConfig config_merge_js(const Napi::Value& v, speed::DiTConfig base,
                                 const std::string& what);
Napi::Object config_to_js(Napi::Env env, const speed::DiTConfig& c);

// ViTConfig from { inputSize, patchSize, inChannels, hiddenSize, depth, numHeads,
// mlpRatio, numClasses } (all required); also runs ViTConfig::validate().
speed::ViTConfig vit_config_from_js(const Napi::Value& v, const std::string& what);
Napi::Object vit_config_to_js(Napi::Env env, const speed::ViTConfig& c);

// An array of 1 to max_len safe integers in [lo, hi] (stage widths); `what` names it.
std::vector<int> require_int_list(const Napi::Value& v, const std::string& what, size_t max_len, int64_t lo,
                                  int64_t hi);

// CNNConfig from { inputSize, inChannels, channels (array of ints), fcHidden,
// numClasses } (all required); also runs CNNConfig::validate().
speed::CNNConfig cnn_config_from_js(const Napi::Value& v, const std::string& what);
Napi::Object cnn_config_to_js(Napi::Env env, const speed::CNNConfig& c);

speed::Slot slot_from_js(const Napi::Value& v, const std::string& what);
const char* slot_name(speed::Slot s);  // "model", "ema", ...
speed::SampleStepCoefs coefs_from_js(const Napi::Value& v, const std::string& what);

// trainStep's hp { lr, beta1, beta2, eps, weightDecay, maxGradNorm }, plus
// { emaDecay, vbScale } when `diffusion` (the DiT); all read, then range-checked.
speed::TrainHyper hyper_from_js(const Napi::Value& v, const std::string& what, bool diffusion);

// ---- model construction ------------------------------------------------------------
// options.device: 'cpu' (when undefined) or 'cuda'.
std::string device_from_js(const Napi::Object& options, const std::string& what);
// The float32 backend for `device`, from options { threads, cudaDevice, cudaMath };
// cudaMath, when undefined, is `default_math` ('bf16', 'tf32' or 'fp32').
std::shared_ptr<speed::Backend<float>> backend_from_js(Napi::Env env, const Napi::Object& options,
                                                       const std::string& device,
                                                       const std::string& what,
                                                       const char* default_math = "bf16");

// ---- parameters (DiT and the classifiers alike) ------------------------------------------------
// params() -> [{ name, shape, numel, trainable }]
Napi::Array params_to_js(Napi::Env env, const std::vector<speed::ParamInfo>& ps);
const speed::ParamInfo* find_param(const std::vector<speed::ParamInfo>& ps, const std::string& name);

// readParam(name, slot) -> Float32Array and writeParam(name, slot, Float32Array)
// on a model with params(), read_param() and write_param(). A core error is
// labelled "readParam('<name>')", with ", '<slot>'" too when `label_slot`.
std::string param_label(const char* call, const std::string& name, speed::Slot slot, bool label_slot);

template <typename M>
Napi::Value read_param_js(const Napi::CallbackInfo& info, M& m, bool label_slot) {
  Napi::Env env = info.Env();
  std::string name = require_string(info[0], "readParam: name");
  speed::Slot slot = slot_from_js(info[1], "readParam: slot");
  const speed::ParamInfo* p = find_param(m.params(), name);
  if (!p) throw_error(env, "readParam: unknown parameter '" + name + "' (see params() for the names)");
  Napi::Float32Array out = Napi::Float32Array::New(env, p->numel);
  guard(env, param_label("readParam", name, slot, label_slot), [&] { m.read_param(name, slot, out.Data()); });
  return out;
}

template <typename M>
Napi::Value write_param_js(const Napi::CallbackInfo& info, M& m, bool label_slot) {
  Napi::Env env = info.Env();
  std::string name = require_string(info[0], "writeParam: name");
  speed::Slot slot = slot_from_js(info[1], "writeParam: slot");
  const speed::ParamInfo* p = find_param(m.params(), name);
  if (!p) throw_error(env, "writeParam: unknown parameter '" + name + "' (see params() for the names)");
  size_t n = 0;
  const float* data = view_f32(info[2], "writeParam: data", &n);
  if (n != p->numel)
    throw_error(env, "writeParam: data for '" + name + "' has " + std::to_string(n) + " elements, expected " +
                         std::to_string(p->numel));
  guard(env, param_label("writeParam", name, slot, label_slot), [&] { m.write_param(name, slot, data); });
  return env.Undefined();
}

// writeParam(name, Float32Array) on a model without slots (the VAE, Inception-v3),
// whose write_param(name, data) takes only the name; `what` names the network.
template <typename M>
Napi::Value write_plain_param_js(const Napi::CallbackInfo& info, M& m, const char* what) {
  Napi::Env env = info.Env();
  const std::string name = require_string(info[0], "writeParam: name");
  const speed::ParamInfo* p = find_param(m.params(), name);
  if (!p) throw_error(env, std::string("writeParam: unknown ") + what + " parameter '" + name + "' (see params() for the names)");
  size_t n = 0;
  const float* data = view_f32(info[1], "writeParam: data", &n);
  if (n != p->numel)
    throw_error(env, "writeParam: data for '" + name + "' has " + std::to_string(n) + " elements, expected " +
                         std::to_string(p->numel));
  guard(env, "writeParam('" + name + "')", [&] { m.write_param(name, data); });
  return env.Undefined();
}

}  // namespace speed_napi
