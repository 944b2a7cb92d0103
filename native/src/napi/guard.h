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

}  // namespace speed_napi
