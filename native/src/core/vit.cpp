// speed::ViTClassifier<T>: the feature network's graph against Backend<T>.
//
// Owned data (backend memory): params_/grads_/m_/v_ (flat, same layout),
// pos_ (fixed pos_embed [L, D]), and one activation arena that saves every
// block's activations (the model is small; one arena serves training, logits
// and features, re-allocated only when the batch grows).
//
// The cross-entropy runs on the host (classifier.h) after downloading the
// per-token logits [N, L, classes] and averaging them over tokens: a few
// thousand numbers, off the hot path, and it needs no new backend op. Its
// gradient goes back up as d(logits per token) = g[n, :] / L.
#include "speed/vit.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "classifier.h"
#include "layout.h"  // ParamLayout, InitRng, xavier_uniform, upload_pos_embed

namespace speed {

void ViTConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& msg) {
    throw Error("ViTConfig." + key + ": " + msg);
  };
  if (input_size < 1) bad("input_size", "must be >= 1, got " + std::to_string(input_size));
  if (patch_size < 1) bad("patch_size", "must be >= 1, got " + std::to_string(patch_size));
  if (input_size % patch_size != 0)
    bad("input_size", std::to_string(input_size) + " is not divisible by patch_size " + std::to_string(patch_size));
  if (in_channels < 1) bad("in_channels", "must be >= 1, got " + std::to_string(in_channels));
  if (hidden_size < 4 || hidden_size % 4 != 0)
    bad("hidden_size", "must be a positive multiple of 4 (2D sin-cos pos_embed), got " + std::to_string(hidden_size));
  if (depth < 1) bad("depth", "must be >= 1, got " + std::to_string(depth));
  if (num_heads < 1 || hidden_size % num_heads != 0)
    bad("num_heads", std::to_string(num_heads) + " must be >= 1 and divide hidden_size " + std::to_string(hidden_size));
  if (!(mlp_ratio > 0) || !std::isfinite(mlp_ratio) || mlp_hidden() < 1)
    bad("mlp_ratio", "must be > 0 with hidden_size * mlp_ratio >= 1, got " + std::to_string(mlp_ratio));
  if (num_classes < 2) bad("num_classes", "must be >= 2 for a classifier, got " + std::to_string(num_classes));
}

namespace {

constexpr double kVitLnEps = 1e-6;

using VitBlockOffsets = AttnMlpOffsets;

struct VitLayout : ParamLayout {
  size_t pe_w = 0, pe_b = 0, head_w = 0, head_b = 0;
  std::vector<VitBlockOffsets> blocks;
};

VitLayout make_vit_layout(const ViTConfig& c) {
  VitLayout lay;
  const int64_t D = c.hidden_size, H = c.mlp_hidden(), L = c.num_tokens(), K = c.num_classes;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { return lay.add(name, std::move(shape)); };
  lay.add_pos_embed(L, D);
  lay.pe_w = add("patch_embed.proj.weight", {D, c.in_channels, c.patch_size, c.patch_size});
  lay.pe_b = add("patch_embed.proj.bias", {D});
  for (int i = 0; i < c.depth; ++i) {
    lay.blocks.push_back(add_attn_mlp(lay, "blocks." + std::to_string(i) + ".", D, H));
  }
  lay.head_w = add("head.weight", {K, D});
  lay.head_b = add("head.bias", {K});
  return lay;
}

// InitRng counter word 3 of the ViT's init, distinct from the DiT's.
constexpr uint32_t kVitInitTag = 0x517Au;

}  // namespace

template <typename T>
struct ViTClassifier<T>::Impl {
  ViTConfig cfg;
  std::shared_ptr<Backend<T>> be_ptr;
  Backend<T>* be;
  VitLayout lay;
  ClassifierBuffers<T> buf;  // params, grads, Adam moments
  T* pos = nullptr;
  int64_t step = 0;

  // ---- the activation arena --------------------------------------------------
  int cap = 0;
  std::vector<void*> owned;
  T *img = nullptr, *tok_in = nullptr, *x_final = nullptr, *hf = nullptr, *meanf = nullptr, *rstdf = nullptr;
  T *logit_tok = nullptr, *zeros = nullptr, *losses = nullptr;
  T *dlogit_tok = nullptr, *dhf = nullptr, *dX = nullptr, *dA = nullptr, *dB = nullptr, *dBig = nullptr;
  T *dqkv = nullptr, *dshift = nullptr, *dscale = nullptr;
  std::vector<BlockActs<T>> acts;

  Impl(const ViTConfig& c, std::shared_ptr<Backend<T>> b) : cfg(c), be_ptr(std::move(b)) {
    if (!be_ptr) throw Error("ViTClassifier: backend is null");
    cfg.validate();
    be = be_ptr.get();
    lay = make_vit_layout(cfg);
    const size_t n = lay.num_trainable;
    buf.allocate(*be, n);
    try {
      pos = alloc(lay.pos_numel);
    } catch (...) {
      free_params();
      throw;
    }
    upload_pos();
  }
  ~Impl() {
    release_arena();
    free_params();
  }

  T* alloc(size_t n) { return static_cast<T*>(be->alloc_bytes(std::max<size_t>(n, 1) * sizeof(T))); }
  void free_params() {
    buf.release(*be);
    be->free_bytes(pos);
    pos = nullptr;
  }
  void upload_pos() { upload_pos_embed(*be, pos, cfg.hidden_size, cfg.grid()); }
  void release_arena() {
    for (void* p : owned) be->free_bytes(p);
    owned.clear();
    acts.clear();
    cap = 0;
  }
  T* A(size_t n) {
    T* p = alloc(n);
    owned.push_back(p);
    return p;
  }
  void ensure(int N) {
    if (N <= cap) return;
    release_arena();
    const size_t B = N, L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden();
    const size_t C = cfg.in_channels, S = cfg.input_size, P = C * cfg.patch_size * cfg.patch_size;
    const size_t BLD = B * L * D, K = cfg.num_classes, heads = cfg.num_heads;
    try {
      img = A(B * C * S * S);
      tok_in = A(B * L * P);
      acts.assign(cfg.depth, BlockActs<T>{});
      for (auto& a : acts) alloc_block_acts(a, [this](size_t n) { return A(n); }, B, L, D, H, heads, false, true);
      x_final = A(BLD);
      hf = A(BLD);
      meanf = A(B * L);
      rstdf = A(B * L);
      logit_tok = A(B * L * K);
      zeros = A(B * D);
      losses = A(B);
      dlogit_tok = A(B * L * K);
      dhf = A(BLD);
      dX = A(BLD);
      dA = A(BLD);
      dB = A(BLD);
      dBig = A(B * L * H);
      dqkv = A(3 * BLD);
      dshift = A(B * D);
      dscale = A(B * D);
    } catch (...) {
      release_arena();
      throw;
    }
    be->fill(zeros, T(0), B * D);
    cap = N;
  }

  // ---- forward: img -> hf (and, with `head`, per-token logits) ----------------
  void forward(int N, bool head) {
    Backend<T>& b = *be;
    const T* W = buf.params;
    const int L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden(), p = cfg.patch_size;
    const int C = cfg.in_channels, S = cfg.input_size, P = C * p * p, NL = N * L;
    b.patchify(img, tok_in, N, C, S, S, p, PatchLayout::CPP);
    b.linear_forward(tok_in, W + lay.pe_w, W + lay.pe_b, acts[0].x_in, nullptr, NL, P, D, Act::None);
    b.add_rows(acts[0].x_in, pos, N, size_t(L) * D);
    for (int i = 0; i < cfg.depth; ++i) {
      const VitBlockOffsets& o = lay.blocks[i];
      BlockActs<T>& s = acts[i];
      // x + attn(LN(x)); LN without affine: zero shift and scale rows
      b.ln_modulate_forward(s.x_in, zeros, zeros, D, s.h1, s.mean1, s.rstd1, N, L, D, kVitLnEps);
      b.linear_forward(s.h1, W + o.qkv_w, W + o.qkv_b, s.qkv, nullptr, NL, D, 3 * D, Act::None);
      b.attention_forward(s.qkv, s.att, s.lse, N, L, cfg.num_heads, cfg.head_dim());
      b.linear_forward(s.att, W + o.proj_w, W + o.proj_b, s.po, nullptr, NL, D, D, Act::None);
      b.add(s.x_in, s.po, s.xmid, size_t(NL) * D);
      // + mlp(LN(x))
      b.ln_modulate_forward(s.xmid, zeros, zeros, D, s.h2, s.mean2, s.rstd2, N, L, D, kVitLnEps);
      b.linear_forward(s.h2, W + o.fc1_w, W + o.fc1_b, s.f1, s.f1pre, NL, D, H, Act::GeluTanh);
      b.linear_forward(s.f1, W + o.fc2_w, W + o.fc2_b, s.f2, nullptr, NL, H, D, Act::None);
      T* next = i + 1 < cfg.depth ? acts[i + 1].x_in : x_final;
      b.add(s.xmid, s.f2, next, size_t(NL) * D);
    }
    b.ln_modulate_forward(x_final, zeros, zeros, D, hf, meanf, rstdf, N, L, D, kVitLnEps);
    if (head)
      b.linear_forward(hf, W + lay.head_w, W + lay.head_b, logit_tok, nullptr, NL, D, cfg.num_classes, Act::None);
  }

  // Per-token logits -> their mean over tokens [N, K] (host, double).
  std::vector<double> pooled_logits(int N) {
    const int L = cfg.num_tokens(), K = cfg.num_classes;
    std::vector<T> tok(size_t(N) * L * K);
    be->to_host(tok.data(), logit_tok, tok.size() * sizeof(T));
    std::vector<double> out(size_t(N) * K, 0.0);
    for (int n = 0; n < N; ++n)
      for (int l = 0; l < L; ++l)
        for (int k = 0; k < K; ++k) out[size_t(n) * K + k] += static_cast<double>(tok[(size_t(n) * L + l) * K + k]);
    for (double& v : out) v /= L;
    return out;
  }

  // ---- backward: dlogit_tok -> grads -------------------------------------------
  void backward(int N) {
    Backend<T>& b = *be;
    const T* W = buf.params;
    T* G = buf.grads;
    const int L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden(), p = cfg.patch_size;
    const int P = cfg.in_channels * p * p, NL = N * L;
    b.linear_backward(hf, W + lay.head_w, dlogit_tok, nullptr, dhf, G + lay.head_w, G + lay.head_b, NL, D,
                      cfg.num_classes, Act::None, false);
    b.ln_modulate_backward(dhf, x_final, meanf, rstdf, zeros, D, dX, dshift, dscale, N, L, D, false);
    // dX is the residual stream's gradient; each branch adds its part into it
    for (int i = cfg.depth - 1; i >= 0; --i) {
      const VitBlockOffsets& o = lay.blocks[i];
      BlockActs<T>& s = acts[i];
      b.linear_backward(s.f1, W + o.fc2_w, dX, nullptr, dBig, G + o.fc2_w, G + o.fc2_b, NL, H, D, Act::None, false);
      b.linear_backward(s.h2, W + o.fc1_w, dBig, s.f1pre, dB, G + o.fc1_w, G + o.fc1_b, NL, D, H, Act::GeluTanh,
                        false);
      b.ln_modulate_backward(dB, s.xmid, s.mean2, s.rstd2, zeros, D, dX, dshift, dscale, N, L, D, true);
      b.linear_backward(s.att, W + o.proj_w, dX, nullptr, dB, G + o.proj_w, G + o.proj_b, NL, D, D, Act::None,
                        false);
      b.attention_backward(s.qkv, s.att, dB, s.lse, dqkv, N, L, cfg.num_heads, cfg.head_dim());
      b.linear_backward(s.h1, W + o.qkv_w, dqkv, nullptr, dA, G + o.qkv_w, G + o.qkv_b, NL, D, 3 * D, Act::None,
                        false);
      b.ln_modulate_backward(dA, s.x_in, s.mean1, s.rstd1, zeros, D, dX, dshift, dscale, N, L, D, true);
    }
    // pos_embed is fixed: no gradient
    b.linear_backward(tok_in, W + lay.pe_w, dX, nullptr, nullptr, G + lay.pe_w, G + lay.pe_b, NL, P, D,
                      Act::None, false);
  }

  void upload_images(const T* x, int N) {
    ensure(N);
    const size_t n = size_t(N) * cfg.in_channels * cfg.input_size * cfg.input_size;
    be->to_device(img, x, n * sizeof(T));
  }

  ViTStepResult loss_and_grad(const T* x, const int32_t* y, int N, const char* what) {
    check_classifier_input(x, N, what);
    check_classifier_labels(y, N, cfg.num_classes, what);
    upload_images(x, N);
    forward(N, true);
    ViTStepResult r;
    std::vector<double> d = softmax_cross_entropy(pooled_logits(N), y, N, cfg.num_classes, r);
    // each token's logits enter the pooled logits with weight 1/L
    const int L = cfg.num_tokens(), K = cfg.num_classes;
    std::vector<T> dtok(size_t(N) * L * K);
    for (int n = 0; n < N; ++n)
      for (int l = 0; l < L; ++l)
        for (int k = 0; k < K; ++k) dtok[(size_t(n) * L + l) * K + k] = static_cast<T>(d[size_t(n) * K + k] / L);
    be->to_device(dlogit_tok, dtok.data(), dtok.size() * sizeof(T));
    backward(N);
    return r;
  }

  const ParamInfo& find(const std::string& name) const { return find_classifier_param(lay.params, name, "ViT"); }
  T* slot_ptr(const ParamInfo& p, Slot s, bool writing) const {
    if (!p.trainable) {
      if (s == Slot::Model) return pos;
      throw Error("parameter '" + p.name + "' is fixed: it has only the model slot");
    }
    return buf.slot(p, s, writing, "ViT");
  }
};

template <typename T>
ViTClassifier<T>::ViTClassifier(const ViTConfig& cfg, std::shared_ptr<Backend<T>> backend)
    : impl_(new Impl(cfg, std::move(backend))) {}
template <typename T>
ViTClassifier<T>::~ViTClassifier() = default;

template <typename T>
const ViTConfig& ViTClassifier<T>::config() const { return impl_->cfg; }
template <typename T>
Backend<T>& ViTClassifier<T>::backend() { return *impl_->be; }
template <typename T>
const std::vector<ParamInfo>& ViTClassifier<T>::params() const { return impl_->lay.params; }
template <typename T>
size_t ViTClassifier<T>::num_trainable() const { return impl_->lay.num_trainable; }
template <typename T>
int64_t ViTClassifier<T>::step() const { return impl_->step; }
template <typename T>
void ViTClassifier<T>::set_step(int64_t s) {
  if (s < 0) throw Error("set_step: step must be >= 0, got " + std::to_string(s));
  impl_->step = s;
}

template <typename T>
void ViTClassifier<T>::init(uint64_t seed) {
  Impl& I = *impl_;
  std::vector<T> host(I.lay.num_trainable, T(0));
  uint32_t index = 0;
  for (const ParamInfo& p : I.lay.params) {
    ++index;
    if (!p.trainable || p.shape.size() < 2) continue;  // biases stay zero
    xavier_uniform(host.data() + p.offset, p, seed, index, kVitInitTag);
  }
  const size_t bytes = host.size() * sizeof(T);
  I.be->to_device(I.buf.params, host.data(), bytes);
  for (T* p : {I.buf.grads, I.buf.m, I.buf.v}) I.be->fill(p, T(0), host.size());
  I.upload_pos();
  I.step = 0;
}

template <typename T>
void ViTClassifier<T>::read_param(const std::string& name, Slot slot, T* host) const {
  read_param_of(*impl_, name, slot, host);
}

template <typename T>
void ViTClassifier<T>::write_param(const std::string& name, Slot slot, const T* host) {
  write_param_of(*impl_, name, slot, host);
}

template <typename T>
ViTStepResult ViTClassifier<T>::loss_and_grad(const T* x, const int32_t* y, int N) {
  ViTStepResult r = impl_->loss_and_grad(x, y, N, "loss_and_grad");
  r.step = impl_->step;
  return r;
}

template <typename T>
ViTStepResult ViTClassifier<T>::train_step(const T* x, const int32_t* y, int N, const OptimHyper& hp) {
  Impl& I = *impl_;
  ViTStepResult r = I.loss_and_grad(x, y, N, "train_step");
  I.buf.optimizer_step(*I.be, I.lay.num_trainable, I.losses, hp, I.step, r);
  return r;
}

template <typename T>
void ViTClassifier<T>::logits(const T* x, int N, T* out) {
  Impl& I = *impl_;
  check_classifier_input(x, N, "logits");
  if (!out) throw Error("logits: out is null");
  I.upload_images(x, N);
  I.forward(N, true);
  std::vector<double> z = I.pooled_logits(N);
  for (size_t i = 0; i < z.size(); ++i) out[i] = static_cast<T>(z[i]);
}

template <typename T>
void ViTClassifier<T>::features(const T* x, int N, T* out) {
  Impl& I = *impl_;
  check_classifier_input(x, N, "features");
  if (!out) throw Error("features: out is null");
  I.upload_images(x, N);
  I.forward(N, false);
  const int L = I.cfg.num_tokens(), D = I.cfg.hidden_size;
  std::vector<T> hf(size_t(N) * L * D);
  I.be->to_host(hf.data(), I.hf, hf.size() * sizeof(T));
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < D; ++d) {
      double s = 0;
      for (int l = 0; l < L; ++l) s += static_cast<double>(hf[(size_t(n) * L + l) * D + d]);
      out[size_t(n) * D + d] = static_cast<T>(s / L);
    }
}

template class ViTClassifier<float>;
template class ViTClassifier<double>;

}  // namespace speed
