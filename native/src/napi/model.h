// The JS class wrapping speed::DiT<float> (CPU or CUDA backend). Long calls
// (trainStep, forward, sampleStep) run on a libuv worker and resolve a Promise;
// while one runs the model is "busy" and every other call is refused at once.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "speed/dit.h"

namespace speed_napi {

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Model(const Napi::CallbackInfo& info);
  ~Model() override;

  // Native models alive in this process (not yet disposed or collected).
  static int64_t live_count();

 private:
  // Throws when disposed or busy; `what` names the refused call.
  speed::DiT<float>& usable(Napi::Env env, const char* what);
  void check_labels(Napi::Env env, const std::vector<int32_t>& y, int N,
                    const std::string& what) const;
  void check_times(Napi::Env env, const std::vector<int32_t>& t, const std::string& what,
                   bool need_tables) const;

  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value NumTrainable(const Napi::CallbackInfo& info);
  Napi::Value GetConfig(const Napi::CallbackInfo& info);
  Napi::Value ReadParam(const Napi::CallbackInfo& info);
  Napi::Value WriteParam(const Napi::CallbackInfo& info);
  Napi::Value SetTables(const Napi::CallbackInfo& info);
  Napi::Value GetNoiseState(const Napi::CallbackInfo& info);
  Napi::Value SetNoiseState(const Napi::CallbackInfo& info);
  Napi::Value GetStep(const Napi::CallbackInfo& info);
  Napi::Value SetStep(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value SampleStep(const Napi::CallbackInfo& info);
  Napi::Value DrawNoise(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);
  Napi::Value Steps(const Napi::CallbackInfo& info);
  Napi::Value ActivationBytes(const Napi::CallbackInfo& info);
  Napi::Value SetCollective(const Napi::CallbackInfo& info);
  Napi::Value BroadcastState(const Napi::CallbackInfo& info);

  void free_model();

  std::unique_ptr<speed::DiT<float>> model_;
  speed::DiTConfig cfg_;
  std::string device_;
  std::string busy_;  // name of the running long call, empty when idle
  int steps_ = 0;     // T of the tables set, 0 before setTables
};

}  // namespace speed_napi
