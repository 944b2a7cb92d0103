#include "bench_binding.h"

#include <memory>
#include <vector>

#include "convert.h"
#include "speed/bench.h"
#include "worker.h"

namespace speed_napi {

// runBench({ models, batches, device, threads?, cudaMath?, iters?, kernels?, gemmSize? })
Napi::Value RunBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string w = "runBench";
  Napi::Object o = require_object(info[0], w + ": opts");
  speed::BenchOptions opts;
  Napi::Value models = o.Get("models");
  if (!models.IsArray()) throw_error(env, w + ": opts.models must be an array of strings like \"DiT-S/2@32x4\", got " + describe(models), true);
  Napi::Array ma = models.As<Napi::Array>();
  opts.models.clear();
  for (uint32_t i = 0; i < ma.Length(); ++i)
    opts.models.push_back(require_string(ma.Get(i), w + ": opts.models[" + std::to_string(i) + "]"));
  Napi::Value batches = o.Get("batches");
  if (!batches.IsArray()) throw_error(env, w + ": opts.batches must be an array of batch sizes, got " + describe(batches), true);
  Napi::Array ba = batches.As<Napi::Array>();
  opts.batches.clear();
  for (uint32_t i = 0; i < ba.Length(); ++i)
    opts.batches.push_back(static_cast<int>(require_int(ba.Get(i), w + ": opts.batches[" + std::to_string(i) + "]", 1, 1 << 20)));
  if (opts.models.empty() || opts.batches.empty())
    throw_error(env, w + ": opts.models and opts.batches must not be empty");
  opts.device = require_string(o.Get("device"), w + ": opts.device");
  if (opts.device != "cpu" && opts.device != "cuda")
    throw_error(env, w + ": opts.device must be 'cpu' or 'cuda', got '" + opts.device + "'");
  if (!o.Get("threads").IsUndefined())
    opts.threads = static_cast<int>(require_int(o.Get("threads"), w + ": opts.threads", 0, 4096));
  if (!o.Get("iters").IsUndefined())
    opts.iters = static_cast<int>(require_int(o.Get("iters"), w + ": opts.iters", 1, 1 << 20));
  if (!o.Get("gemmSize").IsUndefined())
    opts.gemm_size = static_cast<int>(require_int(o.Get("gemmSize"), w + ": opts.gemmSize", 16, 1 << 15));
  for (auto [key, dst] : {std::pair<const char*, bool*>{"kernels", &opts.kernels},
                          {"recompute", &opts.recompute},
                          {"profile", &opts.profile}}) {
    if (o.Get(key).IsUndefined()) continue;
    if (!o.Get(key).IsBoolean()) throw_error(env, w + ": opts." + key + " must be a boolean", true);
    *dst = o.Get(key).As<Napi::Boolean>().Value();
  }
  if (!o.Get("cudaMath").IsUndefined()) {
    std::string m = require_string(o.Get("cudaMath"), w + ": opts.cudaMath");
    if (m == "bf16") opts.cuda_math = speed::CudaMath::BF16;
    else if (m == "tf32") opts.cuda_math = speed::CudaMath::TF32;
    else if (m == "fp32") opts.cuda_math = speed::CudaMath::FP32;
    else throw_error(env, w + ": opts.cudaMath must be 'bf16', 'tf32' or 'fp32', got '" + m + "'");
  }
  // Reject bad model specs now rather than after minutes of benchmarking.
  for (const auto& m : opts.models) {
    try {
      if (speed::is_vae_bench_model(m))
        speed::parse_vae_bench_model(m);
      else
        speed::parse_bench_model(m);
    } catch (...) {
      throw_error(env, exception_message(w + ": opts.models: '" + m + "'"));
    }
  }

  auto rows = std::make_shared<std::vector<speed::BenchRow>>();
  auto* worker = new PromiseWorker(
      env, w, [opts, rows] { *rows = speed::run_bench(opts); },
      [rows](Napi::Env e) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(e, rows->size());
        for (size_t i = 0; i < rows->size(); ++i) {
          const speed::BenchRow& r = (*rows)[i];
          Napi::Object o = Napi::Object::New(e);
          o.Set("model", r.model);
          o.Set("device", r.device);
          o.Set("batch", r.batch);
          o.Set("what", r.what);
          o.Set("ms", r.ms);
          o.Set("imagesPerSec", r.images_per_sec);
          o.Set("gflops", r.gflops);
          o.Set("gbps", r.gbps);
          o.Set("ratioToGemm", r.ratio_to_gemm);
          o.Set("activationMB", r.activation_mb);
          o.Set("calls", static_cast<double>(r.calls));
          o.Set("share", r.share);
          arr.Set(static_cast<uint32_t>(i), o);
        }
        return arr;
      },
      nullptr, Napi::Object());
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace speed_napi
