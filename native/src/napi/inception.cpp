#include "inception.h"

#include <cstring>

#include "convert.h"
#include "guard.h"
#include "worker.h"

namespace speed_napi {

namespace {
constexpr int64_t kMaxImages = 1 << 20;
constexpr int64_t kMaxSide = 16384;
using Net = speed::InceptionV3<float>;
}  // namespace

Napi::Function InceptionModel::Init(Napi::Env env) {
  return DefineClass(env, "InceptionModel",
                     {
                         InstanceMethod<&InceptionModel::Params>("params"),
                         InstanceMethod<&InceptionModel::WriteParam>("writeParam"),
                         InstanceMethod<&InceptionModel::Unwritten>("unwritten"),
                         InstanceMethod<&InceptionModel::Prepare>("prepare"),
                         InstanceMethod<&InceptionModel::Run>("run"),
                         InstanceMethod<&InceptionModel::Flops>("flops"),
                         InstanceMethod<&InceptionModel::ActivationBytes>("activationBytes"),
                         InstanceMethod<&InceptionModel::Dispose>("dispose"),
                         InstanceMethod<&InceptionModel::Busy>("busy"),
                     });
}

// new InceptionModel({ device, threads, cudaDevice, cudaMath })
// On CUDA the convs and the fc run in float32 unless cudaMath says otherwise: FID, sFID
// and IS are compared across papers to a few tenths, and bf16 operands (the trainer's
// default) move the features by far more than float32 rounding does.
InceptionModel::InceptionModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<InceptionModel>(info) {
  Napi::Env env = info.Env();
  const std::string w = "InceptionV3.load";
  Napi::Object o = require_object(info[0], w + ": options");
  const std::string device = device_from_js(o, w);
  guard(env, w, [&] { model_ = std::make_unique<Net>(backend_from_js(env, o, device, w, "fp32")); });
}

Net& InceptionModel::usable(Napi::Env env, const char* what) {
  if (!model_) throw_error(env, std::string(what) + ": the Inception network has been disposed; load it again");
  require_idle(env, what, busy_, "the Inception network");
  return *model_;
}

Napi::Value InceptionModel::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return params_to_js(env, usable(env, "params").params());
}

// writeParam(name, Float32Array)
Napi::Value InceptionModel::WriteParam(const Napi::CallbackInfo& info) {
  return write_plain_param_js(info, usable(info.Env(), "writeParam"), "Inception");
}

Napi::Value InceptionModel::Unwritten(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto names = usable(env, "unwritten").unwritten();
  Napi::Array a = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) a.Set(static_cast<uint32_t>(i), names[i]);
  return a;
}

Napi::Value InceptionModel::Prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "prepare");
  guard(env, "prepare", [&] { m.prepare(); });
  return env.Undefined();
}

// run(images Uint8Array [n, H, W, C], { n, H, W, C, chunk }) ->
//   Promise<{ pool3: Float32Array [n, 2048], logits: Float32Array [n, 1008], spatial: Float32Array [n, 2023] }>
Napi::Value InceptionModel::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "run";
  auto& m = usable(env, "run");
  Napi::Object o = require_object(info[1], w + ": options");
  const int N = static_cast<int>(require_int(o.Get("n"), w + ": n", 1, kMaxImages));
  const int H = static_cast<int>(require_int(o.Get("H"), w + ": H", 1, kMaxSide));
  const int W = static_cast<int>(require_int(o.Get("W"), w + ": W", 1, kMaxSide));
  const int C = static_cast<int>(require_int(o.Get("C"), w + ": C", 1, 4));
  const int chunk = static_cast<int>(require_int(o.Get("chunk"), w + ": chunk", 1, kMaxImages));
  if (C == 2) throw_error(env, w + ": C must be 1 (grey), 3 (RGB) or 4 (RGBA), got 2");
  if (!m.prepared()) throw_error(env, w + ": the network is not prepared (write every parameter, then prepare())");
  Napi::TypedArray a = require_typed(info[0], napi_uint8_array, w + ": images");
  const size_t want = size_t(N) * H * W * C;
  if (a.ElementLength() != want)
    throw_error(env, w + ": images has " + std::to_string(a.ElementLength()) + " bytes, expected n*H*W*C = " +
                         std::to_string(want));
  auto x = std::make_shared<std::vector<uint8_t>>(want);
  std::memcpy(x->data(), static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), want);
  auto pool3 = std::make_shared<std::vector<float>>(size_t(N) * Net::kPool3);
  auto logits = std::make_shared<std::vector<float>>(size_t(N) * Net::kLogits);
  auto spatial = std::make_shared<std::vector<float>>(size_t(N) * Net::kSpatial);
  return queue_long_call(
      env, w, busy_,
      [&m, x, pool3, logits, spatial, N, H, W, C, chunk] {
        m.run(x->data(), N, H, W, C, pool3->data(), logits->data(), spatial->data(), chunk);
      },
      [pool3, logits, spatial](Napi::Env e) -> Napi::Value {
        Napi::Object r = Napi::Object::New(e);
        r.Set("pool3", make_f32(e, pool3->data(), pool3->size()));
        r.Set("logits", make_f32(e, logits->data(), logits->size()));
        r.Set("spatial", make_f32(e, spatial->data(), spatial->size()));
        return r;
      },
      Value());
}

// flops() -> analytic FLOPs per image at 299x299
Napi::Value InceptionModel::Flops(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "flops");
  return Napi::Number::New(env, guard(env, "flops", [&] { return m.flops(); }));
}

// activationBytes(chunk, H, W) -> bytes of the activation arena
Napi::Value InceptionModel::ActivationBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "activationBytes");
  const int chunk = static_cast<int>(require_int(info[0], "activationBytes: chunk", 1, kMaxImages));
  const int H = static_cast<int>(require_int(info[1], "activationBytes: H", 1, kMaxSide));
  const int W = static_cast<int>(require_int(info[2], "activationBytes: W", 1, kMaxSide));
  return Napi::Number::New(env, guard(env, "activationBytes", [&] { return double(m.activation_bytes(chunk, H, W)); }));
}

Napi::Value InceptionModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env, "dispose", busy_, "the Inception network");
  model_.reset();
  return env.Undefined();
}

Napi::Value InceptionModel::Busy(const Napi::CallbackInfo& info) { return busy_to_js(info.Env(), busy_); }

}  // namespace speed_napi
