// Every CUDA backend op against the CPU backend on random inputs:
//   test_cuda_ops fp32|tf32|bf16 [filter]
// Relative error ||gpu - cpu|| / ||cpu|| under 1e-5 (fp32 mode; matrix
// products 2e-2 in bf16, 2e-3 in tf32). Device outputs are poisoned with NaN
// before each call, so an unwritten element fails. Odd sizes throughout: batch
// 1, token counts that are not a multiple of any tile, head_dim 32/64/72.
// Exits 77 (skipped) when no GPU is usable.
#include <cstdint>

#include "cuda_test_util.h"

using namespace speed;
using namespace cudatest;

static std::shared_ptr<Backend<float>> G, C;  // gpu, cpu
static CudaMath g_math;
static std::mt19937 rng(1234);
static const char* g_filter = nullptr;

static bool want(const char* name) { return !g_filter || std::strstr(name, g_filter); }
static double tol_gemm() {
  return g_math == CudaMath::BF16 ? 2e-2 : g_math == CudaMath::TF32 ? 2e-3 : 1e-5;
}

template <typename T>
struct Pair {  // the same tensor on both backends
  DBuf<T> c, g;
  Pair(const std::vector<T>& h) : c(*C, h), g(*G, h) {}
  explicit Pair(size_t n) : c(*C, n), g(*G, n) { g.poison(); std::vector<T> z(n, T(0)); c.set(z); }
  void set(const std::vector<T>& h) { c.set(h); g.set(h); }
  void poison() { g.poison(); }
};
using PF = Pair<float>;
using PI = Pair<int32_t>;

static void cmp(const std::string& what, PF& p, double tol) { expect_close(what, p.g.get(), p.c.get(), tol); }

static void test_linear(int M, int K, int N, Act act, bool bias) {
  std::string tag = "linear M" + std::to_string(M) + " K" + std::to_string(K) + " N" + std::to_string(N) +
                    (act == Act::GeluTanh ? " gelu" : "") + (bias ? " bias" : "");
  float ws = 1.0f / std::sqrt((float)K);
  PF x(randn((size_t)M * K, rng)), w(randn((size_t)N * K, rng, ws)), b(randn(N, rng, 0.5f));
  PF y((size_t)M * N), pre((size_t)M * N);
  C->linear_forward(x.c.p, w.c.p, bias ? b.c.p : nullptr, y.c.p, pre.c.p, M, K, N, act);
  G->linear_forward(x.g.p, w.g.p, bias ? b.g.p : nullptr, y.g.p, pre.g.p, M, K, N, act);
  cmp(tag + " y", y, tol_gemm());
  if (act != Act::None) cmp(tag + " pre", pre, tol_gemm());
  // backward: dx accumulates onto random values; dy is overwritten when act
  auto dyh = randn((size_t)M * N, rng);
  auto dx0 = randn((size_t)M * K, rng);
  PF dy(dyh), dx(dx0), dw((size_t)N * K), db(N);
  // feed the CPU's pre to both so that only the backward is compared
  std::vector<float> preh = pre.c.get();
  pre.set(preh);
  C->linear_backward(x.c.p, w.c.p, dy.c.p, pre.c.p, dx.c.p, dw.c.p, bias ? db.c.p : nullptr, M, K, N, act, true);
  G->linear_backward(x.g.p, w.g.p, dy.g.p, pre.g.p, dx.g.p, dw.g.p, bias ? db.g.p : nullptr, M, K, N, act, true);
  cmp(tag + " dx(+=)", dx, tol_gemm());
  cmp(tag + " dw", dw, tol_gemm());
  if (bias) cmp(tag + " db", db, g_math == CudaMath::BF16 ? 2e-2 : 1e-5);
  if (act != Act::None) cmp(tag + " dy->dpre", dy, 1e-5);
  // dx overwrite mode
  dx.poison();
  dy.set(dyh);
  C->linear_backward(x.c.p, w.c.p, dy.c.p, pre.c.p, dx.c.p, dw.c.p, nullptr, M, K, N, act, false);
  G->linear_backward(x.g.p, w.g.p, dy.g.p, pre.g.p, dx.g.p, dw.g.p, nullptr, M, K, N, act, false);
  cmp(tag + " dx(=)", dx, tol_gemm());
}

static void test_elementwise() {
  size_t n = 10007;
  PF x(randn(n, rng, 3.f)), y(n), dy(randn(n, rng)), dx(randn(n, rng));
  C->silu_forward(x.c.p, y.c.p, n);
  G->silu_forward(x.g.p, y.g.p, n);
  cmp("silu_forward", y, 1e-5);
  C->silu_backward(x.c.p, dy.c.p, dx.c.p, n, true);
  G->silu_backward(x.g.p, dy.g.p, dx.g.p, n, true);
  cmp("silu_backward(+=)", dx, 1e-5);
  dx.poison();
  C->silu_backward(x.c.p, dy.c.p, dx.c.p, n, false);
  G->silu_backward(x.g.p, dy.g.p, dx.g.p, n, false);
  cmp("silu_backward(=)", dx, 1e-5);
  PF a(randn(n, rng)), b(randn(n, rng)), s(n);
  C->add(a.c.p, b.c.p, s.c.p, n);
  G->add(a.g.p, b.g.p, s.g.p, n);
  cmp("add", s, 1e-6);
  C->add(a.c.p, b.c.p, a.c.p, n);  // aliasing y = a
  G->add(a.g.p, b.g.p, a.g.p, n);
  cmp("add (y aliases a)", a, 1e-6);
  size_t rows = 7, len = 389;
  PF xr(randn(rows * len, rng)), row(randn(len, rng));
  C->add_rows(xr.c.p, row.c.p, rows, len);
  G->add_rows(xr.g.p, row.g.p, rows, len);
  cmp("add_rows", xr, 1e-6);
  PF f(n);
  C->fill(f.c.p, 0.25f, n);
  G->fill(f.g.p, 0.25f, n);
  cmp("fill", f, 0);
}

static void test_patch(int N, int Cc, int H, int W, int p, PatchLayout lay) {
  std::string tag = std::string("patchify ") + (lay == PatchLayout::CPP ? "CPP" : "PPC") + " p" + std::to_string(p);
  size_t n = (size_t)N * Cc * H * W;
  PF img(randn(n, rng)), tok(n), back(n);
  C->patchify(img.c.p, tok.c.p, N, Cc, H, W, p, lay);
  G->patchify(img.g.p, tok.g.p, N, Cc, H, W, p, lay);
  cmp(tag, tok, 0);
  C->unpatchify(tok.c.p, back.c.p, N, Cc, H, W, p, lay);
  G->unpatchify(tok.g.p, back.g.p, N, Cc, H, W, p, lay);
  cmp("un" + tag, back, 0);
}

static bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

static void test_ln(int N, int L, int D) {
  std::string tag = "ln_modulate N" + std::to_string(N) + " L" + std::to_string(L) + " D" + std::to_string(D);
  int stride = 6 * D;
  std::vector<float> xh = randn((size_t)N * L * D, rng, 2.f);
  for (size_t i = 0; i < xh.size(); ++i) xh[i] += 0.5f;  // non-zero mean
  PF x(xh), mod(randn((size_t)N * stride, rng, 0.3f)), y((size_t)N * L * D), mean((size_t)N * L), rstd((size_t)N * L);
  // shift = chunk 0, scale = chunk 1
  C->ln_modulate_forward(x.c.p, mod.c.p, mod.c.p + D, stride, y.c.p, mean.c.p, rstd.c.p, N, L, D, 1e-6);
  G->ln_modulate_forward(x.g.p, mod.g.p, mod.g.p + D, stride, y.g.p, mean.g.p, rstd.g.p, N, L, D, 1e-6);
  cmp(tag + " y", y, 1e-5);
  cmp(tag + " mean", mean, 1e-5);
  cmp(tag + " rstd", rstd, 1e-5);
  PF dy(randn((size_t)N * L * D, rng)), dx(randn((size_t)N * L * D, rng)), dmod(randn((size_t)N * stride, rng));
  dmod.poison();
  std::vector<float> dmod0 = dmod.c.get();
  C->ln_modulate_backward(dy.c.p, x.c.p, mean.c.p, rstd.c.p, mod.c.p + D, stride, dx.c.p, dmod.c.p, dmod.c.p + D, N, L, D, true);
  G->ln_modulate_backward(dy.g.p, x.g.p, mean.g.p, rstd.g.p, mod.g.p + D, stride, dx.g.p, dmod.g.p, dmod.g.p + D, N, L, D, true);
  cmp(tag + " dx(+=)", dx, 1e-5);
  // only the shift and scale chunks are written: compare those
  std::vector<float> gc = dmod.g.get(), cc = dmod.c.get(), gs, cs;
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < 2 * D; ++d) {
      gs.push_back(gc[(size_t)n * stride + d]);
      cs.push_back(cc[(size_t)n * stride + d]);
    }
  expect_close(tag + " dshift,dscale", gs, cs, 1e-5);
  dx.poison();
  C->ln_modulate_backward(dy.c.p, x.c.p, mean.c.p, rstd.c.p, mod.c.p + D, stride, dx.c.p, dmod.c.p, dmod.c.p + D, N, L, D, false);
  dmod.poison();
  G->ln_modulate_backward(dy.g.p, x.g.p, mean.g.p, rstd.g.p, mod.g.p + D, stride, dx.g.p, dmod.g.p, dmod.g.p + D, N, L, D, false);
  cmp(tag + " dx(=)", dx, 1e-5);
  // deterministic: the same call again gives the same bits (dx and the column sums)
  std::vector<float> dx1 = dx.g.get(), dm1 = dmod.g.get();
  dx.poison();
  dmod.poison();
  G->ln_modulate_backward(dy.g.p, x.g.p, mean.g.p, rstd.g.p, mod.g.p + D, stride, dx.g.p, dmod.g.p, dmod.g.p + D, N, L, D, false);
  expect(same_bits(dx.g.get(), dx1) && same_bits(dmod.g.get(), dm1), tag + " backward bitwise identical on a second run");
  // dx null (CUDA only; the CPU backend always gets a dx): the column sums alone
  dmod.poison();
  G->ln_modulate_backward(dy.g.p, x.g.p, mean.g.p, rstd.g.p, mod.g.p + D, stride, nullptr, dmod.g.p, dmod.g.p + D, N, L, D, false);
  gc = dmod.g.get();
  cc = dmod.c.get();
  gs.clear();
  cs.clear();
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < 2 * D; ++d) {
      gs.push_back(gc[(size_t)n * stride + d]);
      cs.push_back(cc[(size_t)n * stride + d]);
    }
  expect_close(tag + " dshift,dscale (dx null)", gs, cs, 1e-5);
}

static void test_gated(int N, int L, int D) {
  std::string tag = "gated_residual N" + std::to_string(N) + " L" + std::to_string(L) + " D" + std::to_string(D);
  int stride = 6 * D;
  PF x(randn((size_t)N * L * D, rng)), mod(randn((size_t)N * stride, rng)), h(randn((size_t)N * L * D, rng));
  C->gated_residual_forward(x.c.p, mod.c.p + 2 * D, stride, h.c.p, N, L, D);
  G->gated_residual_forward(x.g.p, mod.g.p + 2 * D, stride, h.g.p, N, L, D);
  cmp(tag + " x", x, 1e-6);
  PF dx(randn((size_t)N * L * D, rng)), dh((size_t)N * L * D), dg((size_t)N * stride);
  C->gated_residual_backward(dx.c.p, mod.c.p + 2 * D, stride, h.c.p, dh.c.p, dg.c.p + 2 * D, N, L, D);
  G->gated_residual_backward(dx.g.p, mod.g.p + 2 * D, stride, h.g.p, dh.g.p, dg.g.p + 2 * D, N, L, D);
  cmp(tag + " dh", dh, 1e-6);
  std::vector<float> gc = dg.g.get(), cc = dg.c.get(), gs, cs;
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < D; ++d) {
      gs.push_back(gc[(size_t)n * stride + 2 * D + d]);
      cs.push_back(cc[(size_t)n * stride + 2 * D + d]);
    }
  expect_close(tag + " dgate", gs, cs, 1e-5);
  std::vector<float> dh1 = dh.g.get();
  dh.poison();
  dg.poison();
  G->gated_residual_backward(dx.g.p, mod.g.p + 2 * D, stride, h.g.p, dh.g.p, dg.g.p + 2 * D, N, L, D);
  expect(same_bits(dh.g.get(), dh1) && same_bits(dg.g.get(), gc), tag + " backward bitwise identical on a second run");
}

// In bf16 mode the attention runs on the tensor-core kernels (attention_tc.cu):
// bf16 operands, float32 softmax/accumulation, so 2e-2 against the CPU; it is also
// compared with the CUDA float32 path (a second backend in FP32 math), and the
// SPEED_CUDA_ATTENTION=fp32 fallback must match the CPU to 1e-5 again.
static std::shared_ptr<Backend<float>> F32;  // CUDA backend in FP32 math (bf16 runs only)
static std::string g_attn_tag;               // " w8" while SPEED_CUDA_ATTN_WARPS=8

static void test_attention(int N, int L, int heads, int hd) {
  std::string tag = "attention N" + std::to_string(N) + " L" + std::to_string(L) + " h" +
                    std::to_string(heads) + " hd" + std::to_string(hd);
  const bool bf16 = g_math == CudaMath::BF16;
  const double tol = bf16 ? 2e-2 : 1e-5;
  if (bf16) tag += " [bf16 tc" + g_attn_tag + "]";
  size_t nq = (size_t)N * L * 3 * heads * hd, no = (size_t)N * L * heads * hd;
  std::vector<float> qkvh = randn(nq, rng, 1.5f);
  PF qkv(qkvh), out(no), lse((size_t)N * heads * L);
  C->attention_forward(qkv.c.p, out.c.p, lse.c.p, N, L, heads, hd);
  G->attention_forward(qkv.g.p, out.g.p, lse.g.p, N, L, heads, hd);
  cmp(tag + " out", out, tol);
  cmp(tag + " lse", lse, tol);
  std::vector<float> outg = out.g.get(), lseg = lse.g.get();
  std::vector<float> douth = randn(no, rng);
  PF dout(douth), dqkv(nq);
  // both backward passes start from the CPU's out and lse
  std::vector<float> outc = out.c.get(), lsec = lse.c.get();
  out.set(outc);
  lse.set(lsec);
  C->attention_backward(qkv.c.p, out.c.p, dout.c.p, lse.c.p, dqkv.c.p, N, L, heads, hd);
  G->attention_backward(qkv.g.p, out.g.p, dout.g.p, lse.g.p, dqkv.g.p, N, L, heads, hd);
  cmp(tag + " dqkv", dqkv, tol);
  if (!bf16) return;
  std::vector<float> dq1 = dqkv.g.get();
  {  // deterministic: a second run gives the same bits
    dqkv.poison();
    G->attention_backward(qkv.g.p, out.g.p, dout.g.p, lse.g.p, dqkv.g.p, N, L, heads, hd);
    std::vector<float> dq2 = dqkv.g.get();
    expect(std::memcmp(dq1.data(), dq2.data(), dq1.size() * sizeof(float)) == 0,
           tag + " dqkv bitwise identical on a second run");
  }
  {  // against the CUDA float32 path on the same inputs
    DBuf<float> q2(*F32, qkvh), o2(*F32, no), l2(*F32, (size_t)N * heads * L), d2(*F32, douth),
        g2(*F32, nq);
    o2.poison();
    l2.poison();
    g2.poison();
    F32->attention_forward(q2.p, o2.p, l2.p, N, L, heads, hd);
    expect_close(tag + " out vs cuda fp32", outg, o2.get(), 2e-2);
    expect_close(tag + " lse vs cuda fp32", lseg, l2.get(), 2e-2);
    o2.set(outc);
    l2.set(lsec);
    F32->attention_backward(q2.p, o2.p, d2.p, l2.p, g2.p, N, L, heads, hd);
    expect_close(tag + " dqkv vs cuda fp32", dq1, g2.get(), 2e-2);
  }
  {  // the env fallback: SPEED_CUDA_ATTENTION=fp32 runs the float32 kernels in bf16 mode
    setenv("SPEED_CUDA_ATTENTION", "fp32", 1);
    out.poison();
    lse.poison();
    G->attention_forward(qkv.g.p, out.g.p, lse.g.p, N, L, heads, hd);
    cmp(tag + " out (SPEED_CUDA_ATTENTION=fp32)", out, 1e-5);
    lse.set(lsec);
    out.set(outc);
    dqkv.poison();
    G->attention_backward(qkv.g.p, out.g.p, dout.g.p, lse.g.p, dqkv.g.p, N, L, heads, hd);
    cmp(tag + " dqkv (SPEED_CUDA_ATTENTION=fp32)", dqkv, 1e-5);
    unsetenv("SPEED_CUDA_ATTENTION");
  }
}

static void test_embeddings() {
  int N = 5, dim = 256;
  std::vector<int32_t> th = {0, 1, 499, 998, 999};
  PI t(th);
  PF e((size_t)N * dim);
  C->timestep_embedding(t.c.p, e.c.p, N, dim, 10000.0);
  G->timestep_embedding(t.g.p, e.g.p, N, dim, 10000.0);
  cmp("timestep_embedding 256", e, 1e-6);
  PF e2((size_t)N * 7);
  C->timestep_embedding(t.c.p, e2.c.p, N, 7, 10000.0);
  G->timestep_embedding(t.g.p, e2.g.p, N, 7, 10000.0);
  cmp("timestep_embedding odd dim 7", e2, 1e-6);
  int rows = 11, D = 45, M = 9;
  std::vector<int32_t> idx = {3, 10, 3, 0, 7, 3, 10, 1, 2};  // repeated labels accumulate
  PI ix(idx);
  PF table(randn((size_t)rows * D, rng)), o((size_t)M * D), dt((size_t)rows * D), dout(randn((size_t)M * D, rng));
  C->embedding_forward(table.c.p, ix.c.p, o.c.p, M, D);
  G->embedding_forward(table.g.p, ix.g.p, o.g.p, M, D);
  cmp("embedding_forward", o, 0);
  C->embedding_backward(dout.c.p, ix.c.p, dt.c.p, M, D, rows);
  G->embedding_backward(dout.g.p, ix.g.p, dt.g.p, M, D, rows);
  cmp("embedding_backward", dt, 1e-6);
}

static void test_noise() {
  for (size_t n : {size_t(1), size_t(7), size_t(100003)}) {
    PF x(n);
    uint64_t seed = 0x123456789abcdefULL, off = 977;
    C->normal(x.c.p, n, seed, off);
    G->normal(x.g.p, n, seed, off);
    auto g = x.g.get(), c = x.c.get();
    size_t exact = 0, close = 0;
    for (size_t i = 0; i < n; ++i) {
      exact += g[i] == c[i];
      close += std::fabs(g[i] - c[i]) <= 2e-7f * std::max(1.0f, std::fabs(c[i]));
    }
    // float64 math rounded to float32: identical unless libm and CUDA's
    // float64 functions differ by an ulp right at a rounding boundary.
    bool ok = close == n;
    std::printf("%s normal n=%zu: %zu/%zu identical, %zu within 1 ulp\n", ok ? "ok  " : "FAIL", n, exact, n, close);
    if (!ok) ++g_failures;
  }
}

// Linear-schedule tables (IDDPM), as float on each backend.
struct Tables {
  std::vector<std::unique_ptr<PF>> cols;
  DiffusionTablesView<float> cv, gv;
  explicit Tables(int T) {
    std::vector<double> beta(T), abar(T);
    double s = 1000.0 / T;
    for (int t = 0; t < T; ++t) beta[t] = s * 1e-4 + (s * 0.02 - s * 1e-4) * t / (T - 1);
    double a = 1;
    for (int t = 0; t < T; ++t) abar[t] = (a *= 1 - beta[t]);
    std::vector<std::vector<float>> v(8, std::vector<float>(T));
    std::vector<double> plv(T);
    for (int t = 0; t < T; ++t) {
      double ap = t ? abar[t - 1] : 1.0;
      double pv = beta[t] * (1 - ap) / (1 - abar[t]);
      plv[t] = std::log(std::max(pv, 1e-300));
      v[0][t] = std::sqrt(abar[t]);
      v[1][t] = std::sqrt(1 - abar[t]);
      v[2][t] = std::sqrt(1 / abar[t]);
      v[3][t] = std::sqrt(1 / abar[t] - 1);
      v[4][t] = beta[t] * std::sqrt(ap) / (1 - abar[t]);
      v[5][t] = (1 - ap) * std::sqrt(1 - beta[t]) / (1 - abar[t]);
      v[6][t] = std::log(beta[t]);
    }
    for (int t = 0; t < T; ++t) v[7][t] = (float)(t == 0 ? plv[1] : plv[t]);
    for (auto& c : v) cols.emplace_back(new PF(c));
    auto fill = [&](DiffusionTablesView<float>& tv, bool gpu) {
      auto P = [&](int i) { return gpu ? cols[i]->g.p : cols[i]->c.p; };
      tv.steps = T;
      tv.sqrt_abar = P(0); tv.sqrt_1m_abar = P(1); tv.sqrt_recip_abar = P(2); tv.sqrt_recipm1_abar = P(3);
      tv.coef1 = P(4); tv.coef2 = P(5); tv.log_beta = P(6); tv.post_log_var = P(7);
    };
    fill(cv, false);
    fill(gv, true);
  }
};

static void test_diffusion() {
  const int T = 1000, N = 6, Cc = 3, HW = 37;
  Tables tab(T);
  std::vector<int32_t> th = {0, 0, 1, 500, 998, 999};  // t = 0 twice (decoder NLL path)
  PI t(th);
  size_t per = (size_t)Cc * HW;
  std::vector<float> x0h = randn(N * per, rng, 0.6f);
  for (size_t i = 0; i < 12; ++i) x0h[i] = (i % 2) ? 1.0f : -1.0f;  // edge bins of the decoder NLL
  PF x0(x0h), eps(randn(N * per, rng)), xt(N * per);
  C->q_sample(x0.c.p, eps.c.p, t.c.p, tab.cv, xt.c.p, N, per);
  G->q_sample(x0.g.p, eps.g.p, t.g.p, tab.gv, xt.g.p, N, per);
  cmp("q_sample", xt, 1e-6);
  for (int ls = 0; ls < 2; ++ls) {
    int Cout = ls ? 2 * Cc : Cc;
    std::string tag = ls ? "iddpm_loss learn_sigma" : "iddpm_loss eps only";
    PF out(randn((size_t)N * Cout * HW, rng, 0.8f)), w(std::vector<float>{1.f, 0.5f, 2.f, 1.f, 0.4f, 1.f});
    PF loss(N), mse(N), vb(N), dout((size_t)N * Cout * HW);
    C->iddpm_loss(out.c.p, x0.c.p, xt.c.p, eps.c.p, t.c.p, w.c.p, tab.cv, 1.0, ls, loss.c.p, mse.c.p, vb.c.p, dout.c.p, N, Cc, HW);
    G->iddpm_loss(out.g.p, x0.g.p, xt.g.p, eps.g.p, t.g.p, w.g.p, tab.gv, 1.0, ls, loss.g.p, mse.g.p, vb.g.p, dout.g.p, N, Cc, HW);
    cmp(tag + " loss", loss, 1e-5);
    cmp(tag + " mse", mse, 1e-5);
    if (ls) cmp(tag + " vb", vb, 1e-5);
    cmp(tag + " dout", dout, 1e-5);
  }
  // sampling steps: DDPM (learned sigma, noise), DDIM with clipping and CFG, and
  // the same with DiT's rule of guiding only the first channels (guidance_channels)
  for (int variant = 0; variant < 3; ++variant) {
    int mode = variant == 0 ? 0 : 1;
    SampleStepCoefs k;
    k.mode = mode;
    k.guidance_channels = variant == 2 ? Cc - 1 : 0;
    k.sqrt_recip_abar = 1.3; k.sqrt_recipm1_abar = 0.8; k.coef1 = 0.3; k.coef2 = 0.7;
    k.log_beta = -4.0; k.post_log_var = -4.5; k.sqrt_abar_prev = 0.9; k.eps_coef = 0.35;
    k.sigma = 0.1; k.add_noise = true; k.clip_x0 = mode == 1; k.cfg = mode == 1; k.guidance = 4.0;
    int rowsN = k.cfg ? 2 * N : N;
    PF mo(randn((size_t)rowsN * 2 * Cc * HW, rng)), x(randn(N * per, rng)), z(randn(N * per, rng));
    C->sample_step(mo.c.p, x.c.p, z.c.p, N, Cc, HW, true, k);
    G->sample_step(mo.g.p, x.g.p, z.g.p, N, Cc, HW, true, k);
    cmp(variant == 2 ? "sample_step DDIM clip cfg, guidance_channels C-1" : mode ? "sample_step DDIM clip cfg" : "sample_step DDPM learned sigma", x, 1e-6);
  }
}

static void test_optimizer() {
  size_t n = 100003;
  int N = 4;
  auto ph = randn(n, rng), gh = randn(n, rng, 0.01f), mh = randn(n, rng, 0.001f), vh = randn(n, rng, 0.001f);
  for (auto& v : vh) v = v * v;
  PF p(ph), g(gh), m(mh), v(vh), ema(ph), losses(std::vector<float>{0.5f, 0.25f, 1.f, 2.f});
  OptimHyper hp;
  hp.lr = 1e-3; hp.weight_decay = 0.01; hp.max_grad_norm = 1.0; hp.ema_decay = 0.99; hp.step = 3;
  OptimResult rc = C->optimizer_step(p.c.p, g.c.p, m.c.p, v.c.p, ema.c.p, n, hp, losses.c.p, N);
  OptimResult rg = G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, ema.g.p, n, hp, losses.g.p, N);
  expect(std::fabs(rc.grad_norm - rg.grad_norm) <= 1e-9 * rc.grad_norm, "optimizer grad_norm " +
         std::to_string(rg.grad_norm) + " vs cpu " + std::to_string(rc.grad_norm));
  expect(!rg.skipped, "optimizer: finite step not skipped");
  cmp("adamw params (clipped)", p, 1e-6);
  cmp("adamw m", m, 1e-6);
  cmp("adamw v", v, 1e-6);
  cmp("ema", ema, 1e-6);
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
  // no clipping, no EMA, from the same state on both
  g.set(gh);
  p.set(ph); m.set(mh); v.set(vh);
  hp.max_grad_norm = 0;
  hp.ema_decay = -1;
  C->optimizer_step(p.c.p, g.c.p, m.c.p, v.c.p, nullptr, n, hp, losses.c.p, N);
  G->optimizer_step(p.g.p, g.g.p, m.g.p, v.g.p, nullptr, n, hp, losses.g.p, N);
  cmp("adamw params (no clip, no EMA)", p, 1e-6);
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
    PF q(4 * 3 * 2 * 40), o(4 * 2 * 40), l(4 * 2);
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
  try {
    if (want("linear")) {
      test_linear(37, 72, 40, Act::None, true);
      test_linear(1, 64, 36, Act::GeluTanh, true);   // N % 8 != 0: unfused GELU path
      test_linear(37, 72, 40, Act::GeluTanh, true);  // fused GELU_AUX_BIAS
      test_linear(300, 384, 1536, Act::GeluTanh, true);
      test_linear(300, 1536, 384, Act::None, true);
      test_linear(5, 96, 57, Act::None, false);
    }
    if (want("elementwise")) test_elementwise();
    if (want("patch")) {
      test_patch(2, 4, 32, 32, 2, PatchLayout::CPP);
      test_patch(1, 3, 24, 16, 4, PatchLayout::PPC);
      test_patch(3, 8, 8, 8, 2, PatchLayout::PPC);
    }
    // sections "ln" and "gated". Sizes: several samples with L not a multiple of 4 or 8, D = 50
    // (the scalar kernels; the others take float4), D = 2056 (wide rows); section "normxl": both
    // at XL/2, batch 32, kept out of "ln" so that gpu-check's sanitizer runs stay short.
    if (want("ln")) {
      test_ln(2, 67, 384);
      test_ln(1, 5, 72);
      test_ln(3, 13, 1152);
      test_ln(2, 7, 50);  // D % 4 != 0: the scalar kernels (the others take the float4 ones)
      test_ln(3, 29, 50);
      test_ln(1, 3, 2056);
    }
    if (want("gated")) {
      test_gated(2, 67, 384);
      test_gated(1, 3, 50);
      test_gated(3, 29, 50);
      test_gated(3, 13, 1152);
      test_gated(1, 3, 2056);
    }
    if (want("normxl")) {
      test_ln(32, 256, 1152);
      test_gated(32, 256, 1152);
    }
    // sections "attention" (default kernels) and "attnw8" (SPEED_CUDA_ATTN_WARPS=8, bf16 only)
    if (g_math == CudaMath::BF16 && (want("attention") || want("attnw8"))) {
      CudaOptions fo;
      fo.math = CudaMath::FP32;
      F32 = make_cuda_backend(fo);
    }
    if (want("attention")) {
      test_attention(2, 67, 3, 64);   // L not a multiple of any tile
      test_attention(1, 256, 2, 72);  // DiT-XL head size
      test_attention(2, 67, 3, 72);   // hd 72 (padded to 80) with a partial tile
      test_attention(1, 200, 2, 72);  // 200 = 3 full 64-tiles + 8, 6 x 32 + 8
      test_attention(3, 33, 2, 32);
      test_attention(1, 1, 1, 64);
      test_attention(1, 130, 1, 16);
      test_attention(2, 256, 6, 64);  // DiT-S head size at DiT's L
    }
    if (g_math == CudaMath::BF16 && want("attnw8")) {  // the 8-warp forward and dK/dV kernels
      setenv("SPEED_CUDA_ATTN_WARPS", "8", 1);
      g_attn_tag = " w8";
      test_attention(2, 67, 3, 72);
      test_attention(1, 200, 2, 72);
      test_attention(2, 256, 6, 64);
      test_attention(3, 33, 2, 32);
      test_attention(1, 1, 1, 64);
      unsetenv("SPEED_CUDA_ATTN_WARPS");
      g_attn_tag.clear();
    }
    if (want("embedding")) test_embeddings();
    if (want("noise")) test_noise();
    if (want("diffusion")) test_diffusion();
    if (want("optimizer")) test_optimizer();
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
