// The addon's `dist` object: MPI lifetime and the few host collectives the
// TypeScript side needs (stop decision, checkpoint state from rank 0, gathering
// inference results), all on Node's main thread and blocking. The gradient
// all-reduce itself runs inside DiT::train_step (speed/collective.h).
#include "parallel.h"

#include <chrono>
#include <cstring>
#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include "convert.h"
#include "guard.h"

namespace speed_napi {

namespace {

std::mutex g_mu;
std::map<int, std::shared_ptr<speed::Collective>> g_nccl;  // by CUDA device

Napi::Value WorldSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), speed::launcher_world_size());
}

// info() -> { mpi, mpiReason, nccl, ncclReason, launcherWorldSize }
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string why_mpi, why_nccl;
  bool mpi = speed::mpi_built(&why_mpi);
  bool nccl = speed::nccl_built(&why_nccl);
  Napi::Object o = Napi::Object::New(env);
  o.Set("mpi", Napi::Boolean::New(env, mpi));
  o.Set("mpiReason", why_mpi);
  o.Set("nccl", Napi::Boolean::New(env, nccl));
  o.Set("ncclReason", why_nccl);
  o.Set("launcherWorldSize", Napi::Number::New(env, speed::launcher_world_size()));
  return o;
}

// init() -> { rank, size, localRank }
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, "parallel.init", [&]() -> Napi::Value {
    std::shared_ptr<speed::Collective> w = speed::mpi_world();
    Napi::Object o = Napi::Object::New(env);
    o.Set("rank", Napi::Number::New(env, w->rank()));
    o.Set("size", Napi::Number::New(env, w->size()));
    o.Set("localRank", Napi::Number::New(env, w->local_rank()));
    return o;
  });
}

// allreduceMax(values: number[] of safe integers) -> number[]
Napi::Value AllreduceMax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw_error(env, "parallel.allreduceMax: values must be an array of integers, got " + describe(info[0]), true);
  Napi::Array a = info[0].As<Napi::Array>();
  if (a.Length() > 4096) throw_error(env, "parallel.allreduceMax: at most 4096 values, got " + std::to_string(a.Length()));
  std::vector<int64_t> v(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i)
    v[i] = require_int(a.Get(i), "parallel.allreduceMax: values[" + std::to_string(i) + "]", -kMaxSafeInt, kMaxSafeInt);
  guard(env, "parallel.allreduceMax", [&] { speed::mpi_world()->allreduce_max(v.data(), v.size()); });
  Napi::Array out = Napi::Array::New(env, v.size());
  for (uint32_t i = 0; i < v.size(); ++i) out.Set(i, Napi::Number::New(env, static_cast<double>(v[i])));
  return out;
}

// broadcastBytes(data: Uint8Array | null, root) -> Uint8Array (root's bytes on every rank)
Napi::Value BroadcastBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int root = static_cast<int>(require_int(info[1], "parallel.broadcastBytes: root", 0, 1 << 20));
  return guard(env, "parallel.broadcastBytes", [&]() -> Napi::Value {
    std::shared_ptr<speed::Collective> w = speed::mpi_world();
    if (root >= w->size()) throw speed::Error("root " + std::to_string(root) + " is not a rank of a world of " + std::to_string(w->size()));
    std::vector<uint8_t> buf;
    if (w->rank() == root) {
      Napi::TypedArray t = require_typed(info[0], napi_uint8_array, "parallel.broadcastBytes: data");
      const uint8_t* p = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
      buf.assign(p, p + t.ByteLength());
    }
    int64_t n = static_cast<int64_t>(buf.size());
    w->broadcast(&n, sizeof(n), root);
    if (n < 0 || n > (int64_t(1) << 32)) throw speed::Error("broadcast of " + std::to_string(n) + " bytes refused (limit 4 GiB)");
    buf.resize(static_cast<size_t>(n));
    if (n > 0) w->broadcast(buf.data(), buf.size(), root);
    Napi::Uint8Array out = Napi::Uint8Array::New(env, buf.size());
    if (!buf.empty()) std::memcpy(out.Data(), buf.data(), buf.size());
    return out;
  });
}

// gatherBytes(data: Uint8Array, root) -> Uint8Array[] (every rank's, on root; [] elsewhere)
Napi::Value GatherBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray t = require_typed(info[0], napi_uint8_array, "parallel.gatherBytes: data");
  const int root = static_cast<int>(require_int(info[1], "parallel.gatherBytes: root", 0, 1 << 20));
  const uint8_t* p = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  std::vector<uint8_t> mine(p, p + t.ByteLength());
  return guard(env, "parallel.gatherBytes", [&]() -> Napi::Value {
    if (root >= speed::mpi_world()->size()) throw speed::Error("root " + std::to_string(root) + " is not a rank");
    std::vector<std::vector<uint8_t>> all = speed::mpi_gather_bytes(mine, root);
    Napi::Array out = Napi::Array::New(env, all.size());
    for (uint32_t r = 0; r < all.size(); ++r) {
      Napi::Uint8Array b = Napi::Uint8Array::New(env, all[r].size());
      if (!all[r].empty()) std::memcpy(b.Data(), all[r].data(), all[r].size());
      out.Set(r, b);
    }
    return out;
  });
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  guard(info.Env(), "parallel.barrier", [&] { speed::mpi_world()->barrier(); });
  return info.Env().Undefined();
}

// abort(code): MPI_Abort of the whole world (the caller has printed why).
Napi::Value Abort(const Napi::CallbackInfo& info) {
  const int code = static_cast<int>(require_int(info[0], "parallel.abort: code", 1, 255));
  guard(info.Env(), "parallel.abort", [&] { speed::mpi_world()->abort(code); });
  return info.Env().Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_nccl.clear();
  }
  guard(info.Env(), "parallel.finalize", [&] { speed::mpi_finalize(); });
  return info.Env().Undefined();
}

// allreduceBench(kind, floats, iters, cudaDevice) -> { ms, gbps } for an averaging
// all-reduce of `floats` float32 values (host buffer for "mpi", device for "nccl").
// gbps is the algorithm bandwidth: buffer bytes / time.
Napi::Value AllreduceBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string kind = require_string(info[0], "parallel.allreduceBench: kind");
  const int64_t n = require_int(info[1], "parallel.allreduceBench: floats", 1, int64_t(1) << 31);
  const int iters = static_cast<int>(require_int(info[2], "parallel.allreduceBench: iters", 1, 100000));
  const int dev = info[3].IsUndefined() ? 0 : static_cast<int>(require_int(info[3], "parallel.allreduceBench: cudaDevice", 0, 1024));
  return guard(env, "parallel.allreduceBench", [&]() -> Napi::Value {
    if (kind != "mpi") throw speed::Error("only kind \"mpi\" is timed here (NCCL: native/tests/cuda/test_cuda_nccl)");
    (void)dev;
    std::shared_ptr<speed::Collective> w = collective_for(kind, dev);
    std::vector<float> buf(static_cast<size_t>(n), 1.0f);
    w->allreduce_mean(buf.data(), buf.size());  // warm-up
    w->barrier();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) w->allreduce_mean(buf.data(), buf.size());
    w->barrier();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
    Napi::Object o = Napi::Object::New(env);
    o.Set("ms", Napi::Number::New(env, ms));
    o.Set("gbps", Napi::Number::New(env, double(n) * sizeof(float) / (ms * 1e6)));
    return o;
  });
}

}  // namespace

std::shared_ptr<speed::Collective> collective_for(const std::string& kind, int cuda_device) {
  if (kind == "mpi") return speed::mpi_world();
  if (kind == "nccl") {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_nccl.find(cuda_device);
    if (it != g_nccl.end()) return it->second;
    auto c = speed::make_nccl_collective(speed::mpi_world(), cuda_device);
    g_nccl[cuda_device] = c;
    return c;
  }
  throw speed::Error("unknown collective \"" + kind + "\": expected \"mpi\" or \"nccl\"");
}

Napi::Object parallel_exports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("worldSize", Napi::Function::New<WorldSize>(env, "worldSize"));
  o.Set("info", Napi::Function::New<Info>(env, "info"));
  o.Set("init", Napi::Function::New<Init>(env, "init"));
  o.Set("allreduceMax", Napi::Function::New<AllreduceMax>(env, "allreduceMax"));
  o.Set("broadcastBytes", Napi::Function::New<BroadcastBytes>(env, "broadcastBytes"));
  o.Set("gatherBytes", Napi::Function::New<GatherBytes>(env, "gatherBytes"));
  o.Set("barrier", Napi::Function::New<Barrier>(env, "barrier"));
  o.Set("abort", Napi::Function::New<Abort>(env, "abort"));
  o.Set("finalize", Napi::Function::New<Finalize>(env, "finalize"));
  o.Set("allreduceBench", Napi::Function::New<AllreduceBench>(env, "allreduceBench"));
  return o;
}

}  // namespace speed_napi
