// N-API face of the evaluation's one heavy numeric kernel: the Gram matrix of
// two feature sets, from which src/eval/prdc.ts reads k-NN distances.
#pragma once
#include <napi.h>

namespace speed_napi {

// gramF32(a, b, {n, m, d, threads}) -> Float32Array [n, m] = a [n, d] · b [m, d]ᵀ
Napi::Value GramF32(const Napi::CallbackInfo& info);

}  // namespace speed_napi
