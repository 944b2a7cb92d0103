// The native benchmark: see include/speed/bench.h for what is timed and how
// FLOPs and bytes are counted. Every timing is the median of `iters` runs after
// one warm-up run, with backend.synchronize() around the clock reads.
#include "speed/bench.h"
#include "speed/profile.h"
#include "speed/vae.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "layout.h"
#include "op_table.h"
#include "speed/cpu.h"

namespace speed {

DiTConfig parse_bench_model(const std::string& spec) {
  const std::string form = "expected PRESET@SIZExCHANNELS, e.g. DiT-S/2@32x4";
  size_t at = spec.find('@');
  if (at == std::string::npos) throw Error("bench model '" + spec + "': " + form);
  std::string rest = spec.substr(at + 1);
  size_t x = rest.find('x');
  if (x == std::string::npos) throw Error("bench model '" + spec + "': " + form);
  DiTConfig base;
  try {
    size_t used = 0;
    base.input_size = std::stoi(rest.substr(0, x), &used);
    if (used != x) throw std::invalid_argument("size");
    std::string ch = rest.substr(x + 1);
    base.in_channels = std::stoi(ch, &used);
    if (used != ch.size()) throw std::invalid_argument("channels");
  } catch (const std::logic_error&) {
    throw Error("bench model '" + spec + "': " + form);
  }
  base.num_classes = 1000;
  base.class_dropout_prob = 0.1;
  base.learn_sigma = true;
  DiTConfig c = dit_preset(spec.substr(0, at), base);
  c.validate();
  return c;
}

bool is_vae_bench_model(const std::string& spec) { return spec.rfind("VAE-", 0) == 0; }

int parse_vae_bench_model(const std::string& spec, VAEConfig* out) {
  const std::string form = "expected VAE-f8@SIZE or VAE-tiny@SIZE, e.g. VAE-f8@256";
  const size_t at = spec.find('@');
  if (!is_vae_bench_model(spec) || at == std::string::npos) throw Error("bench model '" + spec + "': " + form);
  VAEConfig c;
  const std::string kind = spec.substr(4, at - 4);
  if (kind == "tiny") {
    c.block_out_channels = {8, 16};
    c.layers_per_block = 1;
    c.norm_num_groups = 4;
  } else if (kind != "f8") {
    throw Error("bench model '" + spec + "': " + form);
  }
  int size = 0;
  try {
    size_t used = 0;
    const std::string s = spec.substr(at + 1);
    size = std::stoi(s, &used);
    if (used != s.size()) throw std::invalid_argument("size");
  } catch (const std::logic_error&) {
    throw Error("bench model '" + spec + "': " + form);
  }
  if (size < 1 || size > 4096 || size % c.down_factor() != 0)
    throw Error("bench model '" + spec + "': SIZE must be a multiple of " + std::to_string(c.down_factor()) +
                " in [1, 4096]");
  c.validate();
  if (out) *out = c;
  return size;
}

namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double median_ms(Backend<float>& be, int iters, F&& fn) {
  fn();  // warm-up: first-touch of buffers, thread start-up, caches
  be.synchronize();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    be.synchronize();
    auto t0 = Clock::now();
    fn();
    be.synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  size_t n = ms.size();
  return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

// Backend buffers that free themselves.
struct Buffers {
  Backend<float>& be;
  std::vector<void*> owned;
  explicit Buffers(Backend<float>& b) : be(b) {}
  ~Buffers() {
    for (void* p : owned) be.free_bytes(p);
  }
  float* f(size_t n, uint64_t seed = 0, double scale = 1.0) {
    float* p = static_cast<float*>(be.alloc_bytes(std::max<size_t>(n, 1) * sizeof(float)));
    owned.push_back(p);
    be.normal(p, n, 0xBE4C0000u + seed, 0);
    if (scale != 1.0) {
      // scale through a host round trip only for small tensors (setup, not timed)
      std::vector<float> h(n);
      be.to_host(h.data(), p, n * sizeof(float));
      for (float& v : h) v = static_cast<float>(v * scale);
      be.to_device(p, h.data(), n * sizeof(float));
    }
    return p;
  }
};

}  // namespace

std::vector<BenchRow> run_bench(const BenchOptions& o, const std::function<void(const BenchRow&)>& on_row) {
  if (o.iters < 1) throw Error("bench: iters must be >= 1, got " + std::to_string(o.iters));
  if (o.models.empty()) throw Error("bench: no models given (e.g. DiT-S/2@32x4)");
  if (o.batches.empty()) throw Error("bench: no batch sizes given");
  for (int b : o.batches)
    if (b < 1) throw Error("bench: batch sizes must be >= 1, got " + std::to_string(b));
  if (o.gemm_size < 16) throw Error("bench: gemm_size must be >= 16");
  std::vector<DiTConfig> cfgs;
  std::vector<std::string> dit_names, vae_names;
  for (const std::string& s : o.models) {
    if (is_vae_bench_model(s)) {
      parse_vae_bench_model(s);
      vae_names.push_back(s);
    } else {
      cfgs.push_back(parse_bench_model(s));
      dit_names.push_back(s);
    }
  }

  std::shared_ptr<Backend<float>> bp;
  if (o.device == "cpu") {
    bp = make_cpu_backend<float>(o.threads);
  } else if (o.device == "cuda") {
    CudaOptions co;
    co.math = o.cuda_math;
    bp = make_cuda_backend(co);  // throws with the reason when unavailable
  } else {
    throw Error("bench: device must be 'cpu' or 'cuda', got '" + o.device + "'");
  }
  // Profiling wraps the backend for the whole run (a pass-through when not recording).
  std::shared_ptr<ProfilingBackend<float>> prof;
  if (o.profile) bp = prof = make_profiling_backend(bp);
  Backend<float>& be = *bp;
  const std::string dev = be.name();
  std::vector<BenchRow> rows;
  double gemm_rate = 0;
  auto emit = [&](const std::string& model, int batch, const std::string& what, double ms, double images,
                  double flops, double bytes, size_t activation_bytes = 0, long calls = 0, double share = 0) {
    BenchRow r;
    r.model = model;
    r.device = dev;
    r.batch = batch;
    r.what = what;
    r.ms = ms;
    r.images_per_sec = images > 0 ? images / (ms * 1e-3) : 0;
    r.gflops = flops > 0 ? flops / (ms * 1e-3) * 1e-9 : 0;
    r.gbps = bytes > 0 ? bytes / (ms * 1e-3) * 1e-9 : 0;
    r.ratio_to_gemm = (r.gflops > 0 && gemm_rate > 0) ? r.gflops / gemm_rate : 0;
    r.activation_mb = activation_bytes / 1048576.0;
    r.calls = calls;
    r.share = share;
    rows.push_back(r);
    if (on_row) on_row(r);
  };

  {  // the large-GEMM reference rate, on the same backend
    const int G = o.gemm_size;
    Buffers buf(be);
    float* a = buf.f(size_t(G) * G, 1);
    float* w = buf.f(size_t(G) * G, 2);
    float* y = buf.f(size_t(G) * G, 3);
    double ms = median_ms(be, o.iters, [&] { be.linear_forward(a, w, nullptr, y, nullptr, G, G, G, Act::None); });
    double flops = 2.0 * G * G * G;
    gemm_rate = flops / (ms * 1e-3) * 1e-9;
    // The row names the GEMM that produced it: on the CPU the choice is made at run time (the
    // built-in AVX-512 / AVX2 / portable micro-kernel or BLAS: cpu_gemm_name), and every
    // x GEMM ratio of the run is relative to it.
    const std::string impl = dev == "cpu" ? std::string(cpu_gemm_name())
                                          : std::string("cuBLASLt (") +
                                                (o.cuda_math == CudaMath::BF16   ? "bf16"
                                                 : o.cuda_math == CudaMath::TF32 ? "tf32"
                                                                                 : "fp32") +
                                                ")";
    emit("-", 0, "gemm " + std::to_string(G) + "^3 " + impl, ms, 0, flops, 0);
  }

  DiffusionTables tabs = linear_diffusion_tables(1000);
  for (size_t mi = 0; mi < cfgs.size(); ++mi) {
    const DiTConfig& c = cfgs[mi];
    const std::string& name = dit_names[mi];
    DiT<float> model(c, bp);
    model.init(0);
    model.set_tables(tabs);
    model.set_recompute(o.recompute);
    const double fwd = dit_forward_flops_per_image(c);
    const int C = c.in_channels, Co = c.out_channels(), HW = c.input_size * c.input_size;
    for (int B : o.batches) {
      std::mt19937_64 rng(1234 + B);
      std::normal_distribution<float> nd(0.f, 0.5f);
      std::uniform_int_distribution<int> ut(0, 999), uy(0, c.num_classes);
      std::vector<float> x0(size_t(B) * C * HW), w(B, 1.0f), out(size_t(B) * Co * HW);
      std::vector<int32_t> t(B), y(B);
      for (float& v : x0) v = nd(rng);
      for (int i = 0; i < B; ++i) { t[i] = ut(rng); y[i] = uy(rng); }

      double ms = median_ms(be, o.iters, [&] { model.forward(x0.data(), t.data(), y.data(), B, out.data(), false); });
      emit(name, B, "forward", ms, B, fwd * B, 0, model.activation_bytes(B, false));
      TrainHyper hp;
      hp.optim.max_grad_norm = 1.0;
      ms = median_ms(be, o.iters, [&] { model.train_step(x0.data(), t.data(), y.data(), w.data(), B, hp); });
      // FLOPs counted as without recomputation (its extra forward is overhead)
      emit(name, B, o.recompute ? "train_step recompute" : "train_step", ms, B, 3.0 * fwd * B, 0,
           model.activation_bytes(B, true));
      if (prof) {
        prof->record(true);
        model.train_step(x0.data(), t.data(), y.data(), w.data(), B, hp);
        prof->record(false);
        std::vector<OpProfile> ops = prof->rows();
        double total = 0;
        for (const OpProfile& r : ops) total += r.ms;
        for (const OpProfile& r : ops)
          emit(name, B, "step " + r.op + (r.shape.empty() ? "" : " " + r.shape), r.ms, 0, r.flops, 0, 0, r.calls,
               total > 0 ? r.ms / total : 0);
        emit(name, B, "step total (profiled)", total, B, 3.0 * fwd * B, 0, 0, 0, 1.0);
      }
      if (!o.kernels) continue;

      // each kernel alone at this model's shapes: the op table's perf cases (op_table.h), in
      // their order, each with its own buffers filled on the backend
      for (const ops::OpCase& k : ops::perf_cases(c, B, model.num_trainable(), tabs, t)) {
        ops::CaseRun<float> run(be, k);
        run.fill_for_perf();
        if (!k.perf_fwd.empty()) {
          ms = median_ms(be, o.iters, [&] { run.forward(); });
          emit(name, B, k.perf_fwd, ms, 0, k.fwd_flops, k.fwd_bytes);
        }
        if (!k.perf_bwd.empty()) {
          ms = median_ms(be, o.iters, [&] { run.backward(false); });
          emit(name, B, k.perf_bwd, ms, 0, k.bwd_flops, k.bwd_bytes);
        }
      }
    }
  }
  // ---- VAE encode / decode (random weights; speed/vae.h) --------------------------------
  for (const std::string& name : vae_names) {
    VAEConfig vc;
    const int S = parse_vae_bench_model(name, &vc);
    VAE<float> vae(vc, bp);
    {
      std::mt19937_64 rng(99);
      for (const ParamInfo& p : vae.params()) {
        const bool vec = p.shape.size() == 1;
        const bool norm_w = vec && p.name.find("norm") != std::string::npos && p.name.find("weight") != std::string::npos;
        const double bound = vec ? 0.05 : std::sqrt(3.0 * p.shape[0] / double(p.numel));
        std::uniform_real_distribution<float> u(-float(bound), float(bound));
        std::vector<float> h(p.numel);
        for (float& v : h) v = norm_w ? 1.0f + u(rng) : u(rng);
        vae.write_param(p.name, h.data());
      }
    }
    const int f = vc.down_factor(), h = S / f;
    const double ef = vae.encode_flops(S, S), df = vae.decode_flops(S, S);
    for (int B : o.batches) {
      std::mt19937_64 rng(77 + B);
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      std::vector<float> x(size_t(B) * vc.in_channels * S * S), z(size_t(B) * vc.latent_channels * h * h),
          y(size_t(B) * vc.out_channels * S * S);
      for (float& v : x) v = u(rng);
      const size_t act = vae.activation_bytes(B, S, S);
      double ms = median_ms(be, o.iters, [&] { vae.encode(x.data(), B, S, S, z.data(), false, 0, 0, B); });
      emit(name, B, "vae encode", ms, B, ef * B, 0, act);
      ms = median_ms(be, o.iters, [&] { vae.decode(z.data(), B, h, h, y.data(), B); });
      emit(name, B, "vae decode", ms, B, df * B, 0, act);
      if (prof) {
        for (int dir = 0; dir < 2; ++dir) {
          prof->record(true);
          if (dir == 0)
            vae.encode(x.data(), B, S, S, z.data(), false, 0, 0, B);
          else
            vae.decode(z.data(), B, h, h, y.data(), B);
          prof->record(false);
          double total = 0;
          for (const OpProfile& r : prof->rows()) total += r.ms;
          const std::string tag = dir == 0 ? "encode " : "decode ";
          for (const OpProfile& r : prof->rows())
            emit(name, B, tag + r.op + (r.shape.empty() ? "" : " " + r.shape), r.ms, 0, r.flops, 0, 0, r.calls,
                 total > 0 ? r.ms / total : 0);
        }
      }
    }
  }
  return rows;
}

}  // namespace speed
