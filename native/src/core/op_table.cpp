// The op table (see op_table.h): one builder per Backend op, then the shapes each driver
// runs it at. Fills, shapes and tolerances are those the ops were checked at before the
// table existed: tiny shapes with uniform fills for the float64 finite differences, odd
// sizes (batch 1, token counts that are no multiple of any tile, head_dim 32/64/72,
// D = 50 for the scalar kernels, D = 2056 for wide rows) with normal fills for CUDA.
#include "op_table.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>

#include "layout.h"
#include "speed/bench.h"

namespace speed::ops {

namespace {

using V = std::vector<double>;

std::string dims(std::initializer_list<std::pair<const char*, long>> kv) {
  std::string s;
  for (auto& [k, v] : kv) s += std::string(" ") + k + std::to_string(v);
  return s;
}

double gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double gelu_grad(double x) {
  const double s = std::sqrt(2 / M_PI), u = s * (x + 0.044715 * x * x * x), th = std::tanh(u);
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * s * (1 + 3 * 0.044715 * x * x);
}

// ---- Linear ------------------------------------------------------------------------------
struct LinearFills {
  Fill x = Fill::uniform(), w = Fill::uniform(), b = Fill::uniform();
};
OpCase linear(int M, int K, int N, Act act, bool bias, unsigned modes, LinearFills f = {}) {
  OpCase c;
  c.op = "linear";
  c.section = "linear";
  c.modes = modes;
  c.uses_gemm = true;
  const bool gelu_on = act == Act::GeluTanh;
  c.name = "linear" + dims({{"M", M}, {"K", K}, {"N", N}}) + (gelu_on ? " gelu" : "") + (bias ? " bias" : " nobias");
  const int x = c.in("x", size_t(M) * K, f.x), w = c.in("w", size_t(N) * K, f.w);
  const int b = bias ? c.in("b", N, f.b) : -1;
  const int y = c.out("y", size_t(M) * N, Tol::gemm());
  const int pre = gelu_on ? c.out("pre", size_t(M) * N, Tol::gemm()) : -1;
  const int dy = c.dout(y, Fill::normal(), Tol::all(1e-5));
  c.t[dy].bwd_writes = gelu_on;  // overwritten with d(pre)
  const int dx = c.din(x, true, Tol::gemm(), Fill::normal());
  const int dw = c.din(w, false, Tol::gemm());
  const int db = bias ? c.din(b, false, Tol{1e-5, 1e-5, 2e-2}) : -1;
  c.forward([=](auto& be, auto& t) { be.linear_forward(t[x], t[w], t[b], t[y], t[pre], M, K, N, act); });
  c.backward([=](auto& be, auto& t, bool acc) {
    be.linear_backward(t[x], t[w], t[dy], t[pre], t[dx], t[dw], t[db], M, K, N, act, acc);
  });
  c.reference = [=](Host& h) {
    V& yy = h.out(y);
    V* pp = pre >= 0 ? &h.out(pre) : nullptr;
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double s = b >= 0 ? h[b][j] : 0;
        for (int k = 0; k < K; ++k) s += h[x][i * K + k] * h[w][j * K + k];
        if (pp) (*pp)[i * N + j] = s;
        yy[i * N + j] = gelu_on ? gelu(s) : s;
      }
  };
  if (gelu_on)
    c.reference_bwd = [=](Host& h) {
      V& d = h.out(dy);
      for (size_t i = 0; i < d.size(); ++i) d[i] *= gelu_grad(h[pre][i]);
    };
  c.perf_fwd = gelu_on ? "linear_fwd fc1+gelu" : "linear_fwd qkv";
  c.perf_bwd = gelu_on ? "linear_bwd fc1+gelu" : "linear_bwd qkv";
  c.fwd_flops = 2.0 * M * K * double(N);
  c.bwd_flops = 2 * c.fwd_flops;
  return c;
}

// ---- elementwise -------------------------------------------------------------------------
OpCase silu(size_t n, Fill xf, Tol tol, unsigned modes) {
  OpCase c;
  c.op = c.section = "elementwise";
  c.name = "silu n" + std::to_string(n);
  c.modes = modes;
  const int x = c.in("x", n, std::move(xf)), y = c.out("y", n, tol);
  const int dy = c.dout(y, Fill::normal()), dx = c.din(x, true, tol, Fill::normal());
  c.forward([=](auto& be, auto& t) { be.silu_forward(t[x], t[y], n); });
  c.backward([=](auto& be, auto& t, bool acc) { be.silu_backward(t[x], t[dy], t[dx], n, acc); });
  c.reference = [=](Host& h) {
    for (size_t i = 0; i < n; ++i) h.out(y)[i] = h[x][i] / (1 + std::exp(-h[x][i]));
  };
  c.ref_tol = 1e-14;
  return c;
}

OpCase add(size_t n, bool alias, Fill f, double tol, unsigned modes) {
  OpCase c;
  c.op = c.section = "elementwise";
  c.name = std::string("add n") + std::to_string(n) + (alias ? " (y aliases a)" : "");
  c.modes = modes;
  const int a = alias ? c.inout("a", n, f, Tol::all(tol)) : c.in("a", n, f);
  const int b = c.in("b", n, f);
  const int y = alias ? a : c.out("y", n, Tol::all(tol));
  c.forward([=](auto& be, auto& t) { be.add(t[a], t[b], t[y], n); });
  c.reference = [=](Host& h) {
    V s(n);
    for (size_t i = 0; i < n; ++i) s[i] = h[a][i] + h[b][i];
    h.out(y) = s;
  };
  c.ref_tol = 0;
  return c;
}

OpCase add_rows(size_t rows, size_t len, Fill f, double tol, unsigned modes) {
  OpCase c;
  c.op = c.section = "elementwise";
  c.name = "add_rows" + dims({{"rows", long(rows)}, {"n", long(len)}});
  c.modes = modes;
  const int x = c.inout("x", rows * len, f, Tol::all(tol)), row = c.in("row", len, f);
  c.forward([=](auto& be, auto& t) { be.add_rows(t[x], t[row], rows, len); });
  c.reference = [=](Host& h) {
    V& o = h.out(x);
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < len; ++j) o[r * len + j] += h[row][j];
  };
  c.ref_tol = 0;
  return c;
}

OpCase fill(size_t n, double value, unsigned modes) {
  OpCase c;
  c.op = c.section = "elementwise";
  c.name = "fill n" + std::to_string(n);
  c.modes = modes;
  const int y = c.out("y", n, Tol::all(0));
  c.forward([=](auto& be, auto& t) {
    using T = std::remove_pointer_t<decltype(t[y])>;
    be.fill(t[y], T(value), n);
  });
  c.reference = [=](Host& h) { h.out(y).assign(n, value); };
  c.ref_tol = 0;
  return c;
}

// ---- patches ----------------------------------------------------------------------------
// Index of img element (n, c, y, x) in token layout.
size_t tok_index(int n, int c, int yy, int xx, int C, int H, int W, int p, PatchLayout lay) {
  const int gw = W / p, L = (H / p) * gw, tokd = C * p * p;
  const int t = (yy / p) * gw + xx / p, py = yy % p, px = xx % p;
  const int k = lay == PatchLayout::CPP ? c * p * p + py * p + px : (py * p + px) * C + c;
  return (size_t(n) * L + t) * tokd + k;
}

// unpatchify = false: patchify (img -> tok), backward unpatchify (its adjoint);
// unpatchify = true: the inverse permutation, backward patchify.
OpCase patch(int N, int C, int H, int W, int p, PatchLayout lay, bool unpatch, Fill f, unsigned modes) {
  OpCase c;
  c.op = unpatch ? "unpatchify" : "patchify";
  c.section = "patch";
  c.modes = modes;
  c.name = c.op + (lay == PatchLayout::CPP ? " CPP" : " PPC") + dims({{"N", N}, {"C", C}, {"H", H}, {"W", W}, {"p", p}});
  const size_t n = size_t(N) * C * H * W;
  const int a = c.in(unpatch ? "tok" : "img", n, f), b = c.out(unpatch ? "img" : "tok", n, Tol::all(0));
  const int db = c.dout(b), da = c.din(a, false, Tol::all(0));
  auto pf = [=](auto& be, auto* src, auto* dst, bool inverse) {
    if (inverse)
      be.unpatchify(src, dst, N, C, H, W, p, lay);
    else
      be.patchify(src, dst, N, C, H, W, p, lay);
  };
  c.forward([=](auto& be, auto& t) { pf(be, t[a], t[b], unpatch); });
  c.backward([=](auto& be, auto& t, bool) { pf(be, t[db], t[da], !unpatch); });
  c.reference = [=](Host& h) {
    V& o = h.out(b);
    for (int i = 0; i < N; ++i)
      for (int ch = 0; ch < C; ++ch)
        for (int yy = 0; yy < H; ++yy)
          for (int xx = 0; xx < W; ++xx) {
            const size_t im = ((size_t(i) * C + ch) * H + yy) * W + xx, tk = tok_index(i, ch, yy, xx, C, H, W, p, lay);
            if (unpatch)
              o[im] = h[a][tk];
            else
              o[tk] = h[a][im];
          }
  };
  c.ref_tol = 0;
  c.perf_fwd = unpatch ? "" : "patchify";
  c.fwd_bytes = 2.0 * n * sizeof(float);
  return c;
}

// ---- LayerNorm + modulation ---------------------------------------------------------------
struct LnFills {
  Fill x = Fill::uniform(-2, 3), mod = Fill::uniform();
};
// mod is a [N, k D] adaLN row: shift = chunk 0, scale = chunk 1.
OpCase ln_modulate(int N, int L, int D, int chunks, unsigned modes, const std::string& section, LnFills f = {}) {
  OpCase c;
  c.op = "ln_modulate";
  c.section = section;
  c.modes = modes;
  c.name = "ln_modulate" + dims({{"N", N}, {"L", L}, {"D", D}}) + " mod_stride " + std::to_string(chunks) + "D";
  const int stride = chunks * D;
  const double eps = kLnEps;
  const size_t nld = size_t(N) * L * D;
  const int x = c.in("x", nld, f.x), mod = c.in("mod", size_t(N) * stride, f.mod);
  const int y = c.out("y", nld), mean = c.out("mean", size_t(N) * L), rstd = c.out("rstd", size_t(N) * L);
  const int dy = c.dout(y, Fill::normal());
  const int dx = c.din(x, true, {}, Fill::normal());
  const int dmod = c.din(mod, false, {}, Fill::constant(7.0));
  c.t[dmod].region = [=](size_t i) { return int(i % stride) < 2 * D; };
  c.det_bwd = kAllMaths;
  c.forward([=](auto& be, auto& t) {
    be.ln_modulate_forward(t[x], t[mod], t[mod] + D, stride, t[y], t[mean], t[rstd], N, L, D, eps);
  });
  c.backward([=](auto& be, auto& t, bool acc) {
    be.ln_modulate_backward(t[dy], t[x], t[mean], t[rstd], t[mod] + D, stride, t[dx], t[dmod], t[dmod] + D, N, L,
                            D, acc);
  });
  c.optional_grads = {dx};
  c.reference = [=](Host& h) {
    V &yy = h.out(y), &mm = h.out(mean), &rr = h.out(rstd);
    for (int n = 0; n < N; ++n)
      for (int l = 0; l < L; ++l) {
        const double* xr = &h[x][(size_t(n) * L + l) * D];
        double mu = 0, var = 0;
        for (int i = 0; i < D; ++i) mu += xr[i] / D;
        for (int i = 0; i < D; ++i) var += (xr[i] - mu) * (xr[i] - mu) / D;
        mm[n * L + l] = mu;
        rr[n * L + l] = 1 / std::sqrt(var + eps);
        for (int i = 0; i < D; ++i)
          yy[(size_t(n) * L + l) * D + i] =
              (xr[i] - mu) / std::sqrt(var + eps) * (1 + h[mod][n * stride + D + i]) + h[mod][n * stride + i];
      }
  };
  c.perf_fwd = "ln_modulate_fwd";
  c.perf_bwd = "ln_modulate_bwd";
  c.fwd_bytes = (2.0 * nld + 2.0 * N * L) * sizeof(float);
  c.bwd_bytes = (3.0 * nld + 2.0 * N * L) * sizeof(float);
  return c;
}

// ---- gated residual -----------------------------------------------------------------------
// gate = chunk 2 of a [N, 6D] adaLN row; x += gate * h in place.
OpCase gated_residual(int N, int L, int D, unsigned modes, const std::string& section, Fill f = Fill::uniform(),
                      Fill fmod = Fill::uniform()) {
  OpCase c;
  c.op = "gated_residual";
  c.section = section;
  c.modes = modes;
  c.name = "gated_residual" + dims({{"N", N}, {"L", L}, {"D", D}});
  const int stride = 6 * D, goff = 2 * D;
  const size_t nld = size_t(N) * L * D;
  const int x = c.inout("x", nld, f, Tol::all(1e-6)), mod = c.in("mod", size_t(N) * stride, fmod);
  const int h = c.in("h", nld, f);
  const int dx = c.dout(x, Fill::normal());
  const int dh = c.din(h, false, Tol::all(1e-6)), dmod = c.din(mod, false, {}, Fill::constant(5.0));
  c.t[dmod].region = [=](size_t i) { return int(i % stride) >= goff && int(i % stride) < goff + D; };
  c.det_bwd = kAllMaths;
  c.forward([=](auto& be, auto& t) { be.gated_residual_forward(t[x], t[mod] + goff, stride, t[h], N, L, D); });
  c.backward([=](auto& be, auto& t, bool) {
    be.gated_residual_backward(t[dx], t[mod] + goff, stride, t[h], t[dh], t[dmod] + goff, N, L, D);
  });
  c.reference = [=](Host& hh) {
    V& o = hh.out(x);
    for (int n = 0; n < N; ++n)
      for (int l = 0; l < L; ++l)
        for (int i = 0; i < D; ++i) {
          const size_t k = (size_t(n) * L + l) * D + i;
          o[k] += hh[mod][n * stride + goff + i] * hh[h][k];
        }
  };
  c.ref_tol = 1e-15;
  c.perf_fwd = "gated_residual_fwd";
  c.perf_bwd = "gated_residual_bwd";
  c.fwd_bytes = c.bwd_bytes = 3.0 * nld * sizeof(float);
  return c;
}

// ---- attention -----------------------------------------------------------------------------
// In bf16 the CUDA backend runs the tensor-core kernels (bf16 operands, float32 softmax and
// accumulation): 2e-2 against the CPU there, and also against the CUDA float32 path and the
// SPEED_CUDA_ATTENTION=fp32 fallback (cross_fp32).
OpCase attention(int N, int L, int H, int hd, unsigned modes, Fill f, bool warps8 = false) {
  OpCase c;
  c.op = "attention";
  c.section = warps8 ? "attnw8" : "attention";
  c.modes = modes;
  c.name = "attention" + dims({{"N", N}, {"L", L}, {"heads", H}, {"hd", hd}}) + (warps8 ? " w8" : "");
  const int D = H * hd;
  const Tol tol{1e-5, 1e-5, 2e-2};
  const int qkv = c.in("qkv", size_t(N) * L * 3 * D, f);
  const int out = c.out("out", size_t(N) * L * D, tol), lse = c.out("lse", size_t(N) * H * L, tol);
  const int dout = c.dout(out, Fill::normal());
  const int dqkv = c.din(qkv, false, tol);
  c.det_bwd = 1u << int(CudaMath::BF16);
  c.cross_fp32 = true;
  c.fallback_env = {"SPEED_CUDA_ATTENTION", "fp32"};
  if (warps8) {
    c.env = {{"SPEED_CUDA_ATTN_WARPS", "8"}};
    c.maths = 1u << int(CudaMath::BF16);
  }
  c.forward([=](auto& be, auto& t) { be.attention_forward(t[qkv], t[out], t[lse], N, L, H, hd); });
  c.backward([=](auto& be, auto& t, bool) {
    be.attention_backward(t[qkv], t[out], t[dout], t[lse], t[dqkv], N, L, H, hd);
  });
  c.reference = [=](Host& h) {
    V &o = h.out(out), &ls = h.out(lse);
    const V& q = h[qkv];
    const double sc = 1 / std::sqrt(double(hd));
    for (int n = 0; n < N; ++n)
      for (int hh = 0; hh < H; ++hh)
        for (int i = 0; i < L; ++i) {
          V s(L);
          double mx = -1e300;
          for (int j = 0; j < L; ++j) {
            double d = 0;
            for (int e = 0; e < hd; ++e)
              d += q[((size_t(n) * L + i) * 3 + 0) * D + hh * hd + e] * q[((size_t(n) * L + j) * 3 + 1) * D + hh * hd + e];
            s[j] = d * sc;
            mx = std::max(mx, s[j]);
          }
          double z = 0;
          for (int j = 0; j < L; ++j) z += std::exp(s[j] - mx);
          ls[(size_t(n) * H + hh) * L + i] = mx + std::log(z);
          for (int e = 0; e < hd; ++e) {
            double acc = 0;
            for (int j = 0; j < L; ++j) acc += std::exp(s[j] - mx) / z * q[((size_t(n) * L + j) * 3 + 2) * D + hh * hd + e];
            o[(size_t(n) * L + i) * D + hh * hd + e] = acc;
          }
        }
  };
  c.perf_fwd = "attention_fwd";
  c.perf_bwd = "attention_bwd";
  c.fwd_flops = 4.0 * N * double(L) * L * D;
  c.bwd_flops = 2 * c.fwd_flops;
  return c;
}

// ---- embeddings -----------------------------------------------------------------------------
OpCase timestep_embedding(const std::vector<int32_t>& ts, int dim, double tol, unsigned modes) {
  OpCase c;
  c.op = "timestep_embedding";
  c.section = "embedding";
  c.modes = modes;
  const int N = int(ts.size());
  c.name = "timestep_embedding" + dims({{"N", N}, {"dim", dim}});
  const int t = c.ints("t", ts), o = c.out("out", size_t(N) * dim, Tol::all(tol));
  c.forward([=](auto& be, auto& b) { be.timestep_embedding(b.idx(t), b[o], N, dim, 10000.0); });
  c.reference = [=](Host& h) {  // an odd dim pads a zero at the end of each row
    V& r = h.out(o);
    r.assign(r.size(), 0.0);
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < dim / 2; ++i) {
        const double f = std::exp(-std::log(10000.0) * i / (dim / 2));
        r[n * dim + i] = std::cos(h[t][n] * f);
        r[n * dim + dim / 2 + i] = std::sin(h[t][n] * f);
      }
  };
  c.ref_tol = 1e-14;
  return c;
}

OpCase embedding(int rows, int D, const std::vector<int32_t>& idx, Fill f, double bwd_tol, unsigned modes) {
  OpCase c;
  c.op = "embedding";
  c.section = "embedding";
  c.modes = modes;
  const int N = int(idx.size());
  c.name = "embedding" + dims({{"rows", rows}, {"D", D}, {"N", N}}) + " (repeated labels, unused rows)";
  const int table = c.in("table", size_t(rows) * D, f), ix = c.ints("idx", idx);
  const int o = c.out("out", size_t(N) * D, Tol::all(0));
  const int dout = c.dout(o, f), dt = c.din(table, false, Tol::all(bwd_tol));
  c.forward([=](auto& be, auto& b) { be.embedding_forward(b[table], b.idx(ix), b[o], N, D); });
  c.backward([=](auto& be, auto& b, bool) { be.embedding_backward(b[dout], b.idx(ix), b[dt], N, D, rows); });
  c.reference = [=](Host& h) {
    V& r = h.out(o);
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < D; ++i) r[n * D + i] = h[table][size_t(h[ix][n]) * D + i];
  };
  c.ref_tol = 0;
  return c;
}

// ---- noise -------------------------------------------------------------------------------------
// float64 math rounded to float32 on both backends: identical unless libm and CUDA's float64
// functions differ by an ulp right at a rounding boundary.
OpCase normal(size_t n, uint64_t seed, uint64_t offset, unsigned modes) {
  OpCase c;
  c.op = "normal";
  c.section = "noise";
  c.modes = modes;
  c.name = "normal n" + std::to_string(n);
  Tol tol = Tol::all(2e-7);
  tol.elementwise = true;
  const int x = c.out("x", n, tol);
  c.forward([=](auto& be, auto& t) { be.normal(t[x], n, seed, offset); });
  return c;
}

// ---- diffusion ------------------------------------------------------------------------------------
struct DiffusionInputs {
  V x0, eps, xt;
};
// x0 with the edge bins of the t = 0 decoder likelihood (x0 = -1 and 1) among the first
// `edges` values, eps, and xt = q_sample(x0, eps, t) on the host.
DiffusionInputs diffusion_inputs(uint64_t seed, const std::vector<int32_t>& ts, size_t per, bool normal_fill,
                                 double x0_scale, int edges, const DiffusionTables& tb) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::normal_distribution<double> nd(0, 1);
  DiffusionInputs d;
  const size_t n = ts.size() * per;
  for (size_t i = 0; i < n; ++i) d.x0.push_back(normal_fill ? x0_scale * nd(rng) : u(rng));
  for (size_t i = 0; i < n; ++i) d.eps.push_back(normal_fill ? nd(rng) : u(rng));
  for (int i = 0; i < edges && size_t(i) < n; ++i) d.x0[i] = (i % 2) ? 1.0 : -1.0;
  d.xt.resize(n);
  for (size_t s = 0; s < ts.size(); ++s)
    for (size_t i = 0; i < per; ++i)
      d.xt[s * per + i] = tb.sqrt_abar[ts[s]] * d.x0[s * per + i] + tb.sqrt_1m_abar[ts[s]] * d.eps[s * per + i];
  return d;
}

OpCase q_sample(const std::vector<int32_t>& ts, size_t per, bool normal_fill, double tol, unsigned modes) {
  static const DiffusionTables tb = linear_diffusion_tables(1000);
  OpCase c;
  c.op = "q_sample";
  c.section = "diffusion";
  c.modes = modes;
  const int N = int(ts.size());
  c.name = "q_sample" + dims({{"N", N}, {"per", long(per)}});
  DiffusionInputs d = diffusion_inputs(0x51u + per, ts, per, normal_fill, 0.6, normal_fill ? 12 : 0, tb);
  const int x0 = c.in("x0", d.x0.size(), Fill::of(d.x0)), eps = c.in("eps", d.eps.size(), Fill::of(d.eps));
  const int t = c.ints("t", ts), tabs = c.tables(tb);
  const int xt = c.out("xt", size_t(N) * per, Tol::all(tol));
  c.forward([=](auto& be, auto& b) { be.q_sample(b[x0], b[eps], b.idx(t), tables_view(b, tabs, tb.steps()), b[xt], N, per); });
  c.reference = [=](Host& h) { h.out(xt) = d.xt; };
  c.ref_tol = 1e-15;
  return c;
}

// IDDPM hybrid loss; its gradient (dout) is a forward output: the eps_hat channels against
// d(mean mse) (stop-gradient on eps_hat inside vb), the v channels against d(mean loss).
OpCase iddpm_loss(const std::vector<int32_t>& ts, int C, int HW, bool ls, double vb_scale, const std::vector<double>& w,
                  bool normal_fill, unsigned modes) {
  static const DiffusionTables tb = linear_diffusion_tables(1000);
  OpCase c;
  c.op = "iddpm_loss";
  c.section = "diffusion";
  c.modes = modes;
  const int N = int(ts.size()), Co = ls ? 2 * C : C;
  const size_t per = size_t(C) * HW;
  c.name = std::string("iddpm_loss") + dims({{"N", N}, {"C", C}, {"HW", HW}}) + (ls ? " learn_sigma" : " eps only");
  DiffusionInputs d = diffusion_inputs(0x1dd9u + HW, ts, per, normal_fill, 0.6, normal_fill ? 12 : 2, tb);
  const int mo = c.in("model_out", size_t(N) * Co * HW, normal_fill ? Fill::normal(0.8) : Fill::uniform());
  const int x0 = c.in("x0", d.x0.size(), Fill::of(d.x0)), xt = c.in("xt", d.xt.size(), Fill::of(d.xt));
  const int eps = c.in("eps", d.eps.size(), Fill::of(d.eps)), t = c.ints("t", ts);
  const int wt = c.in("weight", N, Fill::of(w)), tabs = c.tables(tb);
  const int loss = c.out("loss", N), mse = c.out("mse", N), vb = c.out("vb", N), dout = c.out("dout", size_t(N) * Co * HW);
  c.forward([=](auto& be, auto& b) {
    be.iddpm_loss(b[mo], b[x0], b[xt], b[eps], b.idx(t), b[wt], tables_view(b, tabs, tb.steps()), vb_scale, ls, b[loss], b[mse],
                  b[vb], b[dout], N, C, HW);
  });
  c.reference = [=](Host& h) {
    V &L = h.out(loss), &M = h.out(mse), &VB = h.out(vb);
    auto cdf = [](double x) { return 0.5 * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); };
    for (int n = 0; n < N; ++n) {
      const int ti = ts[n];
      M[n] = VB[n] = 0;
      for (size_t i = 0; i < per; ++i) {
        const double eh = h[mo][n * Co * HW + i], df = h[eps][n * per + i] - eh;
        M[n] += h[wt][n] * df * df / per;
        if (!ls) continue;
        const double v = h[mo][n * Co * HW + per + i], x = h[xt][n * per + i], a = h[x0][n * per + i];
        const double frac = (v + 1) / 2, lv = frac * tb.log_beta[ti] + (1 - frac) * tb.post_log_var[ti];
        const double x0h = tb.sqrt_recip_abar[ti] * x - tb.sqrt_recipm1_abar[ti] * eh;
        const double mu = tb.coef1[ti] * x0h + tb.coef2[ti] * x;
        double term;
        if (ti > 0) {
          const double mu1 = tb.coef1[ti] * a + tb.coef2[ti] * x, lv1 = tb.post_log_var[ti];
          term = 0.5 * (-1 + lv - lv1 + std::exp(lv1 - lv) + (mu1 - mu) * (mu1 - mu) * std::exp(-lv));
        } else {
          const double is = std::exp(-0.5 * lv), cc = a - mu;
          const double cp = cdf(is * (cc + 1 / 255.0)), cm = cdf(is * (cc - 1 / 255.0));
          const double lp = a < -0.999  ? std::log(std::max(cp, 1e-12))
                            : a > 0.999 ? std::log(std::max(1 - cm, 1e-12))
                                        : std::log(std::max(cp - cm, 1e-12));
          term = -lp;
        }
        VB[n] += term / per / std::log(2.0);
      }
      L[n] = M[n] + vb_scale * VB[n];
    }
  };
  c.ref_tol = 1e-12;
  c.ref_floor = 1e-300;  // vb is exactly 0 without learn_sigma
  auto mean_of = [=](int which) {
    return [=](const Host& h) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += h[which][n] / N;
      return s;
    };
  };
  const size_t co_hw = size_t(Co) * HW;
  c.fwd_grads.push_back({"d/d(eps_hat) = d(mean mse) (stop-gradient in vb)", dout, mo, mean_of(mse),
                         [=](size_t i) { return i % co_hw < per; }});
  if (ls) {
    c.fwd_grads.push_back({"d/dv vs finite differences (KL and t = 0 NLL)", dout, mo, mean_of(loss),
                           [=](size_t i) { return i % co_hw >= per; }});
    c.fwd_grads.push_back({"d/dv at t = " + std::to_string(ts[0]) + " (sample 0)", dout, mo, mean_of(loss),
                           [=](size_t i) { return i < co_hw && i >= per; }});
  }
  c.perf_fwd = "iddpm_loss";
  c.fwd_bytes = (2.0 * N * co_hw + 3.0 * N * per) * sizeof(float);
  return c;
}

// One reverse step on x in place; `noise` false passes a null noise pointer (needs !add_noise).
OpCase sample_step(int N, int C, int HW, bool ls, const SampleStepCoefs& k, bool noise, const std::string& tag,
                   Fill f, double tol, unsigned modes) {
  OpCase c;
  c.op = "sample_step";
  c.section = "diffusion";
  c.modes = modes;
  c.name = "sample_step " + tag + dims({{"N", N}, {"C", C}, {"HW", HW}});
  const int Co = ls ? 2 * C : C, rows = k.cfg ? 2 * N : N;
  const size_t per = size_t(C) * HW;
  const int mo = c.in("model_out", size_t(rows) * Co * HW, f), x = c.inout("x", N * per, f, Tol::all(tol));
  const int z = noise ? c.in("noise", N * per, Fill::uniform()) : -1;
  c.forward([=](auto& be, auto& b) { be.sample_step(b[mo], b[x], b[z], N, C, HW, ls, k); });
  c.reference = [=](Host& h) {
    V& o = h.out(x);
    const size_t guided = k.guidance_channels == 0 ? per : size_t(std::min(k.guidance_channels, C)) * HW;
    for (int n = 0; n < N; ++n)
      for (size_t i = 0; i < per; ++i) {
        double e = h[mo][n * Co * HW + i];
        if (k.cfg && i < guided) {
          const double en = h[mo][(N + n) * Co * HW + i];
          e = en + k.guidance * (e - en);
        }
        const double xi = h[x][n * per + i], zi = z >= 0 ? h[z][n * per + i] : 0;
        double x0 = k.sqrt_recip_abar * xi - k.sqrt_recipm1_abar * e, r;
        if (k.clip_x0) x0 = std::max(-1.0, std::min(1.0, x0));
        if (k.mode == SampleStepCoefs::DDIM) {
          const double ee = k.clip_x0 ? (k.sqrt_recip_abar * xi - x0) / k.sqrt_recipm1_abar : e;
          r = k.sqrt_abar_prev * x0 + k.eps_coef * ee + (k.add_noise ? k.sigma * zi : 0);
        } else {
          double lv = k.post_log_var;
          if (ls) {
            const double fr = (h[mo][n * Co * HW + per + i] + 1) / 2;  // the variance of the cond half
            lv = fr * k.log_beta + (1 - fr) * k.post_log_var;
          }
          r = k.coef1 * x0 + k.coef2 * xi + (k.add_noise ? std::exp(0.5 * lv) * zi : 0);
        }
        o[n * per + i] = r;
      }
  };
  c.ref_tol = 1e-14;
  c.perf_fwd = "sample_step";
  c.fwd_bytes = (double(N) * Co * HW + 3.0 * N * per) * sizeof(float);
  return c;
}

// ---- optimizer ----------------------------------------------------------------------------------
// AdamW + clipping + EMA over n parameters; scalars: grad_norm, skipped, update_nonfinite.
OpCase optimizer_step(size_t n, const OptimHyper& hp, bool ema_on, const std::string& tag, unsigned modes) {
  OpCase c;
  c.op = "optimizer_step";
  c.section = "optimizer";
  c.modes = modes;
  c.name = "optimizer_step n" + std::to_string(n) + " " + tag;
  std::mt19937 rng(7 + unsigned(n));
  std::normal_distribution<double> nd(0, 1);
  V p(n), v(n);
  for (auto& e : p) e = float(nd(rng));
  for (auto& e : v) {  // second moments: squares
    const float r = float(0.001 * nd(rng));
    e = double(r * r);
  }
  const Tol tol = Tol::all(1e-6);
  const int pp = c.inout("params", n, Fill::of(p), tol), g = c.in("grads", n, Fill::normal(0.01));
  const int m = c.inout("m", n, Fill::normal(0.001), tol), vv = c.inout("v", n, Fill::of(v), tol);
  const int ema = ema_on ? c.inout("ema", n, Fill::of(p), tol) : -1;
  const int losses = c.in("losses", 4, Fill::of({0.5, 0.25, 1.0, 2.0}));
  c.forward([=](auto& be, auto& b) {
    OptimResult r = be.optimizer_step(b[pp], b[g], b[m], b[vv], b[ema], n, hp, b[losses], 4);
    b.scalars = {r.grad_norm, double(r.skipped), double(r.update_nonfinite)};
  });
  c.perf_fwd = "optimizer_step";
  // bytes moved: norm pass 1 array, check pass 5 (p, g, m, v, EMA: the update is checked for
  // non-finite values before anything is written), update 5 read + 4 written
  c.fwd_bytes = 15.0 * n * sizeof(float);
  return c;
}

// ---- 2D convolution (the VAE's, Inception's and the CNN's) -------------------------------------------
// Which gradients a conv2d case checks: none (forward only), all of dx, dw and db, or dw and db with
// dx null (a network's first layer, whose input is the image).
enum class ConvGrads { None, All, NoDx };
// accum: forward adds into y (an InOut whose initial value the reference adds to).
OpCase conv2d(const Conv2dShape& s, bool bias, unsigned modes, ConvGrads grads = ConvGrads::None, bool accum = false) {
  OpCase c;
  c.op = "conv2d";
  c.section = "conv";
  c.modes = modes;
  c.uses_gemm = true;
  c.name = "conv2d" + dims({{"N", s.N}, {"Ci", s.Ci}, {"H", s.H}, {"W", s.W}, {"Co", s.Co}}) + " k" + std::to_string(s.kh) +
           "x" + std::to_string(s.kw) + dims({{"stride", s.stride}}) + " pad " + std::to_string(s.pad_t) + "/" +
           std::to_string(s.pad_l) + "/" + std::to_string(s.pad_b) + "/" + std::to_string(s.pad_r) +
           (bias ? " bias" : " nobias") + (accum ? " (+=)" : "") +
           (grads == ConvGrads::All ? " +backward" : grads == ConvGrads::NoDx ? " +backward dx null" : "");
  const int Ho = s.Ho(), Wo = s.Wo();
  const size_t ny = size_t(s.N) * s.Co * Ho * Wo;
  const int x = c.in("x", size_t(s.N) * s.Ci * s.H * s.W), w = c.in("w", size_t(s.Co) * s.Ci * s.kh * s.kw);
  const int b = bias ? c.in("b", s.Co) : -1;
  const int y = accum ? c.inout("y", ny, Fill::uniform(), Tol::gemm()) : c.out("y", ny, Tol::gemm());
  c.forward([=](auto& be, auto& t) { be.conv2d_forward(t[x], t[w], t[b], t[y], s, accum); });
  c.reference = [=](Host& h) {  // cross-correlation, zero padding
    V& o = h.out(y);
    for (int n = 0; n < s.N; ++n)
      for (int co = 0; co < s.Co; ++co)
        for (int i = 0; i < Ho; ++i)
          for (int j = 0; j < Wo; ++j) {
            double acc = b >= 0 ? h[b][co] : 0;
            for (int ci = 0; ci < s.Ci; ++ci)
              for (int ky = 0; ky < s.kh; ++ky)
                for (int kx = 0; kx < s.kw; ++kx) {
                  const int yy = i * s.stride + ky - s.pad_t, xx = j * s.stride + kx - s.pad_l;
                  if (yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) continue;
                  acc += h[x][((size_t(n) * s.Ci + ci) * s.H + yy) * s.W + xx] *
                         h[w][((size_t(co) * s.Ci + ci) * s.kh + ky) * s.kw + kx];
                }
            double& r = o[((size_t(n) * s.Co + co) * Ho + i) * Wo + j];
            r = accum ? r + acc : acc;
          }
  };
  if (grads != ConvGrads::None) {
    // conv2d_backward: every gradient (=); dx and db may be null (the CUDA driver also runs it
    // without each and expects the others unchanged)
    const int dy = c.dout(y, Fill::normal());
    const int dx = grads == ConvGrads::All ? c.din(x, false, Tol::gemm()) : -1;
    const int dw = c.din(w, false, Tol::gemm());
    const int db = bias ? c.din(b, false, Tol::all(1e-5)) : -1;
    c.backward([=](auto& be, auto& t, bool) { be.conv2d_backward(t[x], t[w], t[dy], t[dx], t[dw], t[db], s); });
    if (dx >= 0) c.optional_grads.push_back(dx);
    if (db >= 0) c.optional_grads.push_back(db);
  }
  return c;
}

Conv2dShape conv_shape(int N, int Ci, int H, int W, int Co, int kh, int kw, int stride, int pt, int pl, int pb, int pr) {
  Conv2dShape s;
  s.N = N, s.Ci = Ci, s.H = H, s.W = W, s.Co = Co, s.kh = kh, s.kw = kw, s.stride = stride;
  s.pad_t = pt, s.pad_l = pl, s.pad_b = pb, s.pad_r = pr;
  return s;
}

// ---- ReLU (the CNN's) -----------------------------------------------------------------------------
// Inputs kept at least 0.05 away from the kink, so that the finite differences see one side only.
V relu_inputs(size_t n, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.05, 1.0);
  V v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * ((i % 3 == 1) ? -u(rng) : u(rng));
  return v;
}

OpCase relu(size_t n, double scale, unsigned modes) {
  OpCase c;
  c.op = c.section = "relu";
  c.name = "relu n" + std::to_string(n);
  c.modes = modes;
  const int x = c.in("x", n, Fill::of(relu_inputs(n, 0x7e1u + n, scale))), y = c.out("y", n, Tol::all(0));
  const int dy = c.dout(y, Fill::normal()), dx = c.din(x, false, Tol::all(0));
  c.forward([=](auto& be, auto& t) { be.relu_forward(t[x], t[y], n); });
  c.backward([=](auto& be, auto& t, bool) { be.relu_backward(t[y], t[dy], t[dx], n); });
  c.reference = [=](Host& h) {
    for (size_t i = 0; i < n; ++i) h.out(y)[i] = std::max(h[x][i], 0.0);
  };
  c.ref_tol = 0;
  return c;
}

// The CNN runs both in place: relu_forward with y = x, relu_backward with dx = dy.
OpCase relu_in_place(size_t n, bool backward, unsigned modes) {
  OpCase c;
  c.op = c.section = "relu";
  c.name = std::string(backward ? "relu_backward n" : "relu_forward n") + std::to_string(n) +
           (backward ? " (dx aliases dy)" : " (y aliases x)");
  c.modes = modes;
  const V v = relu_inputs(n, 0x7e2u + n, 1.0);
  if (!backward) {
    const int x = c.inout("x", n, Fill::of(v), Tol::all(0));
    c.forward([=](auto& be, auto& t) { be.relu_forward(t[x], t[x], n); });
    c.reference = [=](Host& h) {
      for (double& e : h.out(x)) e = std::max(e, 0.0);
    };
  } else {
    V yv(n);
    for (size_t i = 0; i < n; ++i) yv[i] = std::max(v[i], 0.0);  // a ReLU output: zeros and positives
    const int y = c.in("y", n, Fill::of(yv)), d = c.inout("dy", n, Fill::normal(), Tol::all(0));
    c.forward([=](auto& be, auto& t) { be.relu_backward(t[y], t[d], t[d], n); });
    c.reference = [=](Host& h) {
      V& o = h.out(d);
      for (size_t i = 0; i < n; ++i) o[i] = h[y][i] > 0 ? o[i] : 0.0;
    };
  }
  c.ref_tol = 0;
  return c;
}

// ---- the VAE's forward-only ops ----------------------------------------------------------------------
// GroupNorm (+ SiLU); gamma/beta null when !affine, y aliases x when in_place.
OpCase group_norm(int N, int C, int HW, int groups, bool silu_on, bool affine, bool in_place, Fill f, double tol,
                  unsigned modes) {
  OpCase c;
  c.op = "group_norm";
  c.section = "vae";
  c.modes = modes;
  c.name = "group_norm" + dims({{"N", N}, {"C", C}, {"HW", HW}, {"groups", groups}}) + (silu_on ? " silu" : "") +
           (affine ? "" : " no affine") + (in_place ? " (y aliases x)" : "");
  const double eps = 1e-6;
  const size_t n = size_t(N) * C * HW;
  const int x = in_place ? c.inout("x", n, f, Tol::all(tol)) : c.in("x", n, f);
  const int gamma = affine ? c.in("gamma", C, Fill::uniform(0.5, 1.5)) : -1;
  const int beta = affine ? c.in("beta", C, Fill::uniform(-0.5, 0.5)) : -1;
  const int y = in_place ? x : c.out("y", n, Tol::all(tol));
  c.forward([=](auto& be, auto& t) { be.group_norm_forward(t[x], t[gamma], t[beta], t[y], N, C, HW, groups, eps, silu_on); });
  c.reference = [=](Host& h) {
    const V xs = h[x];
    V& o = h.out(y);
    const int cg = C / groups;
    const size_t m = size_t(cg) * HW;
    for (int i = 0; i < N; ++i)
      for (int g = 0; g < groups; ++g) {
        const size_t base = (size_t(i) * C + size_t(g) * cg) * HW;
        double mu = 0, var = 0;
        for (size_t k = 0; k < m; ++k) mu += xs[base + k] / double(m);
        for (size_t k = 0; k < m; ++k) var += (xs[base + k] - mu) * (xs[base + k] - mu) / double(m);
        for (size_t k = 0; k < m; ++k) {
          const int ch = g * cg + int(k / HW);
          double v = (xs[base + k] - mu) / std::sqrt(var + eps);
          if (affine) v = v * h[gamma][ch] + h[beta][ch];
          o[base + k] = silu_on ? v / (1 + std::exp(-v)) : v;
        }
      }
  };
  c.ref_tol = 1e-13;
  return c;
}

OpCase upsample_nearest2x(int N, int C, int H, int W, unsigned modes) {
  OpCase c;
  c.op = "upsample_nearest2x";
  c.section = "vae";
  c.modes = modes;
  c.name = "upsample_nearest2x" + dims({{"N", N}, {"C", C}, {"H", H}, {"W", W}});
  const int x = c.in("x", size_t(N) * C * H * W, Fill::normal());
  const int y = c.out("y", size_t(N) * C * 4 * H * W, Tol::all(0));
  c.forward([=](auto& be, auto& t) { be.upsample_nearest2x(t[x], t[y], N, C, H, W); });
  c.reference = [=](Host& h) {
    V& o = h.out(y);
    for (int p = 0; p < N * C; ++p)
      for (int i = 0; i < 2 * H; ++i)
        for (int j = 0; j < 2 * W; ++j) o[(size_t(p) * 2 * H + i) * 2 * W + j] = h[x][(size_t(p) * H + i / 2) * W + j / 2];
  };
  c.ref_tol = 0;
  return c;
}

OpCase transpose_batched(int B, int R, int C, unsigned modes) {
  OpCase c;
  c.op = "transpose_batched";
  c.section = "vae";
  c.modes = modes;
  c.name = "transpose_batched" + dims({{"B", B}, {"R", R}, {"C", C}});
  const int x = c.in("x", size_t(B) * R * C, Fill::normal()), y = c.out("y", size_t(B) * R * C, Tol::all(0));
  c.forward([=](auto& be, auto& t) { be.transpose_batched(t[x], t[y], B, R, C); });
  c.reference = [=](Host& h) {
    V& o = h.out(y);
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < R; ++r)
        for (int k = 0; k < C; ++k) o[(size_t(b) * C + k) * R + r] = h[x][(size_t(b) * R + r) * C + k];
  };
  c.ref_tol = 0;
  return c;
}

// moments [N, 2C, HW]: means in [-2, 2], log-variances across both clamp bounds (-30, 20);
// eps null: z = mean.
OpCase gaussian_sample(int N, int C, int HW, bool with_eps, unsigned modes) {
  OpCase c;
  c.op = "gaussian_sample";
  c.section = "vae";
  c.modes = modes;
  c.name = "gaussian_sample" + dims({{"N", N}, {"C", C}, {"HW", HW}}) + (with_eps ? "" : " (eps null: the mean)");
  Tol tol = Tol::all(1e-5);
  tol.elementwise = true;  // exp(10) next to values near 0
  V m(size_t(N) * 2 * C * HW);
  std::mt19937_64 rng(0x9a55u + m.size());
  std::uniform_real_distribution<double> u(-2, 2), lvd(-34, 24);
  for (int n = 0; n < N; ++n)
    for (size_t i = 0; i < size_t(C) * HW; ++i) {
      m[size_t(n) * 2 * C * HW + i] = u(rng);
      m[(size_t(n) * 2 + 1) * C * HW + i] = lvd(rng);
    }
  const double edges[] = {-35, -30.5, 20.5, 23};  // both clamps, on every seed
  for (size_t i = 0; i < 4 && i < size_t(C) * HW; ++i) m[size_t(C) * HW + i] = edges[i];
  const int mom = c.in("moments", m.size(), Fill::of(m));
  const int eps = with_eps ? c.in("eps", size_t(N) * C * HW, Fill::normal()) : -1;
  const int z = c.out("z", size_t(N) * C * HW, tol);
  c.forward([=](auto& be, auto& t) { be.gaussian_sample(t[mom], t[eps], t[z], N, C, HW); });
  c.reference = [=](Host& h) {
    V& o = h.out(z);
    for (int n = 0; n < N; ++n)
      for (size_t i = 0; i < size_t(C) * HW; ++i) {
        const double mean = h[mom][size_t(n) * 2 * C * HW + i];
        const double lv = std::min(20.0, std::max(-30.0, h[mom][(size_t(n) * 2 + 1) * C * HW + i]));
        o[size_t(n) * C * HW + i] = mean + (with_eps ? std::exp(0.5 * lv) * h[eps][size_t(n) * C * HW + i] : 0.0);
      }
  };
  c.ref_tol = 1e-15;
  return c;
}

// ---- Inception-v3's forward-only ops -------------------------------------------------------------------
OpCase pool2d(int N, int C, int H, int W, int k, int stride, int pad, PoolMode mode, Fill f, unsigned modes) {
  OpCase c;
  const bool mx = mode == PoolMode::Max;
  c.op = "pool2d";
  c.section = "inception";
  c.modes = modes;
  c.name = std::string(mx ? "pool2d max" : "pool2d avg exclude-pad") + dims({{"N", N}, {"C", C}, {"H", H}, {"W", W}}) +
           dims({{"k", k}, {"stride", stride}, {"pad", pad}});
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const int x = c.in("x", size_t(N) * C * H * W, std::move(f));
  const int y = c.out("y", size_t(N) * C * Ho * Wo, Tol::all(mx ? 0 : 1e-6));
  c.forward([=](auto& be, auto& t) { be.pool2d_forward(t[x], t[y], N, C, H, W, k, stride, pad, mode); });
  c.reference = [=](Host& h) {  // padded positions take no part (max: -inf, avg: not counted)
    V& o = h.out(y);
    for (int p = 0; p < N * C; ++p)
      for (int i = 0; i < Ho; ++i)
        for (int j = 0; j < Wo; ++j) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int cnt = 0;
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
              const int yy = i * stride - pad + ky, xx = j * stride - pad + kx;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              const double v = h[x][(size_t(p) * H + yy) * W + xx];
              best = std::max(best, v);
              sum += v;
              ++cnt;
            }
          o[(size_t(p) * Ho + i) * Wo + j] = mx ? best : sum / cnt;
        }
  };
  c.ref_tol = mx ? 0 : 1e-15;
  return c;
}

OpCase global_avg_pool(int N, int C, int HW, unsigned modes) {
  OpCase c;
  c.op = "global_avg_pool";
  c.section = "inception";
  c.modes = modes;
  c.name = "global_avg_pool" + dims({{"N", N}, {"C", C}, {"HW", HW}});
  const int x = c.in("x", size_t(N) * C * HW, Fill::normal(1, 0.5)), y = c.out("y", size_t(N) * C, Tol::all(1e-6));
  c.forward([=](auto& be, auto& t) { be.global_avg_pool(t[x], t[y], N, C, HW); });
  c.reference = [=](Host& h) {
    V& o = h.out(y);
    for (int p = 0; p < N * C; ++p) {
      double s = 0;
      for (int i = 0; i < HW; ++i) s += h[x][size_t(p) * HW + i];
      o[p] = s / HW;
    }
  };
  c.ref_tol = 1e-14;
  return c;
}

// F.interpolate(mode='bilinear', align_corners=False, antialias=False): per axis the source
// coordinate (o + 0.5) in/out - 0.5, clamped below at 0; its floor and the next sample
// (clamped at the edge) weighted by the fraction.
OpCase resize_bilinear(int N, int C, int H, int W, int Ho, int Wo, unsigned modes) {
  OpCase c;
  c.op = "resize_bilinear";
  c.section = "inception";
  c.modes = modes;
  c.name = "resize_bilinear" + dims({{"N", N}, {"C", C}, {"H", H}, {"W", W}}) + " ->" + dims({{"Ho", Ho}, {"Wo", Wo}});
  const int x = c.in("x", size_t(N) * C * H * W), y = c.out("y", size_t(N) * C * Ho * Wo, Tol::all(1e-5));
  c.forward([=](auto& be, auto& t) { be.resize_bilinear(t[x], t[y], N, C, H, W, Ho, Wo); });
  c.reference = [=](Host& h) {
    auto axis = [](int o, int in, int out, int& i0, int& i1, double& l) {
      const double src = std::max(0.0, (o + 0.5) * double(in) / out - 0.5);
      i0 = std::min(int(std::floor(src)), in - 1);
      i1 = std::min(i0 + 1, in - 1);
      l = src - i0;
    };
    V& o = h.out(y);
    for (int p = 0; p < N * C; ++p)
      for (int i = 0; i < Ho; ++i)
        for (int j = 0; j < Wo; ++j) {
          int y0, y1, x0, x1;
          double ly, lx;
          axis(i, H, Ho, y0, y1, ly);
          axis(j, W, Wo, x0, x1, lx);
          const double* s = &h[x][size_t(p) * H * W];
          o[(size_t(p) * Ho + i) * Wo + j] = (1 - ly) * ((1 - lx) * s[y0 * W + x0] + lx * s[y0 * W + x1]) +
                                             ly * ((1 - lx) * s[y1 * W + x0] + lx * s[y1 * W + x1]);
        }
  };
  c.ref_tol = 1e-13;
  return c;
}

// One branch into its channel slot of a concatenation; the other channels of y keep their
// values. in_place: Ctot == C, y == x (Inception's in-place ReLU).
OpCase channel_copy(int N, int C, int HW, int Ctot, int c_off, bool relu_on, bool in_place, unsigned modes) {
  OpCase c;
  c.op = "channel_copy";
  c.section = "inception";
  c.modes = modes;
  c.name = "channel_copy" + dims({{"N", N}, {"C", C}, {"HW", HW}, {"Ctot", Ctot}, {"c_off", c_off}}) +
           (relu_on ? " relu" : "") + (in_place ? " (y aliases x)" : "");
  const int x = in_place ? c.inout("x", size_t(N) * C * HW, Fill::uniform(), Tol::all(0)) : c.in("x", size_t(N) * C * HW);
  const int y = in_place ? x : c.inout("y", size_t(N) * Ctot * HW, Fill::constant(7.0), Tol::all(0));
  c.forward([=](auto& be, auto& t) { be.channel_copy(t[x], t[y], N, C, HW, Ctot, c_off, relu_on); });
  c.reference = [=](Host& h) {
    const V xs = h[x];
    V& o = h.out(y);
    for (int n = 0; n < N; ++n)
      for (int ch = 0; ch < C; ++ch)
        for (int i = 0; i < HW; ++i) {
          const double v = xs[(size_t(n) * C + ch) * HW + i];
          o[(size_t(n) * Ctot + c_off + ch) * HW + i] = relu_on ? std::max(v, 0.0) : v;
        }
  };
  c.ref_tol = 0;
  return c;
}

// ---- error cases (grad mode: forward must throw a speed::Error) -------------------------------------
OpCase throws_patchify() {
  OpCase c;
  c.op = "patchify";
  c.section = "patch";
  c.modes = kGrad;
  c.name = "patchify with H not a multiple of p";
  const int img = c.in("img", 20), tok = c.out("tok", 100);
  c.forward([=](auto& be, auto& t) { be.patchify(t[img], t[tok], 1, 1, 5, 4, 2, PatchLayout::CPP); });
  c.throws = "multiples";
  return c;
}
OpCase throws_embedding_backward() {
  OpCase c;
  c.op = "embedding";
  c.section = "embedding";
  c.modes = kGrad;
  c.name = "embedding_backward with an index outside [0, rows)";
  const int dout = c.in("dout", 5), ix = c.ints("idx", {4}), dt = c.out("dtable", 20);
  c.forward([=](auto& be, auto& t) { be.embedding_backward(t[dout], t.idx(ix), t[dt], 1, 5, 4); });
  c.throws = "embedding_backward";
  return c;
}

std::vector<OpCase> build_cases() {
  std::vector<OpCase> v;
  const unsigned G = kGrad, T = kTest;
  // linear: tiny shapes for finite differences; for CUDA N % 8 != 0 (the unfused GELU path),
  // the fused GELU_AUX_BIAS epilogue, DiT-S sizes and an odd shape without bias
  for (auto s : {std::array<int, 3>{1, 1, 1}, {3, 5, 7}, {7, 4, 3}, {5, 9, 6}})
    for (Act act : {Act::None, Act::GeluTanh})
      for (bool bias : {true, false}) v.push_back(linear(s[0], s[1], s[2], act, bias, G));
  {
    auto cu = [](int M, int K, int N, Act act, bool bias) {
      LinearFills f{Fill::normal(), Fill::normal(1 / std::sqrt(double(K))), Fill::normal(0.5)};
      return linear(M, K, N, act, bias, T, f);
    };
    v.push_back(cu(37, 72, 40, Act::None, true));
    v.push_back(cu(1, 64, 36, Act::GeluTanh, true));
    v.push_back(cu(37, 72, 40, Act::GeluTanh, true));
    v.push_back(cu(300, 384, 1536, Act::GeluTanh, true));
    v.push_back(cu(300, 1536, 384, Act::None, true));
    v.push_back(cu(5, 96, 57, Act::None, false));
  }
  // float32 CPU against float64: linear + GELU (absolute), attention (relative)
  {
    OpCase c = linear(37, 64, 50, Act::GeluTanh, true, kF32, {Fill::uniform(-2, 2), Fill::uniform(-0.3, 0.3), Fill::uniform()});
    c.f32_abs = true;
    for (auto& s : c.t)
      if (s.name == "y") s.f32 = 1e-5;
    v.push_back(std::move(c));
  }
  // elementwise
  v.push_back(silu(37, Fill::uniform(-4, 4), Tol::all(1e-5), G));
  v.push_back(silu(10007, Fill::normal(3), Tol::all(1e-5), T));
  for (bool alias : {false, true}) {
    v.push_back(add(37, alias, Fill::uniform(), 1e-6, G));
    v.push_back(add(10007, alias, Fill::normal(), 1e-6, T));
  }
  v.push_back(add_rows(5, 7, Fill::uniform(), 1e-6, G));
  v.push_back(add_rows(7, 389, Fill::normal(), 1e-6, T));
  v.push_back(fill(11, 3.25, G));
  v.push_back(fill(10007, 0.25, T));
  // patches
  for (PatchLayout lay : {PatchLayout::CPP, PatchLayout::PPC})
    for (bool un : {false, true}) v.push_back(patch(2, 3, 6, 4, 2, lay, un, Fill::uniform(), G));
  for (bool un : {false, true}) {
    v.push_back(patch(2, 4, 32, 32, 2, PatchLayout::CPP, un, Fill::normal(), T));
    v.push_back(patch(1, 3, 24, 16, 4, PatchLayout::PPC, un, Fill::normal(), T));
    v.push_back(patch(3, 8, 8, 8, 2, PatchLayout::PPC, un, Fill::normal(), T));
  }
  v.push_back(throws_patchify());
  // LayerNorm + modulation: several samples with L not a multiple of 4 or 8, D = 50 (the scalar
  // kernels; the others take float4), D = 2056 (wide rows); section "normxl": XL/2 at batch 32,
  // kept out of "ln" so that gpu-check's sanitizer runs stay short
  v.push_back(ln_modulate(2, 3, 5, 3, G, "ln"));
  {
    LnFills f{Fill::normal(2, 0.5), Fill::normal(0.3)};
    for (auto s : {std::array<int, 3>{2, 67, 384}, {1, 5, 72}, {3, 13, 1152}, {2, 7, 50}, {3, 29, 50}, {1, 3, 2056}})
      v.push_back(ln_modulate(s[0], s[1], s[2], 6, T, "ln", f));
    v.push_back(ln_modulate(32, 256, 1152, 6, T, "normxl", f));
  }
  v.push_back(gated_residual(3, 4, 5, G, "gated"));
  for (auto s : {std::array<int, 3>{2, 67, 384}, {1, 3, 50}, {3, 29, 50}, {3, 13, 1152}, {1, 3, 2056}})
    v.push_back(gated_residual(s[0], s[1], s[2], T, "gated", Fill::normal(), Fill::normal()));
  v.push_back(gated_residual(32, 256, 1152, T, "normxl", Fill::normal(), Fill::normal()));
  // attention: L not a multiple of any tile, DiT-XL's head size 72 (padded to 80) with a partial
  // tile, 200 = 3 full 64-tiles + 8 = 6 x 32 + 8, DiT-S's head size at DiT's L; section "attnw8":
  // the 8-warp forward and dK/dV kernels (SPEED_CUDA_ATTN_WARPS=8, bf16 only)
  for (auto s : {std::array<int, 4>{1, 1, 1, 1}, {2, 5, 2, 3}, {1, 7, 3, 4}, {2, 9, 1, 8}})
    v.push_back(attention(s[0], s[1], s[2], s[3], G, Fill::uniform(-1.5, 1.5)));
  for (auto s : {std::array<int, 4>{2, 67, 3, 64}, {1, 256, 2, 72}, {2, 67, 3, 72}, {1, 200, 2, 72}, {3, 33, 2, 32},
                 {1, 1, 1, 64}, {1, 130, 1, 16}, {2, 256, 6, 64}})
    v.push_back(attention(s[0], s[1], s[2], s[3], T, Fill::normal(1.5)));
  for (auto s : {std::array<int, 4>{2, 67, 3, 72}, {1, 200, 2, 72}, {2, 256, 6, 64}, {3, 33, 2, 32}, {1, 1, 1, 64}})
    v.push_back(attention(s[0], s[1], s[2], s[3], T, Fill::normal(1.5), true));
  {
    OpCase c = attention(2, 67, 2, 16, kF32, Fill::uniform(-2, 2));
    for (auto& s : c.t) s.f32 = s.name == "out" ? 1e-5 : s.name == "lse" ? 1e-6 : 0;
    v.push_back(std::move(c));
  }
  // convolution, forward and conv2d_backward: 3x3 same padding, SD's stride-2 downsample with its
  // asymmetric padding, 1x1, the CNN's 3x3 stride 2 pad 1, Inception's 1x7 / 7x1 and 3x3 stride 2
  // without padding, a first layer (dx null), and a forward that accumulates (+=)
  {
    auto shape = conv_shape;
    for (bool bias : {true, false}) {
      v.push_back(conv2d(shape(2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1), bias, G, ConvGrads::All));
      v.push_back(conv2d(shape(1, 2, 8, 7, 3, 3, 3, 2, 0, 0, 1, 1), bias, G, ConvGrads::All));
    }
    v.push_back(conv2d(shape(2, 4, 5, 5, 2, 1, 1, 1, 0, 0, 0, 0), true, G, ConvGrads::All));
    v.push_back(conv2d(shape(2, 3, 6, 7, 2, 3, 3, 2, 1, 1, 1, 1), true, G, ConvGrads::All));
    v.push_back(conv2d(shape(1, 2, 5, 9, 3, 1, 7, 1, 0, 3, 0, 3), true, G, ConvGrads::All));
    v.push_back(conv2d(shape(1, 2, 9, 4, 3, 7, 1, 1, 3, 0, 3, 0), false, G, ConvGrads::All));
    v.push_back(conv2d(shape(2, 2, 7, 7, 3, 3, 3, 2, 0, 0, 0, 0), true, G, ConvGrads::All));
    v.push_back(conv2d(shape(2, 1, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1), true, G, ConvGrads::NoDx));
    v.push_back(conv2d(shape(2, 3, 5, 4, 2, 3, 3, 1, 1, 1, 1, 1), true, G, ConvGrads::None, true));
    // the CPU's tiling: 1600 output pixels (two im2col tiles), more samples than dw's sample groups
    v.push_back(conv2d(shape(1, 1, 40, 40, 2, 3, 3, 1, 1, 1, 1, 1), true, G, ConvGrads::All));
    v.push_back(conv2d(shape(19, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1), true, G, ConvGrads::All));
    // CUDA: the CNN's layers at its default sizes (28x28, channels 32 and 64) at batch 3 and a
    // backward with SD's asymmetric pads; the VAE's 3x3 and stride-2 downsample; Inception's
    // 1x7 / 7x1 / 1x3 / 3x1, 3x3 stride 2 unpadded (its first layer on 299x299), 5x5 and 1x1
    v.push_back(conv2d(shape(3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1), true, T, ConvGrads::NoDx));
    v.push_back(conv2d(shape(3, 32, 28, 28, 32, 3, 3, 2, 1, 1, 1, 1), true, T, ConvGrads::All));
    v.push_back(conv2d(shape(3, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1), true, T, ConvGrads::All));
    v.push_back(conv2d(shape(3, 64, 14, 14, 64, 3, 3, 2, 1, 1, 1, 1), true, T, ConvGrads::All));
    v.push_back(conv2d(shape(2, 5, 12, 10, 7, 3, 3, 2, 0, 0, 1, 1), true, T, ConvGrads::All));
    v.push_back(conv2d(shape(1, 128, 32, 32, 128, 3, 3, 1, 1, 1, 1, 1), true, T));
    v.push_back(conv2d(shape(1, 128, 32, 32, 128, 3, 3, 2, 0, 0, 1, 1), true, T));
    v.push_back(conv2d(shape(2, 64, 17, 17, 80, 1, 7, 1, 0, 3, 0, 3), true, T));
    v.push_back(conv2d(shape(2, 64, 17, 17, 80, 7, 1, 1, 3, 0, 3, 0), true, T));
    v.push_back(conv2d(shape(2, 48, 35, 35, 64, 3, 3, 2, 0, 0, 0, 0), true, T));
    v.push_back(conv2d(shape(2, 48, 35, 35, 64, 5, 5, 1, 2, 2, 2, 2), true, T));
    v.push_back(conv2d(shape(2, 32, 8, 8, 16, 1, 3, 1, 0, 1, 0, 1), true, T));
    v.push_back(conv2d(shape(2, 32, 8, 8, 16, 3, 1, 1, 1, 0, 1, 0), true, T));
    v.push_back(conv2d(shape(2, 3, 299, 299, 32, 3, 3, 2, 0, 0, 0, 0), true, T));
    v.push_back(conv2d(shape(3, 768, 17, 17, 192, 1, 1, 1, 0, 0, 0, 0), true, T));
    v.push_back(conv2d(shape(2, 16, 6, 6, 8, 1, 1, 1, 0, 0, 0, 0), true, T, ConvGrads::All));
    // K = 4608, Ho*Wo = 9216: K*HW > 32M elements, so the GPU's backward runs several pixel tiles
    v.push_back(conv2d(shape(1, 512, 96, 96, 4, 3, 3, 1, 1, 1, 1, 1), true, T, ConvGrads::All));
    v.push_back(conv2d(shape(2, 16, 9, 11, 8, 3, 3, 1, 1, 1, 1, 1), true, T, ConvGrads::None, true));
  }
  // ReLU (the CNN's; relu_forward in place, relu_backward with dx = dy)
  v.push_back(relu(37, 1.0, G));
  v.push_back(relu(10007, 2.0, T));
  for (bool bwd : {false, true}) {
    v.push_back(relu_in_place(37, bwd, G));
    v.push_back(relu_in_place(10007, bwd, T));
  }
  // the VAE's ops: GroupNorm at SD's 32 groups and widths, odd HW, without affine, in place
  for (bool silu_on : {false, true}) v.push_back(group_norm(2, 6, 5, 3, silu_on, true, false, Fill::uniform(-2, 3), 0, G));
  v.push_back(group_norm(2, 4, 3, 2, true, false, false, Fill::uniform(-2, 3), 0, G));
  v.push_back(group_norm(1, 6, 7, 3, true, true, true, Fill::uniform(-2, 3), 0, G));
  v.push_back(group_norm(1, 128, 32 * 32, 32, true, true, false, Fill::normal(2, 0.5), 1e-5, T));
  v.push_back(group_norm(2, 512, 8 * 8, 32, false, true, false, Fill::normal(2, 0.5), 1e-5, T));
  v.push_back(group_norm(3, 64, 37, 32, true, false, false, Fill::normal(), 1e-5, T));
  v.push_back(group_norm(2, 256, 16 * 16, 32, true, true, true, Fill::normal(), 1e-5, T));
  v.push_back(upsample_nearest2x(2, 3, 3, 4, G));
  v.push_back(upsample_nearest2x(1, 512, 8, 8, T));
  v.push_back(upsample_nearest2x(2, 3, 5, 7, T));
  v.push_back(transpose_batched(2, 3, 5, G));
  v.push_back(transpose_batched(2, 64, 512, T));
  v.push_back(transpose_batched(1, 37, 65, T));
  for (bool e : {true, false}) {
    v.push_back(gaussian_sample(2, 3, 5, e, G));
    v.push_back(gaussian_sample(3, 4, 37, e, e ? T | kThreads : T));
  }
  // Inception-v3's ops: its max pools (3x3 stride 2, unpadded), its exclude-pad average pools
  // (3x3 stride 1 pad 1), both padded at stride 2 with negative inputs (a padded zero would
  // win a max), global average pooling, the resize to 299 (up, down, identity), channel_copy
  v.push_back(pool2d(2, 3, 7, 6, 3, 2, 0, PoolMode::Max, Fill::uniform(), G));
  v.push_back(pool2d(2, 3, 5, 6, 3, 2, 1, PoolMode::Max, Fill::uniform(-2, -1), G));
  v.push_back(pool2d(2, 3, 5, 5, 3, 1, 1, PoolMode::AvgExcludePad, Fill::uniform(), G));
  v.push_back(pool2d(1, 2, 6, 7, 3, 2, 1, PoolMode::AvgExcludePad, Fill::uniform(), G));
  v.push_back(pool2d(1, 2, 5, 6, 2, 2, 1, PoolMode::Max, Fill::uniform(-2, -1), G));
  v.push_back(pool2d(1, 2, 4, 13, 5, 3, 2, PoolMode::AvgExcludePad, Fill::uniform(), G));
  v.push_back(pool2d(1, 2, 1, 1, 3, 1, 1, PoolMode::AvgExcludePad, Fill::uniform(), G));
  v.push_back(pool2d(2, 64, 147, 147, 3, 2, 0, PoolMode::Max, Fill::normal(), T));
  v.push_back(pool2d(2, 3, 9, 10, 3, 2, 1, PoolMode::Max, Fill::uniform(-2, -1), T));
  v.push_back(pool2d(2, 11, 8, 8, 3, 1, 1, PoolMode::Max, Fill::normal(), T));
  v.push_back(pool2d(2, 192, 35, 35, 3, 1, 1, PoolMode::AvgExcludePad, Fill::normal(), T));
  v.push_back(pool2d(1, 5, 9, 10, 3, 2, 1, PoolMode::AvgExcludePad, Fill::normal(), T));
  v.push_back(pool2d(1, 4, 5, 6, 2, 2, 1, PoolMode::Max, Fill::normal(), T));
  v.push_back(pool2d(2, 3, 4, 13, 5, 3, 2, PoolMode::AvgExcludePad, Fill::normal(), T));
  v.push_back(pool2d(2, 3, 1, 1, 3, 1, 1, PoolMode::AvgExcludePad, Fill::normal(), T));
  v.push_back(global_avg_pool(2, 3, 5, G));
  v.push_back(global_avg_pool(2, 2048, 64, T));
  v.push_back(global_avg_pool(3, 5, 37, T));
  v.push_back(resize_bilinear(1, 2, 4, 5, 9, 7, G));
  v.push_back(resize_bilinear(2, 3, 9, 7, 4, 3, G));
  v.push_back(resize_bilinear(1, 2, 5, 6, 5, 6, G));
  v.push_back(resize_bilinear(1, 2, 1, 1, 3, 4, G));
  v.push_back(resize_bilinear(2, 3, 32, 32, 299, 299, T));
  v.push_back(resize_bilinear(1, 3, 512, 384, 299, 299, T));
  v.push_back(resize_bilinear(1, 3, 45, 37, 299, 299, T));
  v.push_back(resize_bilinear(1, 2, 7, 9, 5, 13, T));
  v.push_back(resize_bilinear(1, 1, 1, 1, 299, 299, T));
  for (bool relu_on : {false, true}) {
    v.push_back(channel_copy(2, 3, 5, 7, 2, relu_on, false, G));
    v.push_back(channel_copy(2, 192, 35 * 35, 256, 64, relu_on, false, T));
  }
  v.push_back(channel_copy(2, 3, 5, 3, 0, true, true, G));
  v.push_back(channel_copy(3, 64, 37, 64, 0, true, true, T));
  // embeddings
  v.push_back(timestep_embedding({0, 7, 999}, 10, 1e-6, G));
  v.push_back(timestep_embedding({0, 7, 999}, 7, 1e-6, G));
  v.push_back(timestep_embedding({0, 1, 499, 998, 999}, 256, 1e-6, T));
  v.push_back(timestep_embedding({0, 1, 499, 998, 999}, 7, 1e-6, T));
  v.push_back(embedding(4, 5, {3, 0, 3, 1, 3}, Fill::uniform(), 1e-6, G));
  v.push_back(embedding(11, 45, {3, 10, 3, 0, 7, 3, 10, 1, 2}, Fill::normal(), 1e-6, T));
  v.push_back(throws_embedding_backward());
  // noise
  for (size_t n : {size_t(1), size_t(7), size_t(100003)}) v.push_back(normal(n, 0x123456789abcdefULL, 977, T));
  // diffusion: t = 0 (the decoder NLL; twice for CUDA), 1, mid and last steps
  v.push_back(q_sample({0, 500, 999}, 10, false, 1e-6, G));
  v.push_back(q_sample({0, 0, 1, 500, 998, 999}, 3 * 37, true, 1e-6, G | T));
  for (bool ls : {true, false}) {
    v.push_back(iddpm_loss({0, 1, 420, 999}, 2, 6, ls, 0.7, {0.61, 1.42, 0.97, 0.33}, false, G));
    v.push_back(iddpm_loss({0, 0, 1, 500, 998, 999}, 3, 37, ls, 1.0, {1, 0.5, 2, 1, 0.4, 1}, true, T));
  }
  {
    const DiffusionTables tb = linear_diffusion_tables(1000);
    const int t = 300, tp = 250;
    for (int mode : {0, 1})
      for (bool ls : {true, false})
        for (bool cfg : {false, true})
          for (bool clip : {false, true}) {
            SampleStepCoefs k;
            k.mode = mode;
            k.sqrt_recip_abar = tb.sqrt_recip_abar[t];
            k.sqrt_recipm1_abar = tb.sqrt_recipm1_abar[t];
            k.coef1 = tb.coef1[t];
            k.coef2 = tb.coef2[t];
            k.log_beta = tb.log_beta[t];
            k.post_log_var = tb.post_log_var[t];
            const double abar = 1 / (k.sqrt_recip_abar * k.sqrt_recip_abar);
            const double abar_prev = tb.sqrt_abar[tp] * tb.sqrt_abar[tp], eta = 0.5;
            k.sigma = eta * std::sqrt((1 - abar_prev) / (1 - abar)) * std::sqrt(1 - abar / abar_prev);
            k.sqrt_abar_prev = std::sqrt(abar_prev);
            k.eps_coef = std::sqrt(1 - abar_prev - k.sigma * k.sigma);
            k.add_noise = true;
            k.clip_x0 = clip;
            k.cfg = cfg;
            k.guidance = 4.0;
            const std::string tag = std::string(mode ? "DDIM" : "DDPM") + (ls ? " learn_sigma" : "") + (cfg ? " cfg" : "") +
                                    (clip ? " clip" : "");
            v.push_back(sample_step(2, 3, 5, ls, k, true, tag, Fill::uniform(-2, 2), 1e-6, G));
          }
    SampleStepCoefs k;  // the last DDPM step adds no noise (noise may be null)
    k.sqrt_recip_abar = 1.1;
    k.sqrt_recipm1_abar = 0.2;
    k.coef1 = 1.0;
    k.coef2 = 0.0;
    OpCase last = sample_step(2, 3, 5, false, k, false, "DDPM last step, no noise", Fill::uniform(), 1e-6, G);
    last.ref_tol = 1e-15;
    v.push_back(std::move(last));
  }
  // DDPM (learned sigma, noise), DDIM with clipping and CFG, and the same with DiT's rule of
  // guiding only the first channels (guidance_channels)
  for (int variant = 0; variant < 3; ++variant) {
    SampleStepCoefs k;
    const int C = 3;
    k.mode = variant == 0 ? 0 : 1;
    k.guidance_channels = variant == 2 ? C - 1 : 0;
    k.sqrt_recip_abar = 1.3, k.sqrt_recipm1_abar = 0.8, k.coef1 = 0.3, k.coef2 = 0.7;
    k.log_beta = -4.0, k.post_log_var = -4.5, k.sqrt_abar_prev = 0.9, k.eps_coef = 0.35;
    k.sigma = 0.1, k.add_noise = true, k.clip_x0 = k.mode == 1, k.cfg = k.mode == 1, k.guidance = 4.0;
    const std::string tag = variant == 2 ? "DDIM clip cfg, guidance_channels C-1"
                            : k.mode      ? "DDIM clip cfg"
                                          : "DDPM learned sigma";
    v.push_back(sample_step(6, C, 37, true, k, true, tag, Fill::normal(), 1e-6, G | T));
  }
  {
    OptimHyper hp;
    hp.lr = 1e-3, hp.weight_decay = 0.01, hp.max_grad_norm = 1.0, hp.ema_decay = 0.99, hp.step = 3;
    v.push_back(optimizer_step(100003, hp, true, "(clipped, EMA)", T));
    hp.max_grad_norm = 0, hp.ema_decay = -1;
    v.push_back(optimizer_step(100003, hp, false, "(no clip, no EMA)", T));
  }
  // float32 CPU, 1, 2 and 3 threads: DiT-like sizes that split across threads
  {
    const int N = 3, L = 37, D = 72, heads = 3, M = N * L;
    v.push_back(linear(M, D, 4 * D, Act::GeluTanh, true, kThreads));
    v.push_back(ln_modulate(N, L, D, 6, kThreads, "ln"));
    v.push_back(gated_residual(N, L, D, kThreads, "gated"));
    v.push_back(attention(N, L, heads, D / heads, kThreads, Fill::uniform()));
    v.push_back(silu(size_t(M) * D, Fill::uniform(), {}, kThreads));
    v.push_back(patch(2, 3, 16, 16, 2, PatchLayout::PPC, false, Fill::uniform(), kThreads));
    v.push_back(embedding(3, D, {1, 1, 0, 2}, Fill::uniform(), 0, kThreads));
    v.push_back(normal(100003, 1234, 77, kThreads));
    // the CNN's, VAE's and Inception's ops, at sizes that span several conv tiles and planes
    v.push_back(conv2d(conv_shape(3, 8, 30, 30, 16, 3, 3, 1, 1, 1, 1, 1), true, kThreads, ConvGrads::All));
    v.push_back(conv2d(conv_shape(3, 16, 30, 30, 16, 3, 3, 2, 1, 1, 1, 1), true, kThreads, ConvGrads::All));
    v.push_back(conv2d(conv_shape(2, 16, 17, 17, 24, 1, 7, 1, 0, 3, 0, 3), true, kThreads));
    v.push_back(relu(size_t(M) * D, 1.0, kThreads));
    v.push_back(group_norm(2, 64, 37, 32, true, true, false, Fill::normal(), 0, kThreads));
    v.push_back(pool2d(2, 16, 35, 35, 3, 1, 1, PoolMode::AvgExcludePad, Fill::normal(), kThreads));
    v.push_back(pool2d(2, 16, 35, 35, 3, 2, 0, PoolMode::Max, Fill::normal(), kThreads));
    v.push_back(global_avg_pool(3, 64, 37, kThreads));
    v.push_back(resize_bilinear(2, 3, 32, 32, 299, 299, kThreads));
  }
  return v;
}

}  // namespace

int OpCase::tables(const DiffusionTables& tb) {
  const std::vector<double>* cols[] = {&tb.sqrt_abar, &tb.sqrt_1m_abar, &tb.sqrt_recip_abar, &tb.sqrt_recipm1_abar,
                                       &tb.coef1,     &tb.coef2,        &tb.log_beta,        &tb.post_log_var};
  static const char* names[] = {"sqrt_abar", "sqrt_1m_abar", "sqrt_recip_abar", "sqrt_recipm1_abar",
                                "coef1",     "coef2",        "log_beta",        "post_log_var"};
  int first = -1;
  for (int i = 0; i < 8; ++i) {
    int k = in(names[i], cols[i]->size(), Fill::of(*cols[i]));
    if (i == 0) first = k;
  }
  return first;
}

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build_cases();
  return cases;
}

std::vector<OpCase> perf_cases(const DiTConfig& c, int B, size_t n_params, const DiffusionTables& tabs,
                               const std::vector<int32_t>& t) {
  const int L = c.num_tokens(), D = c.hidden_size, H = c.mlp_hidden(), C = c.in_channels, S = c.input_size;
  const int M = B * L, HW = S * S;
  std::vector<OpCase> v;
  LinearFills lf{Fill::normal(), Fill::normal(0.05), Fill::normal(0.05)};
  v.push_back(linear(M, D, 3 * D, Act::None, true, 0, lf));
  v.push_back(linear(M, D, H, Act::GeluTanh, true, 0, lf));
  v.push_back(attention(B, L, c.num_heads, c.head_dim(), 0, Fill::normal()));
  v.push_back(ln_modulate(B, L, D, 6, 0, "ln", {Fill::normal(), Fill::normal(0.1)}));
  v.push_back(gated_residual(B, L, D, 0, "gated", Fill::normal(), Fill::normal(0.1)));
  v.push_back(patch(B, C, S, S, c.patch_size, PatchLayout::CPP, false, Fill::normal(0.5), 0));
  // iddpm_loss at the batch's time steps (inputs filled on the backend: the values do not matter)
  {
    OpCase k;
    const int Co = c.out_channels();
    const bool ls = c.learn_sigma;
    const size_t per = size_t(C) * HW, co_hw = size_t(Co) * HW;
    k.op = k.name = k.perf_fwd = "iddpm_loss";
    const int mo = k.in("model_out", B * co_hw, Fill::normal(0.5)), x0 = k.in("x0", B * per, Fill::normal(0.5));
    const int xt = k.in("xt", B * per), eps = k.in("eps", B * per), ti = k.ints("t", t);
    const int wt = k.in("weight", B, Fill::constant(1.0)), tb = k.tables(tabs), steps = tabs.steps();
    const int ls3 = k.out("losses", size_t(B) * 3), dout = k.out("dout", B * co_hw);
    k.forward([=](auto& be, auto& b) {
      be.iddpm_loss(b[mo], b[x0], b[xt], b[eps], b.idx(ti), b[wt], tables_view(b, tb, steps), 1.0, ls, b[ls3], b[ls3] + B,
                    b[ls3] + 2 * B, b[dout], B, C, HW);
    });
    k.fwd_bytes = (2.0 * B * co_hw + 3.0 * B * per) * sizeof(float);
    v.push_back(std::move(k));
  }
  {
    SampleStepCoefs sc;
    sc.mode = SampleStepCoefs::DDPM;
    sc.sqrt_recip_abar = tabs.sqrt_recip_abar[500];
    sc.sqrt_recipm1_abar = tabs.sqrt_recipm1_abar[500];
    sc.coef1 = tabs.coef1[500];
    sc.coef2 = tabs.coef2[500];
    sc.log_beta = tabs.log_beta[500];
    sc.post_log_var = tabs.post_log_var[500];
    sc.add_noise = true;
    v.push_back(sample_step(B, C, HW, c.learn_sigma, sc, true, "DDPM", Fill::normal(0.5), 0, 0));
  }
  {
    OptimHyper oh;
    oh.max_grad_norm = 1.0;
    OpCase k;
    k.op = k.name = k.perf_fwd = "optimizer_step";
    const size_t n = n_params;
    const int p = k.inout("params", n, Fill::normal(0.02)), g = k.in("grads", n, Fill::normal(1e-3));
    const int m = k.inout("m", n, Fill::constant(0)), vv = k.inout("v", n, Fill::constant(0));
    const int ema = k.inout("ema", n, Fill::normal(0.02)), losses = k.in("losses", B, Fill::constant(0.5));
    k.forward([=](auto& be, auto& b) { be.optimizer_step(b[p], b[g], b[m], b[vv], b[ema], n, oh, b[losses], B); });
    k.fwd_bytes = 15.0 * n * sizeof(float);
    v.push_back(std::move(k));
  }
  return v;
}

// ---- running a case --------------------------------------------------------------------------------
Host make_host(const OpCase& c, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ seed;  // FNV-1a of the case name
  for (char ch : c.name) h = (h ^ uint8_t(ch)) * 1099511628211ULL;
  std::mt19937_64 rng(h);
  Host out;
  out.set.assign(c.t.size(), 0);
  for (const TensorSpec& s : c.t) {
    V v(s.n, std::numeric_limits<double>::quiet_NaN());
    const Fill& f = s.fill;
    if (f.kind == Fill::Uniform) {
      std::uniform_real_distribution<double> u(f.a, f.b);
      for (auto& x : v) x = u(rng);
    } else if (f.kind == Fill::Normal) {
      std::normal_distribution<double> nd(f.a, f.b);
      for (auto& x : v) x = nd(rng);
    } else if (f.kind == Fill::Const) {
      v.assign(s.n, f.a);
    } else if (f.kind == Fill::Values) {
      v = f.values;
      v.resize(s.n, 0.0);
    }
    out.v.push_back(std::move(v));
  }
  return out;
}

template <typename T>
CaseRun<T>::CaseRun(Backend<T>& be, const OpCase& c) : be_(be), c_(c) {
  for (const TensorSpec& s : c.t) {
    const size_t bytes = std::max<size_t>(s.n, 1) * (s.is_int ? sizeof(int32_t) : sizeof(T));
    try {
      b_.p.push_back(be.alloc_bytes(bytes));
    } catch (...) {
      for (void* p : b_.p) be.free_bytes(p);
      throw;
    }
  }
}

template <typename T>
CaseRun<T>::~CaseRun() {
  for (void* p : b_.p) be_.free_bytes(p);
}

template <typename T>
void CaseRun<T>::upload(int i, const std::vector<double>& v) {
  const TensorSpec& s = c_.t[i];
  if (v.size() != s.n)
    throw Error("op table: case '" + c_.name + "' tensor '" + s.name + "' holds " + std::to_string(s.n) +
                " elements, got " + std::to_string(v.size()) + " values");
  if (s.is_int) {
    std::vector<int32_t> h(v.begin(), v.end());
    be_.to_device(b_.p[i], h.data(), h.size() * sizeof(int32_t));
  } else {
    std::vector<T> h(v.begin(), v.end());
    be_.to_device(b_.p[i], h.data(), h.size() * sizeof(T));
  }
}

template <typename T>
void CaseRun<T>::poison(int i) {
  upload(i, std::vector<double>(c_.t[i].n, std::numeric_limits<double>::quiet_NaN()));
}

template <typename T>
std::vector<double> CaseRun<T>::download(int i) const {
  const TensorSpec& s = c_.t[i];
  if (s.is_int) {
    std::vector<int32_t> h(s.n);
    be_.to_host(h.data(), b_.p[i], s.n * sizeof(int32_t));
    return std::vector<double>(h.begin(), h.end());
  }
  std::vector<T> h(s.n);
  be_.to_host(h.data(), b_.p[i], s.n * sizeof(T));
  return std::vector<double>(h.begin(), h.end());
}

template <typename T>
void CaseRun<T>::load_inputs(const Host& h) {
  for (size_t i = 0; i < c_.t.size(); ++i) {
    const Role r = c_.t[i].role;
    if (r == Role::In || r == Role::InOut || r == Role::DOut)
      upload(int(i), h.v[i]);
    else if (r == Role::Out)
      poison(int(i));
  }
}

template <typename T>
void CaseRun<T>::fill_for_perf() {
  // device-side fills (large tensors never pass through the host unless scaled)
  for (size_t i = 0; i < c_.t.size(); ++i) {
    const TensorSpec& s = c_.t[i];
    const Fill& f = s.fill;
    if (s.is_int || f.kind == Fill::Values) {
      std::vector<double> v = f.values;
      v.resize(s.n, 0.0);
      upload(int(i), v);
    } else if (f.kind == Fill::Const) {
      be_.fill(static_cast<T*>(b_.p[i]), T(f.a), s.n);
    } else {
      be_.normal(static_cast<T*>(b_.p[i]), s.n, 0xBE4C0000u + i, 0);
      const double scale = f.kind == Fill::Normal ? f.b : 1.0;
      if (scale != 1.0) {
        std::vector<T> h(s.n);
        be_.to_host(h.data(), b_.p[i], s.n * sizeof(T));
        for (T& x : h) x = static_cast<T>(x * scale);
        be_.to_device(b_.p[i], h.data(), s.n * sizeof(T));
      }
    }
  }
}

template class CaseRun<float>;
template class CaseRun<double>;

}  // namespace speed::ops
