// The JS class wrapping speed::InceptionV3<float> (src/eval/inception.ts): pytorch-fid's
// FID Inception-v3, forward only. run() works on a libuv worker and resolves a Promise;
// while it runs, every other call is refused at once.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "speed/inception.h"

namespace speed_napi {

class InceptionModel : public Napi::ObjectWrap<InceptionModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit InceptionModel(const Napi::CallbackInfo& info);
  ~InceptionModel() override = default;

 private:
  speed::InceptionV3<float>& usable(Napi::Env env, const char* what);

  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value WriteParam(const Napi::CallbackInfo& info);
  Napi::Value Unwritten(const Napi::CallbackInfo& info);
  Napi::Value Prepare(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Flops(const Napi::CallbackInfo& info);
  Napi::Value ActivationBytes(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);

  std::unique_ptr<speed::InceptionV3<float>> model_;
  std::string busy_;
};

}  // namespace speed_napi
