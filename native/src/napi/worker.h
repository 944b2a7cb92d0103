// A libuv worker that runs one native call off the JS thread and settles a
// Promise. `run` executes on the worker (it must not touch JS values: all its
// inputs were copied beforehand); `done` builds the result on the JS thread.
// `keep` holds the owning JS object alive until the call settles, so the GC
// cannot free a model while a worker uses it.
#pragma once
#include <napi.h>

#include <functional>
#include <string>

#include "guard.h"

namespace speed_napi {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Run = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  using Release = std::function<void()>;

  PromiseWorker(Napi::Env env, std::string where, Run run, Done done, Release release,
                Napi::Object keep)
      : Napi::AsyncWorker(env, "speed_native"),
        deferred_(Napi::Promise::Deferred::New(env)),
        where_(std::move(where)),
        run_(std::move(run)),
        done_(std::move(done)),
        release_(std::move(release)) {
    if (!keep.IsEmpty()) keep_ = Napi::Persistent(keep);
  }

  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      run_();
    } catch (...) {
      SetError(exception_message(where_));
    }
  }
  void OnOK() override {
    finish();
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      deferred_.Reject(Napi::Error::New(env, exception_message(where_)).Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    finish();
    deferred_.Reject(e.Value());
  }

 private:
  void finish() {
    if (release_) release_();
    if (!keep_.IsEmpty()) keep_.Reset();
  }

  Napi::Promise::Deferred deferred_;
  std::string where_;
  Run run_;
  Done done_;
  Release release_;
  Napi::ObjectReference keep_;
};

// Starts a long call of a wrapped model and returns its Promise: `busy` names
// the call until it settles (set last, so that a failed start never leaves the
// model busy); `self`, the wrapper's JS object, is kept alive until then, so
// `busy` (a member of it) outlives the worker.
inline Napi::Value queue_long_call(Napi::Env env, const std::string& what, std::string& busy,
                                   PromiseWorker::Run run, PromiseWorker::Done done,
                                   Napi::Object self) {
  std::string* flag = &busy;
  auto* worker = new PromiseWorker(env, what, std::move(run), std::move(done),
                                   [flag] { flag->clear(); }, self);
  Napi::Promise p = worker->promise();
  busy = what;
  try {
    worker->Queue();
  } catch (...) {
    busy.clear();
    throw;
  }
  return p;
}

}  // namespace speed_napi
