// The JS class wrapping speed::VAE<float> (src/vae): SD's AutoencoderKL,
// forward only. encode / encodeMoments / decode run on a libuv worker and
// resolve a Promise; while one runs, every other call is refused at once.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "speed/vae.h"

namespace speed_napi {

class VAEModel : public Napi::ObjectWrap<VAEModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit VAEModel(const Napi::CallbackInfo& info);
  ~VAEModel() override = default;

 private:
  speed::VAE<float>& usable(Napi::Env env, const char* what);

  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value GetConfig(const Napi::CallbackInfo& info);
  Napi::Value WriteParam(const Napi::CallbackInfo& info);
  Napi::Value ReadParam(const Napi::CallbackInfo& info);
  Napi::Value Unwritten(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value EncodeMoments(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value ActivationBytes(const Napi::CallbackInfo& info);
  Napi::Value Flops(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);

  Napi::Value run_encode(const Napi::CallbackInfo& info, bool moments);

  std::unique_ptr<speed::VAE<float>> model_;
  speed::VAEConfig cfg_;
  std::string busy_;
};

}  // namespace speed_napi
