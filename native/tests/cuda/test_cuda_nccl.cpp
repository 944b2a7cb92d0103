// NCCL collective (data parallelism) on GPUs: all-reduce sum/avg, broadcast, the DiT
// train step with the collective attached, and the all-reduce rate at DiT
// gradient sizes. One GPU: `test_cuda_nccl`; W GPUs of one machine:
// `mpirun -np W test_cuda_nccl` (rank r uses GPU local_rank).
// Exits 77 (skipped) without a GPU or without NCCL in this build.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "speed/collective.h"
#include "speed/cuda.h"
#include "speed/dit.h"

namespace {

int g_fail = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_fail;
}

// The bootstrap of a single process (no launcher): a world of one.
class SelfCollective final : public speed::Collective {
 public:
  std::string name() const override { return "self"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void allreduce_mean(float*, size_t) override {}
  void allreduce_mean(double*, size_t) override {}
  void allreduce_max(int64_t*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void allgather(const void* s, size_t b, void* r) override { std::memcpy(r, s, b); }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

}  // namespace

int main() {
  std::string why;
  if (!speed::cuda_available(&why)) {
    std::printf("SKIP: no usable GPU: %s\n", why.c_str());
    return 77;
  }
  if (!speed::nccl_built(&why)) {
    std::printf("SKIP: %s\n", why.c_str());
    return 77;
  }
  try {
    std::shared_ptr<speed::Collective> boot;
    if (speed::launcher_world_size() > 1) boot = speed::mpi_world();
    else boot = std::make_shared<SelfCollective>();
    const int W = boot->size(), R = boot->rank(), dev = boot->local_rank();
    auto be = speed::make_cuda_backend({dev, speed::CudaMath::FP32});
    auto nccl = speed::make_nccl_collective(boot, dev);
    if (R == 0) std::printf("world %d (bootstrap %s), rank 0 on GPU %d\n", W, boot->name().c_str(), dev);

    // sum and average of (rank + 1) * (i % 7)
    const size_t n = (size_t(1) << 20) + 3;
    std::vector<float> h(n), back(n);
    for (size_t i = 0; i < n; ++i) h[i] = float((R + 1) * (i % 7));
    float* d = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
    be->to_device(d, h.data(), n * sizeof(float));
    nccl->allreduce_sum(d, n);
    be->to_host(back.data(), d, n * sizeof(float));
    const double ranks = W * (W + 1) / 2.0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; ++i) ok = back[i] == float(ranks * (i % 7));
    check(ok, "allreduce_sum of 1M+3 floats");
    be->to_device(d, h.data(), n * sizeof(float));
    nccl->allreduce_mean(d, n);
    be->to_host(back.data(), d, n * sizeof(float));
    ok = true;
    for (size_t i = 0; i < n && ok; ++i) ok = std::fabs(back[i] - float(ranks / W * (i % 7))) <= 1e-6f * (1 + back[i]);
    check(ok, "allreduce_mean (ncclAvg)");
    for (size_t i = 0; i < n; ++i) h[i] = R == 0 ? float(i) : -1.0f;
    be->to_device(d, h.data(), n * sizeof(float));
    nccl->broadcast(d, n * sizeof(float), 0);
    be->to_host(back.data(), d, n * sizeof(float));
    ok = true;
    for (size_t i = 0; i < n && ok; ++i) ok = back[i] == float(i);
    check(ok, "broadcast from rank 0");
    be->free_bytes(d);

    // DiT train step with the collective, every rank on the same shard: the
    // average of identical gradients is exact, so the weights equal a model
    // without a collective bitwise (FP32 math).
    speed::DiTConfig cfg = speed::dit_preset("DiT-S/2");
    cfg.input_size = 16;
    cfg.num_classes = 10;
    cfg.depth = 4;
    speed::DiffusionTables tab;
    const int T = 100;
    for (int t = 0; t < T; ++t) {
      double beta = 1e-4 + (0.02 - 1e-4) * t / (T - 1), abar = 1;
      for (int s = 0; s <= t; ++s) abar *= 1 - (1e-4 + (0.02 - 1e-4) * s / (T - 1));
      tab.sqrt_abar.push_back(std::sqrt(abar));
      tab.sqrt_1m_abar.push_back(std::sqrt(1 - abar));
      tab.sqrt_recip_abar.push_back(1 / std::sqrt(abar));
      tab.sqrt_recipm1_abar.push_back(std::sqrt(1 / abar - 1));
      tab.coef1.push_back(0.5);
      tab.coef2.push_back(0.5);
      tab.log_beta.push_back(std::log(beta));
      tab.post_log_var.push_back(std::log(beta));
    }
    speed::DiT<float> a(cfg, be), b(cfg, be);
    a.init(7);
    b.init(7);
    a.set_tables(tab);
    b.set_tables(tab);
    b.set_collective(nccl, true);  // the data-parallel path (buckets on NCCL's stream) even on one GPU
    setenv("SPEED_DIST_BUCKET_MB", "1", 1);  // DiT-S/2 depth 4: several buckets
    b.broadcast_state(0);
    const int N = 4;
    const size_t per = size_t(cfg.in_channels) * cfg.input_size * cfg.input_size;
    std::vector<float> x0(N * per), w(N, 1.0f);
    for (size_t i = 0; i < x0.size(); ++i) x0[i] = std::sin(0.1 * double(i));
    std::vector<int32_t> t = {3, 30, 60, 99}, y = {1, 2, 3, 10};
    speed::TrainHyper hp;
    hp.optim.lr = 1e-3;
    hp.optim.max_grad_norm = 1.0;
    double gn_a = 0, gn_b = 0;
    for (int s = 0; s < 3; ++s) {
      gn_a = a.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp).grad_norm;
      speed::TrainHyper hb = hp;
      hb.global_batch = N * W;  // every rank's slice is samples [0, N): shard_offset 0
      speed::TrainResult rb = b.train_step(x0.data(), t.data(), y.data(), w.data(), N, hb);
      gn_b = rb.grad_norm;
      check(rb.loss.size() == size_t(N) * W, "train step returns the global batch's losses");
      // the noise stream of a advances by N samples, of b by N * W: realign
      b.set_noise_state(a.noise_seed(), a.noise_offset());
    }
    // bitwise for W <= 2 (x + x = 2x exactly); beyond, a ring's x + x + x can round
    double worst = 0;
    bool same = true;
    for (const speed::ParamInfo& p : a.params()) {
      if (!p.trainable) continue;
      std::vector<float> pa(p.numel), pb(p.numel);
      a.read_param(p.name, speed::Slot::Model, pa.data());
      b.read_param(p.name, speed::Slot::Model, pb.data());
      same = same && std::memcmp(pa.data(), pb.data(), p.numel * sizeof(float)) == 0;
      for (size_t i = 0; i < p.numel; ++i)
        worst = std::max(worst, std::fabs(double(pa[i]) - pb[i]) / (std::fabs(double(pa[i])) + 1e-6));
    }
    if (W <= 2)
      check(same && gn_a == gn_b, "DiT-S/2 (depth 4) 3 train steps with the NCCL collective == without, bitwise (grad norm " +
                                      std::to_string(gn_b) + ")");
    else
      check(worst <= 1e-5, "DiT-S/2 (depth 4) 3 train steps with the NCCL collective vs without: max rel " + std::to_string(worst));

    // all-reduce rate at the gradient sizes of DiT-S/2, B/2 and XL/2
    for (const char* m : {"DiT-S/2", "DiT-B/2", "DiT-XL/2"}) {
      speed::DiTConfig c = speed::dit_preset(m);
      size_t g = 0;
      {
        speed::DiT<float> probe(c, be);  // only for its parameter count
        g = probe.num_trainable();
      }
      float* buf = static_cast<float*>(be->alloc_bytes(g * sizeof(float)));
      be->fill(buf, 1.0f, g);
      be->synchronize();
      nccl->allreduce_mean(buf, g);
      const int iters = 5;
      boot->barrier();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) nccl->allreduce_mean(buf, g);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
      be->free_bytes(buf);
      const double algbw = g * 4.0 / (ms * 1e6), busbw = algbw * (W > 1 ? 2.0 * (W - 1) / W : 1.0);
      if (R == 0)
        std::printf("{\"what\":\"nccl_allreduce\",\"model\":\"%s\",\"floats\":%zu,\"world\":%d,\"ms\":%.3f,\"algbw_GBps\":%.1f,\"busbw_GBps\":%.1f}\n",
                    m, g, W, ms, algbw, busbw);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_fail ? "FAIL" : "PASS", g_fail);
  speed::mpi_finalize();
  return g_fail ? 1 : 0;
}
