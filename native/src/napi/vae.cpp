#include "vae.h"

#include <cmath>

#include "convert.h"
#include "guard.h"
#include "worker.h"

namespace speed_napi {

namespace {

constexpr int64_t kMaxImages = 1 << 20;
constexpr int64_t kMaxSide = 16384;

speed::VAEConfig vae_config_from_js(const Napi::Value& v, const std::string& w) {
  Napi::Object o = require_object(v, w);
  speed::VAEConfig c;
  auto get = [&](const char* key, int lo, int hi) {
    return static_cast<int>(require_int(o.Get(key), w + "." + key, lo, hi));
  };
  c.in_channels = get("inChannels", 1, 64);
  c.out_channels = get("outChannels", 1, 64);
  c.latent_channels = get("latentChannels", 1, 256);
  c.layers_per_block = get("layersPerBlock", 1, 16);
  c.norm_num_groups = get("normNumGroups", 1, 1024);
  c.block_out_channels = require_int_list(o.Get("blockOutChannels"), w + ".blockOutChannels", 8, 1, 8192);
  guard(o.Env(), w, [&] { c.validate(); });
  return c;
}

Napi::Object vae_config_to_js(Napi::Env env, const speed::VAEConfig& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("inChannels", c.in_channels);
  o.Set("outChannels", c.out_channels);
  o.Set("latentChannels", c.latent_channels);
  Napi::Array a = Napi::Array::New(env, c.block_out_channels.size());
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) a.Set(static_cast<uint32_t>(i), c.block_out_channels[i]);
  o.Set("blockOutChannels", a);
  o.Set("layersPerBlock", c.layers_per_block);
  o.Set("normNumGroups", c.norm_num_groups);
  return o;
}

// Copies a Float32Array of exactly `want` finite elements.
std::shared_ptr<std::vector<float>> copy_exact(Napi::Env env, const Napi::Value& v, const std::string& what,
                                               size_t want, const std::string& dims) {
  auto x = std::make_shared<std::vector<float>>(copy_f32(v, what));
  if (x->size() != want)
    throw_error(env, what + " has " + std::to_string(x->size()) + " elements, expected " + dims + " = " +
                         std::to_string(want));
  for (size_t i = 0; i < x->size(); ++i)
    if (!std::isfinite((*x)[i])) throw_error(env, what + "[" + std::to_string(i) + "] is not finite");
  return x;
}

}  // namespace

Napi::Function VAEModel::Init(Napi::Env env) {
  return DefineClass(env, "VAEModel",
                     {
                         InstanceMethod<&VAEModel::Params>("params"),
                         InstanceMethod<&VAEModel::GetConfig>("config"),
                         InstanceMethod<&VAEModel::WriteParam>("writeParam"),
                         InstanceMethod<&VAEModel::ReadParam>("readParam"),
                         InstanceMethod<&VAEModel::Unwritten>("unwritten"),
                         InstanceMethod<&VAEModel::Encode>("encode"),
                         InstanceMethod<&VAEModel::EncodeMoments>("encodeMoments"),
                         InstanceMethod<&VAEModel::Decode>("decode"),
                         InstanceMethod<&VAEModel::ActivationBytes>("activationBytes"),
                         InstanceMethod<&VAEModel::Flops>("flops"),
                         InstanceMethod<&VAEModel::Dispose>("dispose"),
                         InstanceMethod<&VAEModel::Busy>("busy"),
                     });
}

// new VAEModel(config, { device, threads, cudaDevice, cudaMath })
VAEModel::VAEModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VAEModel>(info) {
  Napi::Env env = info.Env();
  const std::string w = "VAE.create";
  cfg_ = vae_config_from_js(info[0], w + ": config");
  Napi::Object o = require_object(info[1], w + ": options");
  const std::string device = device_from_js(o, w);
  guard(env, w, [&] { model_ = std::make_unique<speed::VAE<float>>(cfg_, backend_from_js(env, o, device, w)); });
}

speed::VAE<float>& VAEModel::usable(Napi::Env env, const char* what) {
  if (!model_) throw_error(env, std::string(what) + ": the VAE has been disposed; load it again");
  require_idle(env, what, busy_, "VAE");
  return *model_;
}

Napi::Value VAEModel::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return params_to_js(env, usable(env, "params").params());
}

Napi::Value VAEModel::GetConfig(const Napi::CallbackInfo& info) { return vae_config_to_js(info.Env(), cfg_); }

// writeParam(name, Float32Array)
Napi::Value VAEModel::WriteParam(const Napi::CallbackInfo& info) {
  return write_plain_param_js(info, usable(info.Env(), "writeParam"), "VAE");
}

// readParam(name) -> Float32Array
Napi::Value VAEModel::ReadParam(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "readParam");
  const std::string name = require_string(info[0], "readParam: name");
  const speed::ParamInfo* p = find_param(m.params(), name);
  if (!p) throw_error(env, "readParam: unknown VAE parameter '" + name + "' (see params() for the names)");
  Napi::Float32Array out = Napi::Float32Array::New(env, p->numel);
  guard(env, "readParam('" + name + "')", [&] { m.read_param(name, out.Data()); });
  return out;
}

Napi::Value VAEModel::Unwritten(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto names = usable(env, "unwritten").unwritten();
  Napi::Array a = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) a.Set(static_cast<uint32_t>(i), names[i]);
  return a;
}

Napi::Value VAEModel::run_encode(const Napi::CallbackInfo& info, bool moments) {
  Napi::Env env = info.Env();
  const std::string w = moments ? "encodeMoments" : "encode";
  auto& m = usable(env, moments ? "encodeMoments" : "encode");
  Napi::Object o = require_object(info[1], w + ": options");
  const int N = static_cast<int>(require_int(o.Get("n"), w + ": n", 1, kMaxImages));
  const int H = static_cast<int>(require_int(o.Get("H"), w + ": H", 1, kMaxSide));
  const int W = static_cast<int>(require_int(o.Get("W"), w + ": W", 1, kMaxSide));
  const int chunk = static_cast<int>(require_int(o.Get("chunk"), w + ": chunk", 1, kMaxImages));
  const int f = cfg_.down_factor();
  if (H % f || W % f)
    throw_error(env, w + ": H and W must be multiples of the down factor " + std::to_string(f) + ", got " +
                         std::to_string(H) + "x" + std::to_string(W));
  const size_t per = size_t(cfg_.in_channels) * H * W;
  auto x = copy_exact(env, info[0], w + ": images", size_t(N) * per, "n*C*H*W");
  const size_t zc = moments ? 2 * cfg_.latent_channels : cfg_.latent_channels;
  auto out = std::make_shared<std::vector<float>>(size_t(N) * zc * (H / f) * (W / f));
  bool sample = false;
  uint64_t seed = 0, offset = 0, first = 0;
  if (!moments) {
    sample = require_bool(o, "sample", w + ": options");
    seed = static_cast<uint64_t>(require_int(o.Get("seed"), w + ": seed", 0, kMaxSafeInt));
    offset = static_cast<uint64_t>(require_int(o.Get("offset"), w + ": offset", 0, kMaxSafeInt));
    first = static_cast<uint64_t>(require_int(o.Get("first"), w + ": first", 0, kMaxSafeInt));
  }
  return queue_long_call(
      env, w, busy_,
      [&m, x, out, N, H, W, chunk, moments, sample, seed, offset, first] {
        if (moments)
          m.encode_moments(x->data(), N, H, W, out->data(), chunk);
        else
          m.encode(x->data(), N, H, W, out->data(), sample, seed, offset, chunk, {}, first);
      },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, Value());
}

// encode(images, { n, H, W, chunk, sample, seed, offset, first }) -> Promise<Float32Array [n, zc, H/f, W/f]>
Napi::Value VAEModel::Encode(const Napi::CallbackInfo& info) { return run_encode(info, false); }
// encodeMoments(images, { n, H, W, chunk }) -> Promise<Float32Array [n, 2 zc, H/f, W/f]> (mean, then logvar unclamped)
Napi::Value VAEModel::EncodeMoments(const Napi::CallbackInfo& info) { return run_encode(info, true); }

// decode(latents, { n, h, w, chunk }) -> Promise<Float32Array [n, out, h f, w f]>
Napi::Value VAEModel::Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "decode";
  auto& m = usable(env, "decode");
  Napi::Object o = require_object(info[1], w + ": options");
  const int f = cfg_.down_factor();
  const int N = static_cast<int>(require_int(o.Get("n"), w + ": n", 1, kMaxImages));
  const int h = static_cast<int>(require_int(o.Get("h"), w + ": h", 1, kMaxSide / f));
  const int wd = static_cast<int>(require_int(o.Get("w"), w + ": w", 1, kMaxSide / f));
  const int chunk = static_cast<int>(require_int(o.Get("chunk"), w + ": chunk", 1, kMaxImages));
  auto z = copy_exact(env, info[0], w + ": latents", size_t(N) * cfg_.latent_channels * h * wd, "n*zc*h*w");
  auto out = std::make_shared<std::vector<float>>(size_t(N) * cfg_.out_channels * (h * f) * (wd * f));
  return queue_long_call(
      env, w, busy_, [&m, z, out, N, h, wd, chunk] { m.decode(z->data(), N, h, wd, out->data(), chunk); },
      [out](Napi::Env e) -> Napi::Value { return make_f32(e, out->data(), out->size()); }, Value());
}

// activationBytes(chunk, H, W) -> number (bytes of the arena for a chunk at image size H x W)
Napi::Value VAEModel::ActivationBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "activationBytes");
  const int chunk = static_cast<int>(require_int(info[0], "activationBytes: chunk", 1, kMaxImages));
  const int H = static_cast<int>(require_int(info[1], "activationBytes: H", 1, kMaxSide));
  const int W = static_cast<int>(require_int(info[2], "activationBytes: W", 1, kMaxSide));
  return Napi::Number::New(env, guard(env, "activationBytes", [&] { return double(m.activation_bytes(chunk, H, W)); }));
}

// flops(H, W) -> { encode, decode } per image at image size H x W
Napi::Value VAEModel::Flops(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = usable(env, "flops");
  const int H = static_cast<int>(require_int(info[0], "flops: H", 1, kMaxSide));
  const int W = static_cast<int>(require_int(info[1], "flops: W", 1, kMaxSide));
  Napi::Object o = Napi::Object::New(env);
  guard(env, "flops", [&] {
    o.Set("encode", m.encode_flops(H, W));
    o.Set("decode", m.decode_flops(H, W));
  });
  return o;
}

Napi::Value VAEModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env, "dispose", busy_, "VAE");
  model_.reset();
  return env.Undefined();
}

Napi::Value VAEModel::Busy(const Napi::CallbackInfo& info) { return busy_to_js(info.Env(), busy_); }

}  // namespace speed_napi
