#include "convert.h"

#include <cmath>
#include <cstring>

#include "speed/cpu.h"
#include "speed/cuda.h"

namespace speed_napi {

void throw_error(Napi::Env env, const std::string& msg, bool type) {
  if (type) throw Napi::TypeError::New(env, msg);
  throw Napi::Error::New(env, msg);
}

static const char* typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

static std::string with_article(const std::string& noun);

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return with_article(typed_name(v.As<Napi::TypedArray>().TypedArrayType()));
  if (v.IsArray()) return "an Array";
  if (v.IsString()) return "a string";
  if (v.IsNumber()) return "the number " + v.ToString().Utf8Value();
  if (v.IsBoolean()) return "a boolean";
  if (v.IsFunction()) return "a function";
  if (v.IsBuffer() || v.IsArrayBuffer()) return "a buffer";
  if (v.IsObject()) return "an object";
  return "an unsupported value";
}

static std::string with_article(const std::string& noun) {
  return (noun[0] == 'I' || noun[0] == 'U' ? "an " : "a ") + noun;
}

Napi::TypedArray require_typed(const Napi::Value& v, napi_typedarray_type type,
                               const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw_error(v.Env(), what + " must be " + with_article(typed_name(type)) + ", got " + describe(v), true);
  return v.As<Napi::TypedArray>();
}

template <typename E>
static std::vector<E> copy_typed(const Napi::Value& v, napi_typedarray_type type,
                                 const std::string& what) {
  Napi::TypedArray a = require_typed(v, type, what);
  size_t n = a.ElementLength();
  std::vector<E> out(n);
  if (n) {
    const uint8_t* base = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    std::memcpy(out.data(), base, n * sizeof(E));
  }
  return out;
}

std::vector<float> copy_f32(const Napi::Value& v, const std::string& what) {
  return copy_typed<float>(v, napi_float32_array, what);
}
std::vector<int32_t> copy_i32(const Napi::Value& v, const std::string& what) {
  return copy_typed<int32_t>(v, napi_int32_array, what);
}
std::vector<double> copy_f64(const Napi::Value& v, const std::string& what) {
  return copy_typed<double>(v, napi_float64_array, what);
}

const float* view_f32(const Napi::Value& v, const std::string& what, size_t* n) {
  Napi::TypedArray a = require_typed(v, napi_float32_array, what);
  *n = a.ElementLength();
  if (*n == 0) return nullptr;
  return reinterpret_cast<const float*>(static_cast<const uint8_t*>(a.ArrayBuffer().Data()) +
                                        a.ByteOffset());
}

Napi::Float32Array make_f32(Napi::Env env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), data, n * sizeof(float));
  return a;
}

Napi::Object require_object(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray() || v.IsFunction())
    throw_error(v.Env(), what + " must be an object, got " + describe(v), true);
  return v.As<Napi::Object>();
}

double require_finite(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) throw_error(v.Env(), what + " must be a number, got " + describe(v), true);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw_error(v.Env(), what + " must be a finite number, got " + describe(v));
  return d;
}

double require_number(const Napi::Object& o, const char* key, const std::string& what) {
  return require_finite(o.Get(key), what + "." + key);
}

int64_t require_int(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  double d = require_finite(v, what);
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
    throw_error(v.Env(), what + " must be an integer, got " + describe(v));
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw_error(v.Env(), what + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                             "], got " + describe(v));
  return static_cast<int64_t>(d);
}

bool require_bool(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean())
    throw_error(o.Env(), what + "." + key + " must be a boolean, got " + describe(v), true);
  return v.As<Napi::Boolean>().Value();
}

std::string require_string(const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) throw_error(v.Env(), what + " must be a string, got " + describe(v), true);
  return v.As<Napi::String>().Utf8Value();
}

// ---- DiTConfig ----------------------------------------------------------------------

static const int64_t kIntMax = 2147483647;

// The core names DiTConfig fields in C++ (snake_case); JS callers know the
// ModelConfig keys, so messages use those.
static std::string camel_fields(std::string msg) {
  static const char* pairs[][2] = {
      {"DiTConfig.", ""},
      {"input_size", "inputSize"},   {"patch_size", "patchSize"},
      {"in_channels", "inChannels"}, {"hidden_size", "hiddenSize"},
      {"num_heads", "numHeads"},     {"mlp_ratio", "mlpRatio"},
      {"num_classes", "numClasses"}, {"class_dropout_prob", "classDropoutProb"},
      {"learn_sigma", "learnSigma"},
  };
  for (const auto& p : pairs) {
    const std::string from = p[0], to = p[1];
    for (size_t at = msg.find(from); at != std::string::npos; at = msg.find(from, at + to.size()))
      msg.replace(at, from.size(), to);
  }
  return msg;
}

static speed::DiTConfig config_read(const Napi::Object& o, speed::DiTConfig c, bool all,
                                    const std::string& what) {
  auto has = [&](const char* k) { return all || !o.Get(k).IsUndefined(); };
  auto i = [&](const char* k, int lo) {
    return static_cast<int>(require_int(o.Get(k), what + "." + k, lo, kIntMax));
  };
  if (has("inputSize")) c.input_size = i("inputSize", 1);
  if (has("patchSize")) c.patch_size = i("patchSize", 1);
  if (has("inChannels")) c.in_channels = i("inChannels", 1);
  if (has("hiddenSize")) c.hidden_size = i("hiddenSize", 1);
  if (has("depth")) c.depth = i("depth", 1);
  if (has("numHeads")) c.num_heads = i("numHeads", 1);
  if (has("mlpRatio")) {
    c.mlp_ratio = require_number(o, "mlpRatio", what);
    if (!(c.mlp_ratio > 0))
      throw_error(o.Env(), what + ".mlpRatio must be > 0, got " + std::to_string(c.mlp_ratio));
  }
  if (has("numClasses")) c.num_classes = i("numClasses", 0);
  if (has("classDropoutProb")) {
    c.class_dropout_prob = require_number(o, "classDropoutProb", what);
    if (c.class_dropout_prob < 0 || c.class_dropout_prob >= 1)
      throw_error(o.Env(), what + ".classDropoutProb must be in [0, 1), got " +
                               std::to_string(c.class_dropout_prob));
  }
  if (has("learnSigma")) c.learn_sigma = require_bool(o, "learnSigma", what);
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw_error(o.Env(), what + ": " + camel_fields(e.what()));
  }
  return c;
}

speed::DiTConfig config_from_js(const Napi::Value& v, const std::string& what) {
  return config_read(require_object(v, what), speed::DiTConfig(), true, what);
}

speed::DiTConfig config_merge_js(const Napi::Value& v, speed::DiTConfig base,
                                 const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return base;
  return config_read(require_object(v, what), base, false, what);
}

// The keys DiTConfig and ViTConfig share, in ModelConfig order.
template <typename Config>
static Napi::Object transformer_to_js(Napi::Env env, const Config& c) {
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

Napi::Object config_to_js(Napi::Env env, const speed::DiTConfig& c) {
  Napi::Object o = transformer_to_js(env, c);
  o.Set("classDropoutProb", c.class_dropout_prob);
  o.Set("learnSigma", c.learn_sigma);
  return o;
}

// ---- ViTConfig ----------------------------------------------------------------------

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

Napi::Object vit_config_to_js(Napi::Env env, const speed::ViTConfig& c) { return transformer_to_js(env, c); }

std::vector<int> require_int_list(const Napi::Value& v, const std::string& what, size_t max_len, int64_t lo,
                                  int64_t hi) {
  if (!v.IsArray()) throw_error(v.Env(), what + " must be an array of integers, got " + describe(v), true);
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() < 1 || a.Length() > max_len)
    throw_error(v.Env(), what + " must have 1 to " + std::to_string(max_len) + " entries, got " +
                             std::to_string(a.Length()));
  std::vector<int> out;
  for (uint32_t i = 0; i < a.Length(); ++i)
    out.push_back(static_cast<int>(require_int(a.Get(i), what + "[" + std::to_string(i) + "]", lo, hi)));
  return out;
}

// ---- CNNConfig ----------------------------------------------------------------------

speed::CNNConfig cnn_config_from_js(const Napi::Value& v, const std::string& what) {
  Napi::Object o = require_object(v, what);
  speed::CNNConfig c;
  auto i = [&](const char* key, int lo) {
    return static_cast<int>(require_int(o.Get(key), what + "." + key, lo, 1 << 20));
  };
  c.input_size = i("inputSize", 1);
  c.in_channels = i("inChannels", 1);
  c.channels = require_int_list(o.Get("channels"), what + ".channels", 8, 1, 4096);
  c.fc_hidden = i("fcHidden", 1);
  c.num_classes = i("numClasses", 2);
  guard(v.Env(), what, [&] { c.validate(); });
  return c;
}

Napi::Object cnn_config_to_js(Napi::Env env, const speed::CNNConfig& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("inputSize", c.input_size);
  o.Set("inChannels", c.in_channels);
  Napi::Array ch = Napi::Array::New(env, c.channels.size());
  for (size_t k = 0; k < c.channels.size(); ++k) ch.Set(static_cast<uint32_t>(k), c.channels[k]);
  o.Set("channels", ch);
  o.Set("fcHidden", c.fc_hidden);
  o.Set("numClasses", c.num_classes);
  return o;
}

// ---- the rest -----------------------------------------------------------------------

speed::Slot slot_from_js(const Napi::Value& v, const std::string& what) {
  std::string s = v.IsUndefined() ? "model" : require_string(v, what);
  if (s == "model") return speed::Slot::Model;
  if (s == "ema") return speed::Slot::EMA;
  if (s == "adam_m") return speed::Slot::AdamM;
  if (s == "adam_v") return speed::Slot::AdamV;
  if (s == "grad") return speed::Slot::Grad;
  throw_error(v.Env(), what + " must be one of 'model', 'ema', 'adam_m', 'adam_v', 'grad', got '" +
                           s + "'");
}

const char* slot_name(speed::Slot s) {
  switch (s) {
    case speed::Slot::Model: return "model";
    case speed::Slot::EMA: return "ema";
    case speed::Slot::AdamM: return "adam_m";
    case speed::Slot::AdamV: return "adam_v";
    case speed::Slot::Grad: return "grad";
  }
  return "?";
}

speed::SampleStepCoefs coefs_from_js(const Napi::Value& v, const std::string& what) {
  Napi::Object o = require_object(v, what);
  speed::SampleStepCoefs c;
  std::string mode = require_string(o.Get("mode"), what + ".mode");
  if (mode == "ddpm") c.mode = speed::SampleStepCoefs::DDPM;
  else if (mode == "ddim") c.mode = speed::SampleStepCoefs::DDIM;
  else throw_error(o.Env(), what + ".mode must be 'ddpm' or 'ddim', got '" + mode + "'");
  c.sqrt_recip_abar = require_number(o, "sqrtRecipAbar", what);
  c.sqrt_recipm1_abar = require_number(o, "sqrtRecipm1Abar", what);
  c.coef1 = require_number(o, "coef1", what);
  c.coef2 = require_number(o, "coef2", what);
  c.log_beta = require_number(o, "logBeta", what);
  c.post_log_var = require_number(o, "postLogVar", what);
  c.sqrt_abar_prev = require_number(o, "sqrtAbarPrev", what);
  c.eps_coef = require_number(o, "epsCoef", what);
  c.sigma = require_number(o, "sigma", what);
  c.add_noise = require_bool(o, "addNoise", what);
  c.clip_x0 = require_bool(o, "clipX0", what);
  c.cfg = require_bool(o, "cfg", what);
  c.guidance = require_number(o, "guidance", what);
  // optional: absent or 0 guides every eps channel
  Napi::Value gc = o.Get("guidanceChannels");
  if (!gc.IsUndefined()) c.guidance_channels = static_cast<int>(require_int(gc, what + ".guidanceChannels", 0, 1 << 16));
  return c;
}

speed::TrainHyper hyper_from_js(const Napi::Value& v, const std::string& what, bool diffusion) {
  Napi::Object h = require_object(v, what);
  speed::TrainHyper hp;
  speed::OptimHyper& o = hp.optim;
  o.lr = require_number(h, "lr", what);
  o.beta1 = require_number(h, "beta1", what);
  o.beta2 = require_number(h, "beta2", what);
  o.eps = require_number(h, "eps", what);
  o.weight_decay = require_number(h, "weightDecay", what);
  o.max_grad_norm = require_number(h, "maxGradNorm", what);
  if (diffusion) {
    o.ema_decay = require_number(h, "emaDecay", what);
    hp.vb_scale = require_number(h, "vbScale", what);
  }
  auto range = [&](const char* key, double x, bool ok, const char* expect) {
    if (!ok) throw_error(h.Env(), what + "." + key + " = " + std::to_string(x) + ", expected " + expect);
  };
  range("lr", o.lr, o.lr >= 0, ">= 0");
  range("beta1", o.beta1, o.beta1 >= 0 && o.beta1 < 1, "a value in [0, 1)");
  range("beta2", o.beta2, o.beta2 >= 0 && o.beta2 < 1, "a value in [0, 1)");
  range("eps", o.eps, o.eps > 0, "> 0");
  range("weightDecay", o.weight_decay, o.weight_decay >= 0, ">= 0");
  if (diffusion) {
    range("emaDecay", o.ema_decay, o.ema_decay <= 1, "<= 1 (< 0: no EMA)");
    range("vbScale", hp.vb_scale, hp.vb_scale >= 0, ">= 0");
    // data parallelism: optional, this call's slice of a global batch
    Napi::Value so = h.Get("shardOffset"), gb = h.Get("globalBatch");
    if (!so.IsUndefined()) hp.shard_offset = static_cast<int>(require_int(so, what + ".shardOffset", 0, 1000000));
    if (!gb.IsUndefined()) hp.global_batch = static_cast<int>(require_int(gb, what + ".globalBatch", 0, 1000000));
  }
  return hp;
}

std::string device_from_js(const Napi::Object& options, const std::string& what) {
  Napi::Value dev = options.Get("device");
  std::string device = dev.IsUndefined() ? "cpu" : require_string(dev, what + ": device");
  if (device != "cpu" && device != "cuda")
    throw_error(options.Env(), what + ": device must be 'cpu' or 'cuda', got '" + device + "'");
  return device;
}

std::shared_ptr<speed::Backend<float>> backend_from_js(Napi::Env env, const Napi::Object& o,
                                                       const std::string& device,
                                                       const std::string& w, const char* default_math) {
  if (device == "cpu") {
    Napi::Value th = o.Get("threads");
    int threads = th.IsUndefined() ? 0 : static_cast<int>(require_int(th, w + ": threads", 0, 4096));
    return speed::make_cpu_backend<float>(threads);
  }
  std::string why;
  if (!speed::cuda_available(&why)) throw_error(env, w + ": device 'cuda' is not available: " + why);
  speed::CudaOptions co;
  Napi::Value cd = o.Get("cudaDevice");
  co.device = cd.IsUndefined() ? 0 : static_cast<int>(require_int(cd, w + ": cudaDevice", 0, 1024));
  Napi::Value cm = o.Get("cudaMath");
  std::string math = cm.IsUndefined() ? default_math : require_string(cm, w + ": cudaMath");
  if (math == "bf16") co.math = speed::CudaMath::BF16;
  else if (math == "tf32") co.math = speed::CudaMath::TF32;
  else if (math == "fp32") co.math = speed::CudaMath::FP32;
  else throw_error(env, w + ": cudaMath must be 'bf16', 'tf32' or 'fp32', got '" + math + "'");
  return speed::make_cuda_backend(co);
}

Napi::Array params_to_js(Napi::Env env, const std::vector<speed::ParamInfo>& ps) {
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

const speed::ParamInfo* find_param(const std::vector<speed::ParamInfo>& ps, const std::string& name) {
  for (const auto& p : ps)
    if (p.name == name) return &p;
  return nullptr;
}

std::string param_label(const char* call, const std::string& name, speed::Slot slot, bool label_slot) {
  return std::string(call) + "('" + name + "'" + (label_slot ? std::string(", '") + slot_name(slot) + "'" : "") +
         ")";
}

}  // namespace speed_napi
