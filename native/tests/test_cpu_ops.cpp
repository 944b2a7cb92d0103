// Every op of the CPU backend: forward against naive float64 references written
// here, backward against central finite differences in float64 (random projection
// loss L = Σ r∘out), (=) versus (+=) semantics, poisoned outputs, and bitwise
// identical results for 1, 2 and 3 threads in float32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../src/cpu/fastmath.h"
#include "cpu_test_util.h"
#include "speed/backend.h"
#include "speed/cpu.h"

using namespace cputest;
using speed::Act;
using speed::Backend;
using speed::PatchLayout;
using V = std::vector<double>;

namespace {

const double kTolFD = 1e-6;  // relative error of analytic vs numeric gradients

std::shared_ptr<Backend<double>> B;  // float64 backend, 2 threads

double gelu_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

// ---- Linear ----------------------------------------------------------------------
void naive_linear(const V& x, const V& w, const V* b, V& y, int M, int K, int N, Act act) {
  y.assign(static_cast<size_t>(M) * N, 0);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = b ? (*b)[j] : 0;
      for (int k = 0; k < K; ++k) s += x[i * K + k] * w[j * K + k];
      y[i * N + j] = act == Act::GeluTanh ? gelu_ref(s) : s;
    }
}

void test_linear(Rng& rng) {
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {7, 4, 3}, {5, 9, 6}};
  for (auto& s : shapes)
    for (Act act : {Act::None, Act::GeluTanh})
      for (bool bias : {true, false}) {
        const int M = s[0], K = s[1], N = s[2];
        std::string tag = "linear M=" + std::to_string(M) + " K=" + std::to_string(K) +
                          " N=" + std::to_string(N) + (act == Act::GeluTanh ? " gelu" : "") +
                          (bias ? " bias" : " nobias");
        V x = rng.vec<double>(M * K), w = rng.vec<double>(N * K), b = rng.vec<double>(N);
        V y(M * N), pre(M * N), ref;
        poison(y);
        poison(pre);
        B->linear_forward(x.data(), w.data(), bias ? b.data() : nullptr, y.data(), pre.data(), M, K,
                          N, act);
        naive_linear(x, w, bias ? &b : nullptr, ref, M, K, N, act);
        expect(rel_err(y, ref) < 1e-13, tag + " forward", "rel " + fmt(rel_err(y, ref)));
        if (act != Act::None) {
          V pref;
          naive_linear(x, w, bias ? &b : nullptr, pref, M, K, N, Act::None);
          expect(rel_err(pre, pref) < 1e-13, tag + " pre-activation saved");
        }
        // backward
        V r = rng.vec<double>(M * N);
        V dy = r, dx(M * K), dw(N * K), db(N);
        poison(dx);
        poison(dw);
        poison(db);
        B->linear_backward(x.data(), w.data(), dy.data(), pre.data(), dx.data(), dw.data(),
                           bias ? db.data() : nullptr, M, K, N, act, false);
        auto L = [&] {
          V yy(M * N), pp(M * N);
          B->linear_forward(x.data(), w.data(), bias ? b.data() : nullptr, yy.data(), pp.data(),
                            M, K, N, act);
          return dotv(r, yy);
        };
        double ex = rel_err(dx, numeric_grad(x, L)), ew = rel_err(dw, numeric_grad(w, L));
        expect(ex < kTolFD, tag + " dx vs finite differences", "rel " + fmt(ex));
        expect(ew < kTolFD, tag + " dw vs finite differences", "rel " + fmt(ew));
        if (bias) {
          double eb = rel_err(db, numeric_grad(b, L));
          expect(eb < kTolFD, tag + " db vs finite differences", "rel " + fmt(eb));
        }
        if (act != Act::None) {  // dy now holds the pre-activation gradient
          V dpre(M * N);
          for (int i = 0; i < M * N; ++i) {
            double p = pre[i], h = 1e-6;
            dpre[i] = r[i] * (gelu_ref(p + h) - gelu_ref(p - h)) / (2 * h);
          }
          expect(rel_err(dy, dpre) < kTolFD, tag + " dy overwritten with d(pre)");
        }
        // accumulate: dx += ...
        V dy2 = r, dx2(M * K, 0.5), dw2(N * K);
        B->linear_backward(x.data(), w.data(), dy2.data(), pre.data(), dx2.data(), dw2.data(),
                           nullptr, M, K, N, act, true);
        V want(M * K);
        for (int i = 0; i < M * K; ++i) want[i] = dx[i] + 0.5;
        expect(rel_err(dx2, want) < 1e-14, tag + " dx accumulates (+=)");
      }
}

// ---- elementwise ----------------------------------------------------------------
void test_elementwise(Rng& rng) {
  const size_t n = 37;
  V x = rng.vec<double>(n, -4, 4), y(n), ref(n);
  poison(y);
  B->silu_forward(x.data(), y.data(), n);
  for (size_t i = 0; i < n; ++i) ref[i] = x[i] / (1 + std::exp(-x[i]));
  expect(rel_err(y, ref) < 1e-14, "silu forward");
  V r = rng.vec<double>(n), dx(n);
  poison(dx);
  B->silu_backward(x.data(), r.data(), dx.data(), n, false);
  auto L = [&] {
    V yy(n);
    B->silu_forward(x.data(), yy.data(), n);
    return dotv(r, yy);
  };
  double e = rel_err(dx, numeric_grad(x, L));
  expect(e < kTolFD, "silu backward vs finite differences", "rel " + fmt(e));
  V dx2(n, 1.0);
  B->silu_backward(x.data(), r.data(), dx2.data(), n, true);
  for (size_t i = 0; i < n; ++i) ref[i] = dx[i] + 1.0;
  expect(rel_err(dx2, ref) < 1e-14, "silu backward accumulates (+=)");

  V a = rng.vec<double>(n), b = rng.vec<double>(n), s(n);
  poison(s);
  B->add(a.data(), b.data(), s.data(), n);
  bool ok = true;
  for (size_t i = 0; i < n; ++i) ok &= s[i] == a[i] + b[i];
  V a2 = a;
  B->add(a2.data(), b.data(), a2.data(), n);  // aliasing
  expect(ok && a2 == s, "add (also in place)");

  const size_t rows = 5, cols = 7;
  V m = rng.vec<double>(rows * cols), row = rng.vec<double>(cols), m2 = m;
  B->add_rows(m2.data(), row.data(), rows, cols);
  ok = true;
  for (size_t i = 0; i < rows; ++i)
    for (size_t j = 0; j < cols; ++j) ok &= m2[i * cols + j] == m[i * cols + j] + row[j];
  expect(ok, "add_rows");

  V f(11);
  B->fill(f.data(), 3.25, f.size());
  expect(std::all_of(f.begin(), f.end(), [](double v) { return v == 3.25; }), "fill");
}

// ---- patches ----------------------------------------------------------------------
void test_patches(Rng& rng) {
  const int N = 2, C = 3, H = 6, W = 4, p = 2, gh = H / p, gw = W / p, L = gh * gw;
  const int tokd = C * p * p;
  V img = rng.vec<double>(N * C * H * W);
  for (PatchLayout lay : {PatchLayout::CPP, PatchLayout::PPC}) {
    std::string tag = lay == PatchLayout::CPP ? "CPP" : "PPC";
    V tok(N * L * tokd), ref(N * L * tokd);
    poison(tok);
    B->patchify(img.data(), tok.data(), N, C, H, W, p, lay);
    // naive: a conv weight [D, C, p, p] viewed as [D, C*p*p] (CPP), or [p][p][C] (PPC)
    for (int n = 0; n < N; ++n)
      for (int gy = 0; gy < gh; ++gy)
        for (int gx = 0; gx < gw; ++gx)
          for (int c = 0; c < C; ++c)
            for (int py = 0; py < p; ++py)
              for (int px = 0; px < p; ++px) {
                int t = gy * gw + gx;
                int k = lay == PatchLayout::CPP ? c * p * p + py * p + px : (py * p + px) * C + c;
                ref[(n * L + t) * tokd + k] = img[((n * C + c) * H + gy * p + py) * W + gx * p + px];
              }
    expect(tok == ref, "patchify " + tag);
    V back(img.size());
    poison(back);
    B->unpatchify(tok.data(), back.data(), N, C, H, W, p, lay);
    expect(back == img, "unpatchify inverts patchify " + tag);
    V y = rng.vec<double>(tok.size()), uy(img.size());
    B->unpatchify(y.data(), uy.data(), N, C, H, W, p, lay);
    expect(std::fabs(dotv(tok, y) - dotv(img, uy)) < 1e-12, "unpatchify is the adjoint " + tag);
  }
  bool threw = false;
  try {
    V t(100);
    B->patchify(img.data(), t.data(), 1, 1, 5, 4, 2, PatchLayout::CPP);
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("multiples") != std::string::npos;
  }
  expect(threw, "patchify with H not a multiple of p throws speed::Error");
}

// ---- LayerNorm + modulation -----------------------------------------------------------
void test_ln(Rng& rng) {
  const int N = 2, L = 3, D = 5, stride = 3 * D;  // chunks of a [N, 3D] modulation
  const double eps = 1e-6;
  V x = rng.vec<double>(N * L * D, -2, 3), mod = rng.vec<double>(N * stride);
  const int sh_off = 0, sc_off = D;
  V y(N * L * D), mean(N * L), rstd(N * L);
  poison(y);
  poison(mean);
  poison(rstd);
  B->ln_modulate_forward(x.data(), mod.data() + sh_off, mod.data() + sc_off, stride, y.data(),
                         mean.data(), rstd.data(), N, L, D, eps);
  V ref(y.size());
  for (int n = 0; n < N; ++n)
    for (int l = 0; l < L; ++l) {
      const double* xr = &x[(n * L + l) * D];
      double mu = 0, var = 0;
      for (int i = 0; i < D; ++i) mu += xr[i] / D;
      for (int i = 0; i < D; ++i) var += (xr[i] - mu) * (xr[i] - mu) / D;
      for (int i = 0; i < D; ++i)
        ref[(n * L + l) * D + i] = (xr[i] - mu) / std::sqrt(var + eps) * (1 + mod[n * stride + sc_off + i]) +
                                   mod[n * stride + sh_off + i];
    }
  expect(rel_err(y, ref) < 1e-13, "ln_modulate forward (mod_stride 3D)", "rel " + fmt(rel_err(y, ref)));
  V r = rng.vec<double>(y.size()), dx(x.size()), dmod(N * stride, 7.0);
  poison(dx);
  B->ln_modulate_backward(r.data(), x.data(), mean.data(), rstd.data(), mod.data() + sc_off, stride,
                          dx.data(), dmod.data() + sh_off, dmod.data() + sc_off, N, L, D, false);
  auto Lf = [&] {
    V yy(y.size()), mm(N * L), rr(N * L);
    B->ln_modulate_forward(x.data(), mod.data() + sh_off, mod.data() + sc_off, stride, yy.data(),
                           mm.data(), rr.data(), N, L, D, eps);
    return dotv(r, yy);
  };
  double ex = rel_err(dx, numeric_grad(x, Lf));
  expect(ex < kTolFD, "ln_modulate dx vs finite differences", "rel " + fmt(ex));
  V gm = numeric_grad(mod, Lf);
  V got(2 * D * N), want(2 * D * N);
  bool third_untouched = true;
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < 2 * D; ++i) {
      got[n * 2 * D + i] = dmod[n * stride + i];
      want[n * 2 * D + i] = gm[n * stride + i];
    }
  for (int n = 0; n < N; ++n)
    for (int i = 2 * D; i < 3 * D; ++i) third_untouched &= dmod[n * stride + i] == 7.0;
  double em = rel_err(got, want);
  expect(em < kTolFD, "ln_modulate dshift, dscale vs finite differences", "rel " + fmt(em));
  expect(third_untouched, "ln_modulate backward writes only its chunks of d(mod)");
  V dx2(x.size(), -1.0);
  B->ln_modulate_backward(r.data(), x.data(), mean.data(), rstd.data(), mod.data() + sc_off, stride,
                          dx2.data(), dmod.data() + sh_off, dmod.data() + sc_off, N, L, D, true);
  V w2(x.size());
  for (size_t i = 0; i < x.size(); ++i) w2[i] = dx[i] - 1.0;
  expect(rel_err(dx2, w2) < 1e-14, "ln_modulate dx accumulates (+=)");
}

// ---- gated residual -----------------------------------------------------------------
void test_gated(Rng& rng) {
  const int N = 3, L = 4, D = 5, stride = 6 * D, goff = 2 * D;
  V x = rng.vec<double>(N * L * D), mod = rng.vec<double>(N * stride), h = rng.vec<double>(N * L * D);
  V x1 = x;
  B->gated_residual_forward(x1.data(), mod.data() + goff, stride, h.data(), N, L, D);
  V ref(x.size());
  for (int n = 0; n < N; ++n)
    for (int l = 0; l < L; ++l)
      for (int i = 0; i < D; ++i) {
        int k = (n * L + l) * D + i;
        ref[k] = x[k] + mod[n * stride + goff + i] * h[k];
      }
  expect(rel_err(x1, ref) < 1e-15, "gated_residual forward");
  V r = rng.vec<double>(x.size()), dh(h.size()), dmod(N * stride, 5.0);
  poison(dh);
  B->gated_residual_backward(r.data(), mod.data() + goff, stride, h.data(), dh.data(),
                             dmod.data() + goff, N, L, D);
  auto Lf = [&] {
    V xx = x;
    B->gated_residual_forward(xx.data(), mod.data() + goff, stride, h.data(), N, L, D);
    return dotv(r, xx);
  };
  double eh = rel_err(dh, numeric_grad(h, Lf));
  V gm = numeric_grad(mod, Lf), got, want;
  bool others = true;
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < stride; ++i) {
      if (i >= goff && i < goff + D) {
        got.push_back(dmod[n * stride + i]);
        want.push_back(gm[n * stride + i]);
      } else {
        others &= dmod[n * stride + i] == 5.0;
      }
    }
  expect(eh < kTolFD, "gated_residual dh vs finite differences", "rel " + fmt(eh));
  expect(rel_err(got, want) < kTolFD && others, "gated_residual dgate vs finite differences, at mod_stride",
         "rel " + fmt(rel_err(got, want)));
}

// ---- attention ----------------------------------------------------------------------
void naive_attention(const V& qkv, V& out, V& lse, int N, int L, int H, int hd) {
  const int D = H * hd;
  out.assign(N * L * D, 0);
  lse.assign(N * H * L, 0);
  const double sc = 1 / std::sqrt(double(hd));
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < L; ++i) {
        std::vector<double> s(L);
        double mx = -1e300;
        for (int j = 0; j < L; ++j) {
          double d = 0;
          for (int c = 0; c < hd; ++c)
            d += qkv[((n * L + i) * 3 + 0) * D + h * hd + c] * qkv[((n * L + j) * 3 + 1) * D + h * hd + c];
          s[j] = d * sc;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int j = 0; j < L; ++j) z += std::exp(s[j] - mx);
        lse[(n * H + h) * L + i] = mx + std::log(z);
        for (int c = 0; c < hd; ++c) {
          double o = 0;
          for (int j = 0; j < L; ++j)
            o += std::exp(s[j] - mx) / z * qkv[((n * L + j) * 3 + 2) * D + h * hd + c];
          out[(n * L + i) * D + h * hd + c] = o;
        }
      }
}

void test_attention(Rng& rng) {
  const int cases[][4] = {{1, 1, 1, 1}, {2, 5, 2, 3}, {1, 7, 3, 4}, {2, 9, 1, 8}};
  for (auto& cs : cases) {
    const int N = cs[0], L = cs[1], H = cs[2], hd = cs[3], D = H * hd;
    std::string tag = "attention N=" + std::to_string(N) + " L=" + std::to_string(L) +
                      " heads=" + std::to_string(H) + " hd=" + std::to_string(hd);
    V qkv = rng.vec<double>(N * L * 3 * D, -1.5, 1.5), out(N * L * D), lse(N * H * L), ro, rl;
    poison(out);
    poison(lse);
    B->attention_forward(qkv.data(), out.data(), lse.data(), N, L, H, hd);
    naive_attention(qkv, ro, rl, N, L, H, hd);
    expect(rel_err(out, ro) < 1e-13 && rel_err(lse, rl) < 1e-13, tag + " forward and lse",
           "rel " + fmt(std::max(rel_err(out, ro), rel_err(lse, rl))));
    V r = rng.vec<double>(out.size()), dqkv(qkv.size());
    poison(dqkv);
    B->attention_backward(qkv.data(), out.data(), r.data(), lse.data(), dqkv.data(), N, L, H, hd);
    auto Lf = [&] {
      V o(out.size()), l(lse.size());
      B->attention_forward(qkv.data(), o.data(), l.data(), N, L, H, hd);
      return dotv(r, o);
    };
    double e = rel_err(dqkv, numeric_grad(qkv, Lf));
    expect(e < kTolFD, tag + " dqkv vs finite differences", "rel " + fmt(e));
  }
}

// ---- embeddings ---------------------------------------------------------------------
void test_embeddings(Rng& rng) {
  const int N = 3, dim = 10;
  int32_t t[N] = {0, 7, 999};
  V out(N * dim);
  poison(out);
  B->timestep_embedding(t, out.data(), N, dim, 10000.0);
  V ref(N * dim);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < dim / 2; ++i) {
      double f = std::exp(-std::log(10000.0) * i / (dim / 2));
      ref[n * dim + i] = std::cos(t[n] * f);
      ref[n * dim + dim / 2 + i] = std::sin(t[n] * f);
    }
  expect(rel_err(out, ref) < 1e-14, "timestep_embedding");
  V odd(N * 7);
  poison(odd);
  B->timestep_embedding(t, odd.data(), N, 7, 10000.0);
  expect(all_finite(odd) && odd[6] == 0 && odd[13] == 0, "timestep_embedding odd dim pads a zero");

  const int rows = 4, D = 5;
  V table = rng.vec<double>(rows * D);
  int32_t idx[5] = {3, 0, 3, 1, 3};
  V e(5 * D);
  poison(e);
  B->embedding_forward(table.data(), idx, e.data(), 5, D);
  bool ok = true;
  for (int n = 0; n < 5; ++n)
    for (int i = 0; i < D; ++i) ok &= e[n * D + i] == table[idx[n] * D + i];
  expect(ok, "embedding_forward");
  V r = rng.vec<double>(5 * D), dt(rows * D);
  poison(dt);
  B->embedding_backward(r.data(), idx, dt.data(), 5, D, rows);
  auto Lf = [&] {
    V o(5 * D);
    B->embedding_forward(table.data(), idx, o.data(), 5, D);
    return dotv(r, o);
  };
  double er = rel_err(dt, numeric_grad(table, Lf));
  expect(er < kTolFD, "embedding_backward (repeated labels, unused row zero)", "rel " + fmt(er));
  int32_t bad[1] = {4};
  bool threw = false;
  try {
    B->embedding_backward(r.data(), bad, dt.data(), 1, D, rows);
  } catch (const speed::Error&) {
    threw = true;
  }
  expect(threw, "embedding_backward rejects an index outside [0, rows)");
}

// ---- diffusion tables (linear schedule, IDDPM) --------------------------------
struct Tables {
  int T;
  V sqrt_abar, sqrt_1m_abar, sqrt_recip_abar, sqrt_recipm1_abar, coef1, coef2, log_beta, post_log_var;
  speed::DiffusionTablesView<double> view() const {
    speed::DiffusionTablesView<double> v;
    v.steps = T;
    v.sqrt_abar = sqrt_abar.data();
    v.sqrt_1m_abar = sqrt_1m_abar.data();
    v.sqrt_recip_abar = sqrt_recip_abar.data();
    v.sqrt_recipm1_abar = sqrt_recipm1_abar.data();
    v.coef1 = coef1.data();
    v.coef2 = coef2.data();
    v.log_beta = log_beta.data();
    v.post_log_var = post_log_var.data();
    return v;
  }
};
Tables linear_tables(int T) {
  Tables tb;
  tb.T = T;
  double s = 1000.0 / T, abar = 1;
  V pv(T);
  for (int t = 0; t < T; ++t) {
    double beta = s * 1e-4 + (s * 0.02 - s * 1e-4) * t / (T - 1);
    double prev = abar;
    abar *= 1 - beta;
    tb.sqrt_abar.push_back(std::sqrt(abar));
    tb.sqrt_1m_abar.push_back(std::sqrt(1 - abar));
    tb.sqrt_recip_abar.push_back(std::sqrt(1 / abar));
    tb.sqrt_recipm1_abar.push_back(std::sqrt(1 / abar - 1));
    tb.coef1.push_back(beta * std::sqrt(prev) / (1 - abar));
    tb.coef2.push_back((1 - prev) * std::sqrt(1 - beta) / (1 - abar));
    tb.log_beta.push_back(std::log(beta));
    pv[t] = beta * (1 - prev) / (1 - abar);
  }
  for (int t = 0; t < T; ++t) tb.post_log_var.push_back(std::log(t == 0 ? pv[1] : pv[t]));
  return tb;
}

void test_q_sample(Rng& rng, const Tables& tb) {
  const int N = 3, per = 10;
  V x0 = rng.vec<double>(N * per), eps = rng.vec<double>(N * per), xt(N * per);
  int32_t t[N] = {0, 500, 999};
  poison(xt);
  B->q_sample(x0.data(), eps.data(), t, tb.view(), xt.data(), N, per);
  V ref(N * per);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < per; ++i)
      ref[n * per + i] = tb.sqrt_abar[t[n]] * x0[n * per + i] + tb.sqrt_1m_abar[t[n]] * eps[n * per + i];
  expect(rel_err(xt, ref) < 1e-15, "q_sample");
}

// Naive IDDPM loss of one sample, straight from the formulas (L_simple + vb_scale L_vb).
double cdf_ref(double x) { return 0.5 * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
void naive_loss(const V& out, const V& x0, const V& xt, const V& eps, const int32_t* t, const V& w,
                const Tables& tb, double vb_scale, bool ls, int N, int C, int HW, V& loss, V& mse, V& vb) {
  const int Co = ls ? 2 * C : C, per = C * HW;
  loss.assign(N, 0);
  mse.assign(N, 0);
  vb.assign(N, 0);
  for (int n = 0; n < N; ++n) {
    int ti = t[n];
    for (int i = 0; i < per; ++i) {
      double eh = out[n * Co * HW + i], d = eps[n * per + i] - eh;
      mse[n] += w[n] * d * d / per;
      if (!ls) continue;
      double v = out[n * Co * HW + per + i], x = xt[n * per + i], a = x0[n * per + i];
      double frac = (v + 1) / 2;
      double lv = frac * tb.log_beta[ti] + (1 - frac) * tb.post_log_var[ti];
      double x0h = tb.sqrt_recip_abar[ti] * x - tb.sqrt_recipm1_abar[ti] * eh;
      double mu = tb.coef1[ti] * x0h + tb.coef2[ti] * x;
      double term;
      if (ti > 0) {
        double mu1 = tb.coef1[ti] * a + tb.coef2[ti] * x, lv1 = tb.post_log_var[ti];
        term = 0.5 * (-1 + lv - lv1 + std::exp(lv1 - lv) + (mu1 - mu) * (mu1 - mu) * std::exp(-lv));
      } else {
        double is = std::exp(-0.5 * lv), c = a - mu;
        double cp = cdf_ref(is * (c + 1 / 255.0)), cm = cdf_ref(is * (c - 1 / 255.0));
        double lp = a < -0.999 ? std::log(std::max(cp, 1e-12))
                    : a > 0.999 ? std::log(std::max(1 - cm, 1e-12))
                                : std::log(std::max(cp - cm, 1e-12));
        term = -lp;
      }
      vb[n] += term / per / std::log(2.0);
    }
    loss[n] = mse[n] + vb_scale * vb[n];
  }
}

void test_iddpm_loss(Rng& rng, const Tables& tb) {
  const int N = 4, C = 2, HW = 6, per = C * HW;
  for (bool ls : {true, false}) {
    const int Co = ls ? 2 * C : C;
    const double vb_scale = 0.7;
    int32_t t[N] = {0, 1, 420, 999};
    V x0 = rng.vec<double>(N * per), eps = rng.vec<double>(N * per), w = rng.vec<double>(N, 0.3, 1.7);
    x0[0] = -1.0;  // edge bins of the t = 0 decoder likelihood
    x0[1] = 1.0;
    V xt(N * per), out = rng.vec<double>(N * Co * HW);
    B->q_sample(x0.data(), eps.data(), t, tb.view(), xt.data(), N, per);
    V loss(N), mse(N), vb(N), dout(out.size());
    poison(loss);
    poison(mse);
    poison(vb);
    poison(dout);
    B->iddpm_loss(out.data(), x0.data(), xt.data(), eps.data(), t, w.data(), tb.view(), vb_scale, ls,
                  loss.data(), mse.data(), vb.data(), dout.data(), N, C, HW);
    V rl, rm, rv;
    naive_loss(out, x0, xt, eps, t, w, tb, vb_scale, ls, N, C, HW, rl, rm, rv);
    std::string tag = std::string("iddpm_loss learn_sigma=") + (ls ? "on" : "off");
    expect(rel_err(loss, rl) < 1e-12 && rel_err(mse, rm) < 1e-12 && rel_err(vb, rv, 1e-300) < 1e-12,
           tag + " loss, mse, vb vs naive reference (t = 0, 1, 420, 999)",
           "rel " + fmt(std::max(rel_err(loss, rl), rel_err(vb, rv, 1e-300))));
    if (!ls) expect(std::all_of(vb.begin(), vb.end(), [](double v) { return v == 0; }), tag + " vb = 0");
    // eps_hat channels: gradient of the batch-mean mse (stop-gradient inside vb);
    // v channels: gradient of the batch-mean loss.
    auto mean_of = [&](bool only_mse) {
      V l(N), m(N), v(N), d(out.size());
      B->iddpm_loss(out.data(), x0.data(), xt.data(), eps.data(), t, w.data(), tb.view(), vb_scale, ls,
                    l.data(), m.data(), v.data(), d.data(), N, C, HW);
      double s = 0;
      for (int n = 0; n < N; ++n) s += (only_mse ? m[n] : l[n]) / N;
      return s;
    };
    V g_mse = numeric_grad(out, [&] { return mean_of(true); });
    V g_all = numeric_grad(out, [&] { return mean_of(false); });
    V a_e, n_e, a_v, n_v;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < Co * HW; ++i) {
        size_t k = n * Co * HW + i;
        if (i < per) {
          a_e.push_back(dout[k]);
          n_e.push_back(g_mse[k]);
        } else {
          a_v.push_back(dout[k]);
          n_v.push_back(g_all[k]);
        }
      }
    double ee = rel_err(a_e, n_e);
    expect(ee < kTolFD, tag + " d/d(eps_hat) = d(mean mse) (stop-gradient in vb)", "rel " + fmt(ee));
    if (ls) {
      double ev = rel_err(a_v, n_v);
      expect(ev < kTolFD, tag + " d/dv vs finite differences (KL and t = 0 NLL)", "rel " + fmt(ev));
      // each branch on its own: sample 0 is t = 0, samples 2-3 are KL
      V a0(a_v.begin(), a_v.begin() + per), n0(n_v.begin(), n_v.begin() + per);
      expect(rel_err(a0, n0) < kTolFD, tag + " d/dv at t = 0 (decoder NLL)", "rel " + fmt(rel_err(a0, n0)));
    }
  }
}

// ---- sampling step (IDDPM p_sample / DDIM) ----------------------------------------------------
void test_sample_step(Rng& rng, const Tables& tb) {
  const int N = 2, C = 3, HW = 5, per = C * HW;
  for (int mode : {0, 1})
    for (bool ls : {true, false})
      for (bool cfg : {false, true})
        for (bool clip : {false, true}) {
          const int Co = ls ? 2 * C : C, rows = cfg ? 2 * N : N;
          const int t = 300, tp = 250;
          speed::SampleStepCoefs k;
          k.mode = mode;
          k.sqrt_recip_abar = tb.sqrt_recip_abar[t];
          k.sqrt_recipm1_abar = tb.sqrt_recipm1_abar[t];
          k.coef1 = tb.coef1[t];
          k.coef2 = tb.coef2[t];
          k.log_beta = tb.log_beta[t];
          k.post_log_var = tb.post_log_var[t];
          double abar = 1 / (k.sqrt_recip_abar * k.sqrt_recip_abar);
          double abar_prev = tb.sqrt_abar[tp] * tb.sqrt_abar[tp], eta = 0.5;
          k.sigma = eta * std::sqrt((1 - abar_prev) / (1 - abar)) * std::sqrt(1 - abar / abar_prev);
          k.sqrt_abar_prev = std::sqrt(abar_prev);
          k.eps_coef = std::sqrt(1 - abar_prev - k.sigma * k.sigma);
          k.add_noise = true;
          k.clip_x0 = clip;
          k.cfg = cfg;
          k.guidance = 4.0;
          V mo = rng.vec<double>(rows * Co * HW, -2, 2), x = rng.vec<double>(N * per, -2, 2);
          V z = rng.vec<double>(N * per), x1 = x;
          B->sample_step(mo.data(), x1.data(), z.data(), N, C, HW, ls, k);
          V ref(N * per);
          for (int n = 0; n < N; ++n)
            for (int i = 0; i < per; ++i) {
              double e = mo[n * Co * HW + i];
              if (cfg) {
                double en = mo[(N + n) * Co * HW + i];
                e = en + 4.0 * (e - en);
              }
              double xi = x[n * per + i];
              double x0 = k.sqrt_recip_abar * xi - k.sqrt_recipm1_abar * e;
              if (clip) x0 = std::max(-1.0, std::min(1.0, x0));
              double o;
              if (mode == 1) {
                double ee = clip ? (k.sqrt_recip_abar * xi - x0) / k.sqrt_recipm1_abar : e;
                o = k.sqrt_abar_prev * x0 + k.eps_coef * ee + k.sigma * z[n * per + i];
              } else {
                double lv = k.post_log_var;
                if (ls) {
                  double fr = (mo[n * Co * HW + per + i] + 1) / 2;  // variance from the cond half
                  lv = fr * k.log_beta + (1 - fr) * k.post_log_var;
                }
                o = k.coef1 * x0 + k.coef2 * xi + std::exp(0.5 * lv) * z[n * per + i];
              }
              ref[n * per + i] = o;
            }
          std::string tag = std::string("sample_step ") + (mode ? "DDIM" : "DDPM") +
                            (ls ? " learn_sigma" : "") + (cfg ? " cfg" : "") + (clip ? " clip" : "");
          expect(rel_err(x1, ref) < 1e-14, tag, "rel " + fmt(rel_err(x1, ref)));
        }
  // t = 0: no noise added (noise may be null)
  speed::SampleStepCoefs k;
  k.sqrt_recip_abar = 1.1;
  k.sqrt_recipm1_abar = 0.2;
  k.coef1 = 1.0;
  k.coef2 = 0.0;
  V mo = rng.vec<double>(N * C * HW), x = rng.vec<double>(N * per), x1 = x;
  B->sample_step(mo.data(), x1.data(), nullptr, N, C, HW, false, k);
  bool ok = true;
  for (int i = 0; i < N * per; ++i) ok &= std::fabs(x1[i] - (1.1 * x[i] - 0.2 * mo[i])) < 1e-15;
  expect(ok, "sample_step DDPM last step adds no noise");
}

// ---- bitwise identical for 1, 2 and 3 threads (float32) --------------------------------
template <typename F>
void same_for_threads(const std::string& what, F run) {
  std::vector<std::vector<float>> outs;
  for (int th : {1, 2, 3}) {
    auto be = speed::make_cpu_backend<float>(th);
    outs.push_back(run(*be));
  }
  expect(bitwise_equal(outs[0], outs[1]) && bitwise_equal(outs[0], outs[2]) && all_finite(outs[0]),
         what + " identical for 1, 2, 3 threads");
}

void test_threads(Rng& rng) {
  using VF = std::vector<float>;
  const int N = 3, L = 37, D = 72, heads = 3, hd = D / heads, M = N * L;
  VF x = rng.vec<float>(M * D), w = rng.vec<float>(4 * D * D), b = rng.vec<float>(4 * D);
  VF mod = rng.vec<float>(N * 6 * D), dyv = rng.vec<float>(M * 4 * D);
  for (bool builtin : {true, false}) {
    speed::cpu_force_builtin_gemm(builtin);
    std::string g = builtin ? " [builtin gemm]" : std::string(" [") + speed::cpu_gemm_name() + "]";
    same_for_threads("linear forward+backward gelu" + g, [&](Backend<float>& be) {
      VF y(M * 4 * D), pre(M * 4 * D), dy = dyv, dx(M * D), dw(4 * D * D), db(4 * D);
      be.linear_forward(x.data(), w.data(), b.data(), y.data(), pre.data(), M, D, 4 * D, Act::GeluTanh);
      be.linear_backward(x.data(), w.data(), dy.data(), pre.data(), dx.data(), dw.data(), db.data(), M,
                         D, 4 * D, Act::GeluTanh, false);
      VF all = y;
      for (auto* v : {&dx, &dw, &db}) all.insert(all.end(), v->begin(), v->end());
      return all;
    });
  }
  speed::cpu_force_builtin_gemm(false);
  same_for_threads("ln_modulate forward+backward", [&](Backend<float>& be) {
    VF y(M * D), mean(M), rstd(M), dx(M * D), dmod(N * 6 * D, 0.f);
    be.ln_modulate_forward(x.data(), mod.data(), mod.data() + D, 6 * D, y.data(), mean.data(), rstd.data(),
                           N, L, D, 1e-6);
    be.ln_modulate_backward(dyv.data(), x.data(), mean.data(), rstd.data(), mod.data() + D, 6 * D,
                            dx.data(), dmod.data(), dmod.data() + D, N, L, D, false);
    VF all = y;
    all.insert(all.end(), dx.begin(), dx.end());
    all.insert(all.end(), dmod.begin(), dmod.end());
    return all;
  });
  same_for_threads("gated_residual forward+backward", [&](Backend<float>& be) {
    VF xx = x, dh(M * D), dmod(N * 6 * D, 0.f);
    be.gated_residual_forward(xx.data(), mod.data() + 2 * D, 6 * D, dyv.data(), N, L, D);
    be.gated_residual_backward(dyv.data(), mod.data() + 2 * D, 6 * D, x.data(), dh.data(),
                               dmod.data() + 2 * D, N, L, D);
    VF all = xx;
    all.insert(all.end(), dh.begin(), dh.end());
    all.insert(all.end(), dmod.begin(), dmod.end());
    return all;
  });
  same_for_threads("attention forward+backward", [&](Backend<float>& be) {
    VF qkv(dyv.begin(), dyv.begin() + M * 3 * D), out(M * D), lse(N * heads * L), dq(M * 3 * D);
    be.attention_forward(qkv.data(), out.data(), lse.data(), N, L, heads, hd);
    be.attention_backward(qkv.data(), out.data(), x.data(), lse.data(), dq.data(), N, L, heads, hd);
    VF all = out;
    all.insert(all.end(), lse.begin(), lse.end());
    all.insert(all.end(), dq.begin(), dq.end());
    return all;
  });
  same_for_threads("silu, patchify, embeddings, normal", [&](Backend<float>& be) {
    VF s(M * D), ds(M * D), tok(2 * 3 * 16 * 16), img = rng.vec<float>(0), noise(100003);
    be.silu_forward(x.data(), s.data(), s.size());
    be.silu_backward(x.data(), dyv.data(), ds.data(), ds.size(), false);
    VF im(2 * 3 * 16 * 16);
    for (size_t i = 0; i < im.size(); ++i) im[i] = float(i % 97) * 0.01f;
    be.patchify(im.data(), tok.data(), 2, 3, 16, 16, 2, PatchLayout::PPC);
    int32_t idx[4] = {1, 1, 0, 2};
    VF dt(3 * D);
    be.embedding_backward(x.data(), idx, dt.data(), 4, D, 3);
    be.normal(noise.data(), noise.size(), 1234, 77);
    VF all = s;
    for (auto* v : {&ds, &tok, &dt, &noise}) all.insert(all.end(), v->begin(), v->end());
    return all;
  });
}

// ---- float32 fast math and float32 kernels against float64 ------------------------
void test_float32(Rng& rng) {
  double ee = 0, et = 0;
  for (int i = -800000; i <= 80000; ++i) {  // exp on [-80, 8]: softmax arguments are <= 0
    float x = i * 1e-4f;
    double r = std::exp(double(x));
    ee = std::max(ee, std::fabs(speed::cpu::fast_exp(x) - r) / r);
  }
  for (int i = -200000; i <= 200000; ++i) {
    float x = i * 1e-4f;
    et = std::max(et, std::fabs(speed::cpu::fast_tanh(x) - std::tanh(double(x))));
  }
  expect(ee < 3e-7, "fast_exp relative error on [-80, 8]", fmt(ee));
  expect(et < 5e-7, "fast_tanh absolute error on [-20, 20]", fmt(et));
  expect(speed::cpu::fast_tanh(1e30f) == speed::cpu::fast_tanh(50.f) && speed::cpu::fast_exp(-1e30f) >= 0 &&
             std::isfinite(speed::cpu::fast_exp(1e30f)),
         "fast math saturates without NaN or Inf");

  auto F = speed::make_cpu_backend<float>(2);
  {  // linear + GELU
    const int M = 37, K = 64, N = 50;
    V x = rng.vec<double>(M * K, -2, 2), w = rng.vec<double>(N * K, -0.3, 0.3), b = rng.vec<double>(N), ref;
    std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), bf(b.begin(), b.end()), y(M * N), pre(M * N);
    naive_linear(x, w, &b, ref, M, K, N, Act::GeluTanh);
    F->linear_forward(xf.data(), wf.data(), bf.data(), y.data(), pre.data(), M, K, N, Act::GeluTanh);
    double e = 0;
    for (int i = 0; i < M * N; ++i) e = std::max(e, std::fabs(y[i] - ref[i]));
    expect(e < 1e-5, "float32 linear + GELU vs float64 reference (abs)", fmt(e));
  }
  {  // attention
    const int N = 2, L = 67, H = 2, hd = 16;
    V qkv = rng.vec<double>(N * L * 3 * H * hd, -2, 2), ro, rl;
    std::vector<float> qf(qkv.begin(), qkv.end()), out(N * L * H * hd), lse(N * H * L);
    naive_attention(qkv, ro, rl, N, L, H, hd);
    F->attention_forward(qf.data(), out.data(), lse.data(), N, L, H, hd);
    expect(rel_err(out, ro) < 1e-5 && rel_err(lse, rl) < 1e-6, "float32 attention vs float64 reference",
           "rel " + fmt(std::max(rel_err(out, ro), rel_err(lse, rl))));
  }
}

}  // namespace

int main() {
  B = speed::make_cpu_backend<double>(2);
  Rng rng(20240527);
  test_linear(rng);
  speed::cpu_force_builtin_gemm(true);  // the builtin kernel through the same checks
  test_linear(rng);
  speed::cpu_force_builtin_gemm(false);
  test_elementwise(rng);
  test_patches(rng);
  test_ln(rng);
  test_gated(rng);
  test_attention(rng);
  test_embeddings(rng);
  Tables tb = linear_tables(1000);
  test_q_sample(rng, tb);
  test_iddpm_loss(rng, tb);
  test_sample_step(rng, tb);
  test_float32(rng);
  test_threads(rng);
  return finish("test_cpu_ops");
}
