// Conversions between JavaScript values and the core's C++ types, with the
// argument checks of the addon's own API. Every failed check throws a
// Napi::Error whose message names the call and the argument ("trainStep:
// batch.x0 ...") and says what was expected. Only files under native/src/napi
// include napi.h.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/dit.h"

namespace speed_napi {

// Throws a JS Error with `msg` (a TypeError when `type` is true).
[[noreturn]] void throw_error(Napi::Env env, const std::string& msg, bool type = false);

// A JS value's kind for messages: "a Float64Array", "undefined", "a string", ...
std::string describe(const Napi::Value& v);

// ---- typed arrays --------------------------------------------------------------
// The view of a TypedArray of the required kind; `what` names it in messages.
Napi::TypedArray require_typed(const Napi::Value& v, napi_typedarray_type type,
                               const std::string& what);
std::vector<float> copy_f32(const Napi::Value& v, const std::string& what);
std::vector<int32_t> copy_i32(const Napi::Value& v, const std::string& what);
std::vector<double> copy_f64(const Napi::Value& v, const std::string& what);
// Pointer + length of a Float32Array without a copy (for sync calls only).
const float* view_f32(const Napi::Value& v, const std::string& what, size_t* n);
Napi::Float32Array make_f32(Napi::Env env, const float* data, size_t n);

// ---- plain values ----------------------------------------------------------------
Napi::Object require_object(const Napi::Value& v, const std::string& what);
double require_number(const Napi::Object& o, const char* key, const std::string& what);
double require_finite(const Napi::Value& v, const std::string& what);
// A safe integer in [lo, hi].
int64_t require_int(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi);
bool require_bool(const Napi::Object& o, const char* key, const std::string& what);
std::string require_string(const Napi::Value& v, const std::string& what);

// ---- core types ----------------------------------------------------------------
// ModelConfig (camelCase keys, all required) <-> speed::DiTConfig; also runs
// DiTConfig::validate().
speed::DiTConfig config_from_js(const Napi::Value& v, const std::string& what);
// Like config_from_js, but only the keys present override `base` (presets).
speed::DiTConfig config_merge_js(const Napi::Value& v, speed::DiTConfig base,
                                 const std::string& what);
Napi::Object config_to_js(Napi::Env env, const speed::DiTConfig& c);

speed::Slot slot_from_js(const Napi::Value& v, const std::string& what);
speed::SampleStepCoefs coefs_from_js(const Napi::Value& v, const std::string& what);

}  // namespace speed_napi
