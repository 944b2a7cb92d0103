// gramF32: a [n, d] · b [m, d]ᵀ on the CPU backend, as its Linear (y = x Wᵀ)
// with b as the weights. Precision and recall over 50k Inception features need
// three such products of 50k x 50k x 2048; as one BLAS / built-in GEMM per
// block of rows they take minutes where a scalar loop in TypeScript takes hours.
// The caller (src/eval/gram.ts) validates the arguments and picks the blocks.
#include "gram.h"

#include <map>
#include <memory>

#include "convert.h"
#include "guard.h"
#include "speed/cpu.h"

namespace speed_napi {

namespace {

// One CPU backend per thread count (its pool lives as long as the addon), per JS thread.
speed::Backend<float>& gram_backend(int threads) {
  thread_local std::map<int, std::shared_ptr<speed::Backend<float>>> by_threads;
  auto& be = by_threads[threads];
  if (!be) be = speed::make_cpu_backend<float>(threads);
  return *be;
}

}  // namespace

Napi::Value GramF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "gramF32";
  size_t na = 0, nb = 0;
  const float* a = view_f32(info[0], w + ": a", &na);
  const float* b = view_f32(info[1], w + ": b", &nb);
  Napi::Object dims = require_object(info[2], w + ": dims");
  const int64_t n = require_int(dims.Get("n"), w + ": dims.n", 1, 1 << 24);
  const int64_t m = require_int(dims.Get("m"), w + ": dims.m", 1, 1 << 24);
  const int64_t d = require_int(dims.Get("d"), w + ": dims.d", 1, 1 << 20);
  const int threads = static_cast<int>(require_int(dims.Get("threads"), w + ": dims.threads", 0, 4096));
  if (na != size_t(n * d)) throw_error(env, w + ": a has " + std::to_string(na) + " elements, expected n*d = " + std::to_string(n * d));
  if (nb != size_t(m * d)) throw_error(env, w + ": b has " + std::to_string(nb) + " elements, expected m*d = " + std::to_string(m * d));
  if (n * m > (int64_t(1) << 31)) throw_error(env, w + ": the result [" + std::to_string(n) + ", " + std::to_string(m) + "] is too large for one call; split a into blocks of rows");
  Napi::Float32Array out = Napi::Float32Array::New(env, size_t(n * m));
  guard(env, w, [&] {
    gram_backend(threads).linear_forward(a, b, nullptr, out.Data(), nullptr, int(n), int(d), int(m), speed::Act::None);
  });
  return out;
}

}  // namespace speed_napi
