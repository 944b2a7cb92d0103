// The op table's test mode (native/src/core/op_table.h): every case marked kTest runs on the
// CUDA backend and on the CPU backend from the same seeded inputs:
//   test_cuda_ops fp32|tf32|bf16 [filter]     (filter: a substring of a case's section)
// Outputs, then gradients, are compared as ||gpu - cpu|| / ||cpu|| against the case's
// tolerance for the math mode (1e-5 for most ops in fp32; matrix products 2e-3 in tf32,
// 2e-2 in bf16). Device outputs and gradients are poisoned with NaN before each call, so an
// unwritten element fails; both backward passes start from the CPU's forward outputs, once
// accumulating (+=) and once overwriting (=). Per case, as the table says: the backward gives
// the same bits a second time, gradients the CUDA op may skip (null), and in bf16 the
// comparison with the CUDA float32 path and its environment fallback.
// Then the optimizer's skip rule and error messages (not op comparisons).
// Exits 77 (skipped) when no GPU is usable.
#include <cstdint>

#include "../../src/core/op_table.h"
#include "cuda_test_util.h"

using namespace speed;
using namespace speed::ops;
using namespace cudatest;

static std::shared_ptr<Backend<float>> G, C;  // gpu, cpu
static std::shared_ptr<Backend<float>> F32;  // CUDA backend in FP32 math (bf16 runs with cross_fp32 cases)
static CudaMath g_math;
static std::mt19937 rng(1234);
static const char* g_filter = nullptr;

static bool want(const std::string& section) { return !g_filter || std::strstr(section.c_str(), g_filter); }

template <typename T>
struct Pair {  // the same tensor on both backends
  DBuf<T> c, g;
  Pair(const std::vector<T>& h) : c(*C, h), g(*G, h) {}
  explicit Pair(size_t n) : c(*C, n), g(*G, n) { g.poison(); std::vector<T> z(n, T(0)); c.set(z); }
  void set(const std::vector<T>& h) { c.set(h); g.set(h); }
  void poison() { g.poison(); }
};
using PairF = Pair<float>;  // not cudatest::PF (PairBuf), which test_cuda_ops does not use

static std::vector<float> region_of(const std::vector<double>& v, const TensorSpec& s) {
  std::vector<float> o;
  for (size_t i = 0; i < v.size(); ++i)
    if (!s.region || s.region(i)) o.push_back(float(v[i]));
  return o;
}
static bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    float x = float(a[i]), y = float(b[i]);
    if (std::memcmp(&x, &y, sizeof x) != 0) return false;
  }
  return true;
}
// Elementwise: every |got - ref| <= tol max(1, |ref|); prints how many are identical.
static void expect_elementwise(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                               double tol) {
  size_t exact = 0, close = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    exact += float(got[i]) == float(ref[i]);
    close += std::fabs(got[i] - ref[i]) <= tol * std::max(1.0, std::fabs(ref[i]));
  }
  const bool ok = got.size() == ref.size() && close == got.size();
  std::printf("%s %s: %zu/%zu identical, %zu within %.0e\n", ok ? "ok  " : "FAIL", what.c_str(), exact, got.size(),
              close, tol);
  if (!ok) ++g_failures;
}
static void compare(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                    const TensorSpec& s, double tol) {
  if (s.tol.elementwise)
    expect_elementwise(what, got, ref, tol);
  else
    expect_close(what, region_of(got, s), region_of(ref, s), tol);
}

static bool is_output(Role r) { return r == Role::Out || r == Role::InOut; }
static bool bwd_result(const TensorSpec& s) { return s.role == Role::DIn || (s.role == Role::DOut && s.bwd_writes); }

// Sets the case's environment for its lifetime (restoring what was there).
struct ScopedEnv {
  std::vector<std::pair<std::string, std::string>> saved;
  std::vector<bool> had;
  explicit ScopedEnv(const std::vector<std::pair<std::string, std::string>>& env) {
    for (auto& [k, v] : env) {
      const char* old = std::getenv(k.c_str());
      had.push_back(old != nullptr);
      saved.push_back({k, old ? old : ""});
      setenv(k.c_str(), v.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (size_t i = 0; i < saved.size(); ++i)
      if (had[i])
        setenv(saved[i].first.c_str(), saved[i].second.c_str(), 1);
      else
        unsetenv(saved[i].first.c_str());
  }
};

using Outs = std::vector<std::vector<double>>;  // by tensor index; empty where not collected

static Outs collect(const OpCase& c, CaseRun<float>& r, bool (*which)(const TensorSpec&)) {
  Outs o(c.t.size());
  for (size_t i = 0; i < c.t.size(); ++i)
    if (which(c.t[i])) o[i] = r.download(int(i));
  return o;
}
static bool out_spec(const TensorSpec& s) { return is_output(s.role); }

// One backward from `fwd` (forward outputs copied in), DOut from h, DIn from their fill
// when accumulating, else poisoned.
static void prep_backward(const OpCase& c, CaseRun<float>& r, const Host& h, const Outs& fwd, bool accum) {
  for (size_t i = 0; i < c.t.size(); ++i) {
    const TensorSpec& s = c.t[i];
    if (is_output(s.role)) r.upload(int(i), fwd[i]);
    if (s.role == Role::DOut) r.upload(int(i), h.v[i]);
    if (s.role == Role::DIn) {
      if (accum && s.accum)
        r.upload(int(i), h.v[i]);
      else
        r.poison(int(i));
    }
  }
}

static void test_case(const OpCase& c) {
  ScopedEnv env(c.env);
  const std::string tag = c.name + (g_math == CudaMath::BF16 && c.cross_fp32 ? " [bf16]" : "");
  const Host h = make_host(c);
  CaseRun<float> rc(*C, c), rg(*G, c);
  rc.load_inputs(h);
  rg.load_inputs(h);
  rc.forward();
  rg.forward();
  const Outs fc = collect(c, rc, out_spec), fg = collect(c, rg, out_spec);
  for (size_t i = 0; i < c.t.size(); ++i)
    if (is_output(c.t[i].role)) compare(tag + " " + c.t[i].name, fg[i], fc[i], c.t[i], c.t[i].tol.of(g_math));
  if (!rc.bufs().scalars.empty()) {
    const auto &sc = rc.bufs().scalars, &sg = rg.bufs().scalars;
    bool ok = sc.size() == sg.size();
    std::string detail;
    for (size_t k = 0; ok && k < sc.size(); ++k) {
      ok &= std::fabs(sc[k] - sg[k]) <= c.scalar_tol * std::fabs(sc[k]);
      detail += " " + std::to_string(sg[k]) + " vs cpu " + std::to_string(sc[k]);
    }
    expect(ok, tag + " returned values" + detail);
  }
  Outs gc_eq, gg_eq;  // the (=) gradients
  if (c.has_grad()) {
    bool any_accum = false;
    for (const TensorSpec& s : c.t) any_accum |= s.role == Role::DIn && s.accum;
    for (bool accum : {true, false}) {
      if (accum && !any_accum) continue;
      prep_backward(c, rc, h, fc, accum);
      prep_backward(c, rg, h, fc, accum);
      rc.backward(accum);
      rg.backward(accum);
      const Outs bc = collect(c, rc, bwd_result), bg = collect(c, rg, bwd_result);
      for (size_t i = 0; i < c.t.size(); ++i) {
        const TensorSpec& s = c.t[i];
        if (!bwd_result(s)) continue;
        if (!accum && any_accum && !s.accum) continue;  // compared in the (+=) run
        const std::string mark = s.accum ? (accum ? "(+=)" : "(=)") : "";
        compare(tag + " " + s.name + mark, bg[i], bc[i], s, s.tol.of(g_math));
      }
      if (!accum) gc_eq = bc, gg_eq = bg;
    }
    if (c.det_bwd >> int(g_math) & 1) {  // deterministic: the same call again gives the same bits
      prep_backward(c, rg, h, fc, false);
      rg.backward(false);
      const Outs again = collect(c, rg, bwd_result);
      bool same = true;
      for (size_t i = 0; i < c.t.size(); ++i)
        if (c.t[i].role == Role::DIn) same &= same_bits(again[i], gg_eq[i]);
      expect(same, tag + " backward bitwise identical on a second run");
    }
    for (int skip : c.optional_grads) {  // the CUDA op asked to skip one gradient (null)
      prep_backward(c, rg, h, fc, false);
      void* keep = rg.bufs().p[skip];
      rg.bufs().p[skip] = nullptr;
      rg.backward(false);
      rg.bufs().p[skip] = keep;
      const Outs bg = collect(c, rg, bwd_result);
      for (size_t i = 0; i < c.t.size(); ++i)
        if (c.t[i].role == Role::DIn && int(i) != skip)
          compare(tag + " " + c.t[i].name + " (" + c.t[skip].name + " null)", bg[i], gc_eq[i], c.t[i],
                  c.t[i].tol.of(g_math));
    }
  }
  if (g_math != CudaMath::BF16 || !c.cross_fp32) return;
  {  // against the CUDA float32 path on the same inputs
    CaseRun<float> rf(*F32, c);
    rf.load_inputs(h);
    rf.forward();
    const Outs ff = collect(c, rf, out_spec);
    for (size_t i = 0; i < c.t.size(); ++i)
      if (is_output(c.t[i].role)) compare(tag + " " + c.t[i].name + " vs cuda fp32", fg[i], ff[i], c.t[i], 2e-2);
    if (c.has_grad()) {
      prep_backward(c, rf, h, fc, false);
      rf.backward(false);
      const Outs bf = collect(c, rf, bwd_result);
      for (size_t i = 0; i < c.t.size(); ++i)
        if (c.t[i].role == Role::DIn) compare(tag + " " + c.t[i].name + " vs cuda fp32", gg_eq[i], bf[i], c.t[i], 2e-2);
    }
  }
  if (!c.fallback_env.first.empty()) {  // the env fallback runs the float32 kernels in bf16 mode
    ScopedEnv fb({c.fallback_env});
    const std::string fbtag = " (" + c.fallback_env.first + "=" + c.fallback_env.second + ")";
    rg.load_inputs(h);
    rg.forward();
    const Outs f2 = collect(c, rg, out_spec);
    for (size_t i = 0; i < c.t.size(); ++i)
      if (is_output(c.t[i].role)) compare(tag + " " + c.t[i].name + fbtag, f2[i], fc[i], c.t[i], c.t[i].tol.fp32);
    if (c.has_grad()) {
      prep_backward(c, rg, h, fc, false);
      rg.backward(false);
      const Outs b2 = collect(c, rg, bwd_result);
      for (size_t i = 0; i < c.t.size(); ++i)
        if (c.t[i].role == Role::DIn) compare(tag + " " + c.t[i].name + fbtag, b2[i], gc_eq[i], c.t[i], c.t[i].tol.fp32);
    }
  }
}

// The optimizer's skip rule (not an op comparison: what it must leave untouched): a NaN loss,
// an Inf gradient, or an update that would store a non-finite value skips the step and
// writes nothing, on both backends.
static void test_optimizer_skip() {
  size_t n = 100003;
  int N = 4;
  auto ph = randn(n, rng), gh = randn(n, rng, 0.01f), mh = randn(n, rng, 0.001f), vh = randn(n, rng, 0.001f);
  for (auto& v : vh) v = v * v;
  PairF p(ph), g(gh), m(mh), v(vh), ema(ph), losses(std::vector<float>{0.5f, 0.25f, 1.f, 2.f});
  OptimHyper hp;
  hp.lr = 1e-3; hp.weight_decay = 0.01; hp.max_grad_norm = 1.0; hp.ema_decay = 0.99; hp.step = 3;
  OptimResult rc = C->optimizer_step(p.c.p, g.c.p, m.c.p, v.c.p, ema.c.p, n, hp, losses.c.p, N);
  OptimResult rg = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, hp, losses.g.p, N);
  expect(!rc.skipped && !rg.skipped, "optimizer: finite step not skipped");
  // a NaN loss skips the step: nothing moves
  auto before = p.g.get(), mb = m.g.get(), eb = ema.g.get();
  std::vector<float> bad = {0.5f, NAN, 1.f, 2.f};
  losses.set(bad);
  OptimResult rs = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, hp, losses.g.p, N);
  expect(rs.skipped && p.g.get() == before && m.g.get() == mb && ema.g.get() == eb,
         "optimizer: NaN loss -> skipped, params/moments/EMA untouched");
  // a non-finite gradient likewise
  auto gb = gh;
  gb[n / 2] = INFINITY;
  g.set(gb);
  losses.set(std::vector<float>{0.5f, 0.25f, 1.f, 2.f});
  rs = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, hp, losses.g.p, N);
  expect(rs.skipped && p.g.get() == before, "optimizer: Inf gradient -> skipped, params untouched");
  // finite loss and gradient, but an update that would store a non-finite value
  // (lr = 1e38; a gradient element whose square overflows v, in the float4
  // body and in the scalar tail): skipped with update_nonfinite on both backends, and
  // nothing written on the GPU
  g.set(gh);
  auto vbef = v.g.get();
  {
    OptimHyper h = hp;
    h.lr = 1e38;
    h.weight_decay = 10;  // p * (1 - lr wd) overflows for |p| > 0.34: certain on both backends
    OptimResult c1 = C->optimizer_step(p.c.p, g.c.p, m.c.p, v.c.p, ema.c.p, n, h, losses.c.p, N);
    OptimResult g1 = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, h, losses.g.p, N);
    expect(c1.skipped && c1.update_nonfinite && g1.skipped && g1.update_nonfinite && p.g.get() == before &&
               m.g.get() == mb && v.g.get() == vbef && ema.g.get() == eb,
           "optimizer: lr 1e38, wd 10 -> skipped as a non-finite update (cpu and gpu), params/moments/EMA untouched");
  }
  for (size_t at : {n / 3, n - 1}) {
    OptimHyper h = hp;
    h.max_grad_norm = 0;  // the huge element reaches v unclipped
    auto gv = gh;
    gv[at] = 1e30f;
    g.set(gv);
    OptimResult g1 = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, h, losses.g.p, N);
    expect(g1.skipped && g1.update_nonfinite && std::isfinite(g1.grad_norm) && p.g.get() == before &&
               m.g.get() == mb && v.g.get() == vbef && ema.g.get() == eb,
           "optimizer: g[" + std::to_string(at) + "]^2 overflows v -> skipped, nothing written");
  }
}

static void test_errors() {
  bool threw = false;
  try {
    G->alloc_bytes(size_t(1) << 50);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("out of device memory") != std::string::npos;
    std::printf("     (message: %s)\n", e.what());
  }
  expect(threw, "alloc_bytes: OOM is a speed::Error saying so");
  threw = false;
  try {
    PairF q(4 * 3 * 2 * 40), o(4 * 2 * 40), l(4 * 2);
    G->attention_forward(q.g.p, o.g.p, l.g.p, 1, 4, 2, 40);
  } catch (const Error& e) {
    threw = true;
    std::printf("     (message: %s)\n", e.what());
  }
  expect(threw, "attention: unsupported head_dim is a clear error");
}

int main(int argc, char** argv) {
  g_math = parse_math(argc, argv);
  g_filter = argc > 2 ? argv[2] : nullptr;
  G = cuda_or_skip(g_math);
  C = make_cpu_backend<float>(0);
  std::printf("CUDA ops vs CPU, math %s%s%s\n", math_name(g_math), g_filter ? ", filter " : "", g_filter ? g_filter : "");
  int cases = 0;
  for (const OpCase& c : op_cases()) {
    if (!(c.modes & kTest) || !(c.maths >> int(g_math) & 1) || !want(c.section)) continue;
    ++cases;
    try {
      if (g_math == CudaMath::BF16 && c.cross_fp32 && !F32) {
        CudaOptions fo;
        fo.math = CudaMath::FP32;
        F32 = make_cuda_backend(fo);
      }
      test_case(c);
    } catch (const std::exception& e) {
      std::printf("FAIL %s: exception: %s\n", c.name.c_str(), e.what());
      ++g_failures;
    }
  }
  std::printf("%d op cases (test mode)\n", cases);
  try {
    if (want("optimizer")) test_optimizer_skip();
    if (want("errors")) test_errors();
    F32.reset();
    G->synchronize();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}
