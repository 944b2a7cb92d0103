// runBench(opts) -> Promise<BenchRow[]>: the native benchmark (speed/bench.h)
// on a worker thread.
#pragma once
#include <napi.h>

namespace speed_napi {
Napi::Value RunBench(const Napi::CallbackInfo& info);
}
