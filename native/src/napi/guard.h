// Turns every C++ exception into a JS Error: speed::Error keeps its message,
// std::bad_alloc says "out of memory", anything else is named as unknown.
// Nothing thrown inside the core may reach N-API uncaught (that would abort).
#pragma once
#include <napi.h>

#include <exception>
#include <new>
#include <string>

#include "speed/backend.h"

namespace speed_napi {

// The message for an exception caught off the JS thread (no Env there).
inline std::string exception_message(const std::string& where) {
  try {
    throw;
  } catch (const speed::Error& e) {
    return where + ": " + e.what();
  } catch (const std::bad_alloc&) {
    return where + ": out of memory (std::bad_alloc)";
  } catch (const std::exception& e) {
    return where + ": " + e.what();
  } catch (...) {
    return where + ": unknown native exception";
  }
}

// Runs f on the JS thread; JS errors pass through, C++ ones become JS Errors.
template <typename F>
auto guard(Napi::Env env, const std::string& where, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw Napi::Error::New(env, exception_message(where));
  }
}

// The busy-guard of a wrapped model whose long calls run on a worker: throws
// "<what>: <noun> is busy with <busy>; await the previous call" while one runs.
inline void require_idle(Napi::Env env, const std::string& what, const std::string& busy,
                         const char* noun) {
  if (!busy.empty())
    throw Napi::Error::New(env, what + ": " + noun + " is busy with " + busy + "; await the previous call");
}

// busy() -> the running long call's name, or null.
inline Napi::Value busy_to_js(Napi::Env env, const std::string& busy) {
  if (busy.empty()) return env.Null();
  return Napi::String::New(env, busy);
}

}  // namespace speed_napi
