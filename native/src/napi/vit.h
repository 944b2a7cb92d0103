// The JS class wrapping speed::ViTClassifier<float> (the feature network,
// src/featnet). Long calls (trainStep, logits, features) run on a libuv worker
// and resolve a Promise; while one runs, every other call is refused at once,
// exactly as for the DiT Model (model.h).
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "speed/vit.h"

namespace speed_napi {

class ViTModel : public Napi::ObjectWrap<ViTModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit ViTModel(const Napi::CallbackInfo& info);
  ~ViTModel() override = default;

 private:
  speed::ViTClassifier<float>& usable(Napi::Env env, const char* what);
  // Copies x and checks it holds N whole images; returns N.
  int image_count(Napi::Env env, const std::vector<float>& x, const std::string& what) const;

  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value NumTrainable(const Napi::CallbackInfo& info);
  Napi::Value GetConfig(const Napi::CallbackInfo& info);
  Napi::Value ReadParam(const Napi::CallbackInfo& info);
  Napi::Value WriteParam(const Napi::CallbackInfo& info);
  Napi::Value GetStep(const Napi::CallbackInfo& info);
  Napi::Value SetStep(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value Logits(const Napi::CallbackInfo& info);
  Napi::Value Features(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);

  std::unique_ptr<speed::ViTClassifier<float>> model_;
  speed::ViTConfig cfg_;
  std::string busy_;
};

}  // namespace speed_napi
