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

}  // namespace speed_napi
