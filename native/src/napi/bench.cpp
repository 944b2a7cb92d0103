#include "bench_binding.h"

#include "convert.h"

namespace speed_napi {

Napi::Value RunBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(Napi::Error::New(env, "runBench: the native bench (speed/bench.h) is not built yet").Value());
  return d.Promise();
}

}  // namespace speed_napi
