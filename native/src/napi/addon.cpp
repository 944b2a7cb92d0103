// The addon's entry point: the Model class and the free functions
// (presetConfig, nativeInfo, cpuForceBuiltinGemm, sampleStepKernel, runBench, gramF32).
// src/native.ts is its only user and wraps everything in typed functions.
#include <napi.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "bench_binding.h"
#include "cnn.h"
#include "convert.h"
#include "parallel.h"
#include "gram.h"
#include "guard.h"
#include "inception.h"
#include "model.h"
#include "speed/cpu.h"
#include "speed/cuda.h"
#include "speed/dit.h"
#include "vae.h"
#include "vit.h"

namespace speed_napi {

namespace {

// presetConfig(name, base?) -> ModelConfig
Napi::Value PresetConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = require_string(info[0], "presetConfig: name");
  speed::DiTConfig base = config_merge_js(info[1], speed::DiTConfig(), "presetConfig: base");
  speed::DiTConfig c = guard(env, "presetConfig", [&] { return speed::dit_preset(name, base); });
  guard(env, "presetConfig('" + name + "')", [&] { c.validate(); });
  return config_to_js(env, c);
}

// nativeInfo() -> { gemm, cuda: {available, reason}, hardwareThreads, napiVersion, compiler }
Napi::Value NativeInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("gemm", speed::cpu_gemm_name());
  std::string why;
  bool ok = guard(env, "nativeInfo", [&] { return speed::cuda_available(&why); });
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("available", ok);
  cuda.Set("reason", ok ? std::string("") : why);
  o.Set("cuda", cuda);
  o.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
#if defined(__clang__)
  o.Set("compiler", std::string("clang ") + __clang_version__);
#elif defined(__GNUC__)
  o.Set("compiler", std::string("gcc ") + __VERSION__);
#else
  o.Set("compiler", "unknown");
#endif
  return o;
}

Napi::Value LiveModels(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Model::live_count()));
}

Napi::Value CpuForceBuiltinGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBoolean())
    throw_error(env, "cpuForceBuiltinGemm: on must be a boolean, got " + describe(info[0]), true);
  speed::cpu_force_builtin_gemm(info[0].As<Napi::Boolean>().Value());
  return env.Undefined();
}

// A single-threaded CPU backend for the kernel-only entry points; one per JS
// thread (worker_threads may load the addon too), created on first use.
speed::Backend<float>& kernel_backend() {
  thread_local std::shared_ptr<speed::Backend<float>> be = speed::make_cpu_backend<float>(1);
  return *be;
}

// sampleStepKernel(modelOut, x, noise, {N, C, HW, learnSigma}, coefs) -> Float32Array
Napi::Value SampleStepKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "sampleStepKernel";
  size_t n_out = 0, n_x = 0, n_noise = 0;
  const float* out = view_f32(info[0], w + ": modelOut", &n_out);
  const float* x = view_f32(info[1], w + ": x", &n_x);
  const float* noise = view_f32(info[2], w + ": noise", &n_noise);
  Napi::Object d = require_object(info[3], w + ": dims");
  const int N = static_cast<int>(require_int(d.Get("N"), w + ": dims.N", 1, 1 << 24));
  const int C = static_cast<int>(require_int(d.Get("C"), w + ": dims.C", 1, 1 << 16));
  const int HW = static_cast<int>(require_int(d.Get("HW"), w + ": dims.HW", 1, 1 << 26));
  const bool learn_sigma = require_bool(d, "learnSigma", w + ": dims");
  speed::SampleStepCoefs coefs = coefs_from_js(info[4], w + ": coefs");
  const size_t per = size_t(C) * HW;
  const size_t rows = coefs.cfg ? 2 * size_t(N) : size_t(N);
  const size_t cout = learn_sigma ? 2 * size_t(C) : size_t(C);
  if (n_x != N * per)
    throw_error(env, w + ": x has " + std::to_string(n_x) + " elements, expected N*C*HW = " +
                         std::to_string(N * per));
  if (n_noise != N * per)
    throw_error(env, w + ": noise has " + std::to_string(n_noise) + " elements, expected N*C*HW = " +
                         std::to_string(N * per));
  if (n_out != rows * cout * HW)
    throw_error(env, w + ": modelOut has " + std::to_string(n_out) + " elements, expected " +
                         (coefs.cfg ? "2N" : "N") + "*" + (learn_sigma ? "2C" : "C") + "*HW = " +
                         std::to_string(rows * cout * HW));
  Napi::Float32Array res = Napi::Float32Array::New(env, n_x);
  std::memcpy(res.Data(), x, n_x * sizeof(float));
  guard(env, w, [&] {
    kernel_backend().sample_step(out, res.Data(), noise, N, C, HW, learn_sigma, coefs);
  });
  return res;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Model", Model::Init(env));
  exports.Set("presetConfig", Napi::Function::New<PresetConfig>(env, "presetConfig"));
  exports.Set("nativeInfo", Napi::Function::New<NativeInfo>(env, "nativeInfo"));
  exports.Set("cpuForceBuiltinGemm", Napi::Function::New<CpuForceBuiltinGemm>(env, "cpuForceBuiltinGemm"));
  exports.Set("sampleStepKernel", Napi::Function::New<SampleStepKernel>(env, "sampleStepKernel"));
  exports.Set("liveModels", Napi::Function::New<LiveModels>(env, "liveModels"));
  exports.Set("runBench", Napi::Function::New<RunBench>(env, "runBench"));
  exports.Set("ViTModel", ViTModel::Init(env));  // the feature networks (src/featnet)
  exports.Set("CNNModel", CNNModel::Init(env));
  exports.Set("VAEModel", VAEModel::Init(env));  // SD's VAE (src/vae)
  exports.Set("InceptionModel", InceptionModel::Init(env));  // pytorch-fid's Inception-v3 (src/eval/inception.ts)
  exports.Set("parallel", parallel_exports(env)); // data parallelism (src/parallel)
  exports.Set("gramF32", Napi::Function::New<GramF32>(env, "gramF32"));  // k-NN distances of the evaluation (src/eval/gram.ts)
  return exports;
}

}  // namespace speed_napi

static Napi::Object InitSpeedNative(Napi::Env env, Napi::Object exports) {
  return speed_napi::Init(env, exports);
}

NODE_API_MODULE(speed_native, InitSpeedNative)
