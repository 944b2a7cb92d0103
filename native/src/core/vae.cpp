// speed::VAE<T>: SD's AutoencoderKL graph against Backend<T> (see vae.h).
//
// One walker per direction (run_encoder, run_decoder) serves three purposes:
// with a Plan in "count" mode it runs no op and only sums FLOPs and the largest
// activation a chunk needs; in "run" mode it executes. So the FLOP figures of
// the bench, the arena size and the executed graph cannot drift apart.
//
// Activations rotate through four equal buffers ("slots", each the largest
// activation of the graph for one chunk) plus lse [chunk, L_mid] for the
// attention. A ResNet block whose channels do not change accumulates conv2
// straight onto its input (the residual), so it needs no extra buffer.
#include "speed/vae.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "layout.h"  // ParamLayout

namespace speed {

void VAEConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& msg) { throw Error("VAEConfig." + key + ": " + msg); };
  auto range = [&](const char* key, int v, int lo, int hi) {
    if (v < lo || v > hi)
      bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  };
  range("in_channels", in_channels, 1, 64);
  range("out_channels", out_channels, 1, 64);
  range("latent_channels", latent_channels, 1, 256);
  range("layers_per_block", layers_per_block, 1, 16);
  range("norm_num_groups", norm_num_groups, 1, 1024);
  if (block_out_channels.empty() || block_out_channels.size() > 8)
    bad("block_out_channels", "must list 1 to 8 levels, got " + std::to_string(block_out_channels.size()));
  for (size_t i = 0; i < block_out_channels.size(); ++i) {
    const int c = block_out_channels[i];
    if (c < 1 || c > 8192)
      bad("block_out_channels[" + std::to_string(i) + "]", "must be in [1, 8192], got " + std::to_string(c));
    if (c % norm_num_groups != 0)
      bad("block_out_channels[" + std::to_string(i) + "]",
          std::to_string(c) + " is not divisible by norm_num_groups " + std::to_string(norm_num_groups));
  }
}

namespace {

constexpr double kGnEps = 1e-6;  // diffusers resnet_eps / LDM Normalize

struct ConvP {
  size_t w = 0, b = 0;
  int ci = 0, co = 0, k = 1;
};
struct NormP {
  size_t w = 0, b = 0;
  int c = 0;
};
struct ResP {
  NormP n1, n2;
  ConvP c1, c2, sc;
  bool has_sc = false;
  int ci = 0, co = 0;
};
struct AttnP {
  NormP n;
  size_t qkv_w = 0, qkv_b = 0;  // to_q, to_k, to_v weights (and biases) are adjacent: one [3C, C] Linear
  size_t out_w = 0, out_b = 0;
  int c = 0;
};
struct MidP {
  ResP r0, r1;
  AttnP attn;
};
struct VaeLayout : ParamLayout {
  ConvP enc_in, enc_out, quant, post_quant, dec_in, dec_out;
  std::vector<std::vector<ResP>> down, up;
  std::vector<ConvP> downsample, upsample;  // per level; k == 0 when the level has none
  MidP enc_mid, dec_mid;
  NormP enc_norm_out, dec_norm_out;
};

ConvP add_conv(VaeLayout& L, const std::string& p, int ci, int co, int k) {
  ConvP c;
  c.ci = ci;
  c.co = co;
  c.k = k;
  c.w = L.add(p + ".weight", {co, ci, k, k});
  c.b = L.add(p + ".bias", {co});
  return c;
}
NormP add_norm(VaeLayout& L, const std::string& p, int c) {
  NormP n;
  n.c = c;
  n.w = L.add(p + ".weight", {c});
  n.b = L.add(p + ".bias", {c});
  return n;
}
ResP add_res(VaeLayout& L, const std::string& p, int ci, int co) {
  ResP r;
  r.ci = ci;
  r.co = co;
  r.n1 = add_norm(L, p + ".norm1", ci);
  r.c1 = add_conv(L, p + ".conv1", ci, co, 3);
  r.n2 = add_norm(L, p + ".norm2", co);
  r.c2 = add_conv(L, p + ".conv2", co, co, 3);
  r.has_sc = ci != co;
  if (r.has_sc) r.sc = add_conv(L, p + ".conv_shortcut", ci, co, 1);
  return r;
}
AttnP add_attn(VaeLayout& L, const std::string& p, int c) {
  AttnP a;
  a.c = c;
  a.n = add_norm(L, p + ".group_norm", c);
  a.qkv_w = L.add(p + ".to_q.weight", {c, c});
  L.add(p + ".to_k.weight", {c, c});
  L.add(p + ".to_v.weight", {c, c});
  a.qkv_b = L.add(p + ".to_q.bias", {c});
  L.add(p + ".to_k.bias", {c});
  L.add(p + ".to_v.bias", {c});
  a.out_w = L.add(p + ".to_out.0.weight", {c, c});
  a.out_b = L.add(p + ".to_out.0.bias", {c});
  return a;
}
MidP add_mid(VaeLayout& L, const std::string& p, int c) {
  MidP m;
  m.r0 = add_res(L, p + ".resnets.0", c, c);
  m.attn = add_attn(L, p + ".attentions.0", c);
  m.r1 = add_res(L, p + ".resnets.1", c, c);
  return m;
}

VaeLayout make_vae_layout(const VAEConfig& c) {
  VaeLayout L;
  const auto& boc = c.block_out_channels;
  const int levels = static_cast<int>(boc.size()), z = c.latent_channels;
  // encoder
  L.enc_in = add_conv(L, "encoder.conv_in", c.in_channels, boc[0], 3);
  L.down.resize(levels);
  L.downsample.resize(levels);
  int ch = boc[0];
  for (int i = 0; i < levels; ++i) {
    const std::string p = "encoder.down_blocks." + std::to_string(i);
    for (int j = 0; j < c.layers_per_block; ++j) {
      L.down[i].push_back(add_res(L, p + ".resnets." + std::to_string(j), ch, boc[i]));
      ch = boc[i];
    }
    if (i + 1 < levels) L.downsample[i] = add_conv(L, p + ".downsamplers.0.conv", ch, ch, 3);
  }
  L.enc_mid = add_mid(L, "encoder.mid_block", ch);
  L.enc_norm_out = add_norm(L, "encoder.conv_norm_out", ch);
  L.enc_out = add_conv(L, "encoder.conv_out", ch, 2 * z, 3);
  L.quant = add_conv(L, "quant_conv", 2 * z, 2 * z, 1);
  L.post_quant = add_conv(L, "post_quant_conv", z, z, 1);
  // decoder
  ch = boc[levels - 1];
  L.dec_in = add_conv(L, "decoder.conv_in", z, ch, 3);
  L.dec_mid = add_mid(L, "decoder.mid_block", ch);
  L.up.resize(levels);
  L.upsample.resize(levels);
  for (int i = 0; i < levels; ++i) {
    const int co = boc[levels - 1 - i];
    const std::string p = "decoder.up_blocks." + std::to_string(i);
    for (int j = 0; j <= c.layers_per_block; ++j) {
      L.up[i].push_back(add_res(L, p + ".resnets." + std::to_string(j), ch, co));
      ch = co;
    }
    if (i + 1 < levels) L.upsample[i] = add_conv(L, p + ".upsamplers.0.conv", ch, ch, 3);
  }
  L.dec_norm_out = add_norm(L, "decoder.conv_norm_out", ch);
  L.dec_out = add_conv(L, "decoder.conv_out", ch, c.out_channels, 3);
  return L;
}

}  // namespace

template <typename T>
struct VAE<T>::Impl {
  VAEConfig cfg;
  std::shared_ptr<Backend<T>> be_ptr;
  Backend<T>* be;
  VaeLayout lay;
  T* params = nullptr;
  std::vector<bool> written;
  std::map<std::string, size_t> index;

  // ---- the arena -------------------------------------------------------------
  T* slot[4] = {nullptr, nullptr, nullptr, nullptr};
  T *lse = nullptr, *eps = nullptr;
  size_t slot_cap = 0, lse_cap = 0, eps_cap = 0;

  // Count mode (run == false): sum FLOPs and the largest activation (elements,
  // for N images) and attention length; no op runs, no pointer is touched.
  struct Plan {
    bool run = true;
    double flops = 0;
    size_t max_act = 0, max_lse = 0;
    void act(size_t n) { max_act = std::max(max_act, n); }
  };

  Impl(const VAEConfig& c, std::shared_ptr<Backend<T>> b) : cfg(c), be_ptr(std::move(b)) {
    if (!be_ptr) throw Error("VAE: backend is null");
    cfg.validate();
    be = be_ptr.get();
    lay = make_vae_layout(cfg);
    params = static_cast<T*>(be->alloc_bytes(std::max<size_t>(lay.num_trainable, 1) * sizeof(T)));
    be->fill(params, T(0), lay.num_trainable);
    written.assign(lay.params.size(), false);
    for (size_t i = 0; i < lay.params.size(); ++i) index[lay.params[i].name] = i;
  }
  ~Impl() {
    release();
    be->free_bytes(params);
  }
  void release() {
    for (T*& s : slot) {
      be->free_bytes(s);
      s = nullptr;
    }
    be->free_bytes(lse);
    be->free_bytes(eps);
    lse = eps = nullptr;
    slot_cap = lse_cap = eps_cap = 0;
  }
  T* alloc(size_t n) { return static_cast<T*>(be->alloc_bytes(std::max<size_t>(n, 1) * sizeof(T))); }
  void ensure(size_t act, size_t lse_n, size_t eps_n) {
    if (act <= slot_cap && lse_n <= lse_cap && eps_n <= eps_cap) return;
    const size_t a = std::max(act, slot_cap), l = std::max(lse_n, lse_cap), e = std::max(eps_n, eps_cap);
    release();
    try {
      for (T*& s : slot) s = alloc(a);
      lse = alloc(l);
      eps = alloc(e);
    } catch (...) {
      release();
      throw;
    }
    slot_cap = a;
    lse_cap = l;
    eps_cap = e;
  }

  const ParamInfo& find(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) throw Error("VAE: unknown parameter '" + name + "'");
    return lay.params[it->second];
  }
  const T* P(size_t off) const { return params + off; }

  // ---- ops (skipped in count mode) ----------------------------------------------
  void conv(Plan& pl, const ConvP& c, const T* x, T* y, int N, int H, int W, bool accum = false,
            bool down = false) {
    Conv2dShape s;
    s.N = N;
    s.Ci = c.ci;
    s.H = H;
    s.W = W;
    s.Co = c.co;
    s.kh = s.kw = c.k;
    if (down) {  // SD's Downsample2D: F.pad(x, (0, 1, 0, 1)), then 3x3 stride 2 no padding
      s.stride = 2;
      s.pad_b = s.pad_r = 1;
    } else if (c.k == 3) {
      s.pad_t = s.pad_l = s.pad_b = s.pad_r = 1;
    }
    const double out = double(N) * c.co * s.Ho() * s.Wo();
    pl.flops += 2.0 * out * c.ci * c.k * c.k;
    pl.act(static_cast<size_t>(out));
    if (pl.run) be->conv2d_forward(x, P(c.w), P(c.b), y, s, accum);
  }
  void gn(Plan& pl, const NormP& n, const T* x, T* y, int N, int HW, bool silu) {
    pl.act(size_t(N) * n.c * HW);
    if (pl.run) be->group_norm_forward(x, P(n.w), P(n.b), y, N, n.c, HW, cfg.norm_num_groups, kGnEps, silu);
  }

  // Slot rotation: `cur` holds the activation; others are free scratch.
  T* S(int i) const { return slot[i & 3]; }

  // x in slot cur -> out in slot cur (same-channel) or cur+3 (shortcut)
  void resnet(Plan& pl, const ResP& r, int& cur, int N, int H, int W) {
    const int HW = H * W;
    T *x = S(cur), *a = S(cur + 1), *b = S(cur + 2);
    gn(pl, r.n1, x, a, N, HW, true);
    conv(pl, r.c1, a, b, N, H, W);
    gn(pl, r.n2, b, b, N, HW, true);
    if (r.has_sc) {
      T* c = S(cur + 3);
      conv(pl, r.sc, x, c, N, H, W);
      conv(pl, r.c2, b, c, N, H, W, true);
      cur = cur + 3;
    } else {
      conv(pl, r.c2, b, x, N, H, W, true);  // x += conv2(h): the residual in place
    }
    cur &= 3;
  }
  // Single-head self-attention over the H*W tokens, residual added in place.
  void attention(Plan& pl, const AttnP& at, int cur, int N, int H, int W) {
    const int L = H * W, C = at.c;
    T *x = S(cur), *a = S(cur + 1), *b = S(cur + 2), *q = S(cur + 3);
    const size_t M = size_t(N) * L;
    pl.act(3 * M * C);
    pl.max_lse = std::max(pl.max_lse, M);
    pl.flops += 2.0 * M * C * 3 * C + 2.0 * M * C * C + 4.0 * N * double(L) * L * C;
    gn(pl, at.n, x, a, N, L, false);
    if (!pl.run) return;
    be->transpose_batched(a, b, N, C, L);  // [N, C, L] -> tokens [N, L, C]
    // One Linear per image (M = L), never over the whole chunk: a GEMM's rounding may
    // depend on M, and results must not depend on the chunk size.
    const size_t LC = size_t(L) * C;
    for (int n = 0; n < N; ++n)
      be->linear_forward(b + n * LC, P(at.qkv_w), P(at.qkv_b), q + 3 * n * LC, nullptr, L, C, 3 * C, Act::None);
    be->attention_forward(q, a, lse, N, L, 1, C);  // scale C^-0.5, as diffusers/LDM
    for (int n = 0; n < N; ++n)
      be->linear_forward(a + n * LC, P(at.out_w), P(at.out_b), b + n * LC, nullptr, L, C, C, Act::None);
    be->transpose_batched(b, a, N, L, C);  // back to [N, C, L]
    be->add(x, a, x, M * C);
  }
  void mid(Plan& pl, const MidP& m, int& cur, int N, int H, int W) {
    resnet(pl, m.r0, cur, N, H, W);
    attention(pl, m.attn, cur, N, H, W);
    resnet(pl, m.r1, cur, N, H, W);
  }

  // images (slot 0 holds them) -> moments in the returned slot
  int run_encoder(Plan& pl, int N, int H, int W) {
    const int levels = static_cast<int>(cfg.block_out_channels.size());
    pl.act(size_t(N) * cfg.in_channels * H * W);
    int cur = 1;
    conv(pl, lay.enc_in, S(0), S(cur), N, H, W);
    for (int i = 0; i < levels; ++i) {
      for (const ResP& r : lay.down[i]) resnet(pl, r, cur, N, H, W);
      if (i + 1 < levels) {
        conv(pl, lay.downsample[i], S(cur), S(cur + 1), N, H, W, false, true);
        cur = (cur + 1) & 3;
        H = (H + 1 - 3) / 2 + 1;
        W = (W + 1 - 3) / 2 + 1;
      }
    }
    mid(pl, lay.enc_mid, cur, N, H, W);
    gn(pl, lay.enc_norm_out, S(cur), S(cur + 1), N, H * W, true);
    conv(pl, lay.enc_out, S(cur + 1), S(cur + 2), N, H, W);
    conv(pl, lay.quant, S(cur + 2), S(cur + 3), N, H, W);
    return (cur + 3) & 3;
  }
  // z (slot 0) -> images in the returned slot
  int run_decoder(Plan& pl, int N, int h, int w) {
    const int levels = static_cast<int>(cfg.block_out_channels.size());
    pl.act(size_t(N) * cfg.latent_channels * h * w);
    conv(pl, lay.post_quant, S(0), S(1), N, h, w);
    conv(pl, lay.dec_in, S(1), S(2), N, h, w);
    int cur = 2;
    int H = h, W = w;
    mid(pl, lay.dec_mid, cur, N, H, W);
    for (int i = 0; i < levels; ++i) {
      for (const ResP& r : lay.up[i]) resnet(pl, r, cur, N, H, W);
      if (i + 1 < levels) {
        const ConvP& u = lay.upsample[i];
        pl.act(size_t(N) * u.ci * 4 * H * W);
        if (pl.run) be->upsample_nearest2x(S(cur), S(cur + 1), N, u.ci, H, W);
        H *= 2;
        W *= 2;
        conv(pl, u, S(cur + 1), S(cur + 2), N, H, W);
        cur = (cur + 2) & 3;
      }
    }
    gn(pl, lay.dec_norm_out, S(cur), S(cur + 1), N, H * W, true);
    conv(pl, lay.dec_out, S(cur + 1), S(cur + 2), N, H, W);
    return (cur + 2) & 3;
  }

  Plan count_encoder(int N, int H, int W) {
    Plan p;
    p.run = false;
    run_encoder(p, N, H, W);
    return p;
  }
  Plan count_decoder(int N, int h, int w) {
    Plan p;
    p.run = false;
    run_decoder(p, N, h, w);
    return p;
  }

  void check_size(const char* what, int N, int H, int W, int mult) const {
    if (N < 0 || H < 1 || W < 1 || H > 16384 || W > 16384)
      throw Error(std::string("VAE.") + what + ": expected N >= 0 and 1 <= H, W <= 16384, got N=" +
                  std::to_string(N) + " H=" + std::to_string(H) + " W=" + std::to_string(W));
    if (H % mult != 0 || W % mult != 0)
      throw Error(std::string("VAE.") + what + ": H and W must be multiples of " + std::to_string(mult) + ", got " +
                  std::to_string(H) + "x" + std::to_string(W));
  }
  // The mid-block attention holds one L x L score matrix per task (L = tokens at the
  // lowest resolution): bounded here rather than failing on an allocation.
  void check_tokens(const char* what, int h, int w) const {
    const long long L = static_cast<long long>(h) * w;
    if (L > kMaxTokens)
      throw Error(std::string("VAE.") + what + ": the mid-block attention would run over " + std::to_string(L) +
                  " tokens (" + std::to_string(h) + "x" + std::to_string(w) + " at the lowest resolution); at most " +
                  std::to_string(kMaxTokens) + " (1024x1024 images for SD's f8) are supported: tile larger images");
  }
  static constexpr long long kMaxTokens = 16384;
  int chunk_of(const char* what, int chunk, int N) const {
    if (chunk < 1) throw Error(std::string("VAE.") + what + ": chunk must be >= 1, got " + std::to_string(chunk));
    return std::min(chunk, std::max(N, 1));
  }
};

template <typename T>
VAE<T>::VAE(const VAEConfig& cfg, std::shared_ptr<Backend<T>> backend)
    : impl_(std::make_unique<Impl>(cfg, std::move(backend))) {}
template <typename T>
VAE<T>::~VAE() = default;
template <typename T>
const VAEConfig& VAE<T>::config() const {
  return impl_->cfg;
}
template <typename T>
Backend<T>& VAE<T>::backend() {
  return *impl_->be;
}
template <typename T>
const std::vector<ParamInfo>& VAE<T>::params() const {
  return impl_->lay.params;
}
template <typename T>
size_t VAE<T>::num_params() const {
  return impl_->lay.num_trainable;
}
template <typename T>
void VAE<T>::read_param(const std::string& name, T* host) const {
  const ParamInfo& p = impl_->find(name);
  if (!host) throw Error("VAE.read_param('" + name + "'): host buffer is null");
  impl_->be->to_host(host, impl_->params + p.offset, p.numel * sizeof(T));
}
template <typename T>
void VAE<T>::write_param(const std::string& name, const T* host) {
  const ParamInfo& p = impl_->find(name);
  if (!host) throw Error("VAE.write_param('" + name + "'): host buffer is null");
  for (size_t i = 0; i < p.numel; ++i)
    if (!std::isfinite(static_cast<double>(host[i])))
      throw Error("VAE.write_param('" + name + "'): element " + std::to_string(i) + " is not finite");
  impl_->be->to_device(impl_->params + p.offset, host, p.numel * sizeof(T));
  impl_->written[impl_->index.at(name)] = true;
}
template <typename T>
std::vector<std::string> VAE<T>::unwritten() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < impl_->lay.params.size(); ++i)
    if (!impl_->written[i]) out.push_back(impl_->lay.params[i].name);
  return out;
}

template <typename T>
void VAE<T>::encode_moments(const T* images, int N, int H, int W, T* moments, int chunk,
                            const VAEProgress& progress) {
  Impl& I = *impl_;
  const int f = I.cfg.down_factor();
  I.check_size("encode", N, H, W, f);
  I.check_tokens("encode", H / f, W / f);
  if (N == 0) return;
  if (!images || !moments) throw Error("VAE.encode: null buffer");
  chunk = I.chunk_of("encode", chunk, N);
  auto plan = I.count_encoder(chunk, H, W);
  I.ensure(plan.max_act, plan.max_lse, 0);
  const size_t in_per = size_t(I.cfg.in_channels) * H * W;
  const size_t out_per = size_t(2 * I.cfg.latent_channels) * (H / f) * (W / f);
  for (int n0 = 0; n0 < N; n0 += chunk) {
    const int n = std::min(chunk, N - n0);
    I.be->to_device(I.slot[0], images + n0 * in_per, n * in_per * sizeof(T));
    typename Impl::Plan run;
    const int s = I.run_encoder(run, n, H, W);
    I.be->to_host(moments + n0 * out_per, I.slot[s], n * out_per * sizeof(T));
    if (progress) progress(n0 + n, N);
  }
}

template <typename T>
void VAE<T>::encode(const T* images, int N, int H, int W, T* z, bool sample, uint64_t seed, uint64_t offset,
                    int chunk, const VAEProgress& progress, uint64_t first_image) {
  Impl& I = *impl_;
  const int f = I.cfg.down_factor();
  I.check_size("encode", N, H, W, f);
  I.check_tokens("encode", H / f, W / f);
  if (N == 0) return;
  if (!images || !z) throw Error("VAE.encode: null buffer");
  chunk = I.chunk_of("encode", chunk, N);
  auto plan = I.count_encoder(chunk, H, W);
  const int zc = I.cfg.latent_channels;
  const size_t in_per = size_t(I.cfg.in_channels) * H * W;
  const size_t z_per = size_t(zc) * (H / f) * (W / f);
  I.ensure(plan.max_act, plan.max_lse, sample ? chunk * z_per + 4 : 0);
  for (int n0 = 0; n0 < N; n0 += chunk) {
    const int n = std::min(chunk, N - n0);
    I.be->to_device(I.slot[0], images + n0 * in_per, n * in_per * sizeof(T));
    typename Impl::Plan run;
    const int s = I.run_encoder(run, n, H, W);
    const T* e = nullptr;
    if (sample) {
      // element i of the whole batch's eps is Philox normal (i % 4) of block offset + i / 4
      const uint64_t e0 = (first_image + uint64_t(n0)) * z_per, skip = e0 % 4;
      I.be->normal(I.eps, n * z_per + skip, seed, offset + e0 / 4);
      e = I.eps + skip;
    }
    T* out = I.slot[(s + 1) & 3];
    I.be->gaussian_sample(I.slot[s], e, out, n, zc, static_cast<int>(z_per / zc));
    I.be->to_host(z + n0 * z_per, out, n * z_per * sizeof(T));
    if (progress) progress(n0 + n, N);
  }
}

template <typename T>
void VAE<T>::decode(const T* z, int N, int h, int w, T* images, int chunk, const VAEProgress& progress) {
  Impl& I = *impl_;
  const int f = I.cfg.down_factor();
  I.check_size("decode", N, h, w, 1);
  I.check_tokens("decode", h, w);
  if (N == 0) return;
  if (!images || !z) throw Error("VAE.decode: null buffer");
  chunk = I.chunk_of("decode", chunk, N);
  auto plan = I.count_decoder(chunk, h, w);
  I.ensure(plan.max_act, plan.max_lse, 0);
  const size_t in_per = size_t(I.cfg.latent_channels) * h * w;
  const size_t out_per = size_t(I.cfg.out_channels) * (h * f) * (w * f);
  for (int n0 = 0; n0 < N; n0 += chunk) {
    const int n = std::min(chunk, N - n0);
    I.be->to_device(I.slot[0], z + n0 * in_per, n * in_per * sizeof(T));
    typename Impl::Plan run;
    const int s = I.run_decoder(run, n, h, w);
    I.be->to_host(images + n0 * out_per, I.slot[s], n * out_per * sizeof(T));
    if (progress) progress(n0 + n, N);
  }
}

template <typename T>
size_t VAE<T>::activation_bytes(int chunk, int H, int W) const {
  Impl& I = *impl_;
  const int f = I.cfg.down_factor();
  I.check_size("activation_bytes", chunk, H, W, f);
  auto e = I.count_encoder(chunk, H, W);
  auto d = I.count_decoder(chunk, H / f, W / f);
  const size_t act = std::max(e.max_act, d.max_act), l = std::max(e.max_lse, d.max_lse);
  const size_t z_per = size_t(I.cfg.latent_channels) * (H / f) * (W / f);
  return (4 * act + l + chunk * z_per + 4) * sizeof(T);
}
template <typename T>
double VAE<T>::encode_flops(int H, int W) const {
  impl_->check_size("encode_flops", 1, H, W, impl_->cfg.down_factor());
  return impl_->count_encoder(1, H, W).flops;
}
template <typename T>
double VAE<T>::decode_flops(int H, int W) const {
  const int f = impl_->cfg.down_factor();
  impl_->check_size("decode_flops", 1, H, W, f);
  return impl_->count_decoder(1, H / f, W / f).flops;
}

template class VAE<float>;
template class VAE<double>;

}  // namespace speed
