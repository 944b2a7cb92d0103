// speed::DiT<T>: the DiT graph (models.py) written once against Backend<T>.
//
// Layout of the data the model owns (all in backend memory):
//   params_  flat buffer of every trainable parameter, DiT state_dict order
//   grads_, m_, v_, ema_   same layout
//   pos_    pos_embed [L, D] (fixed, not trained)
//   tables_ the 8 per-timestep diffusion tables
//   two activation arenas: `train_` saves every block's activations for
//   backward; `infer_` holds one block's worth and is reused by every block.
//   With recomputation on, `train_` saves only each block's input and adaLN
//   output and shares one block's worth of the rest: backward re-runs each
//   block's forward from its saved input just before differentiating it.
// An arena is allocated once and re-allocated only when the batch grows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>

#include "layout.h"
#include "speed/collective.h"
#include "speed/dit.h"
#include "speed/philox.h"

namespace speed {

namespace {

constexpr uint32_t kInitTag = 0x1A17u;  // InitRng counter word 3 of DiT's init

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* slot_name(Slot s) {
  switch (s) {
    case Slot::Model: return "model";
    case Slot::EMA: return "ema";
    case Slot::AdamM: return "adam_m";
    case Slot::AdamV: return "adam_v";
    case Slot::Grad: return "grad";
  }
  return "?";
}

}  // namespace

template <typename T>
struct Arena {
  Backend<T>* be = nullptr;
  int cap = 0;             // batch capacity
  bool save = false;       // keep what backward reads (training) or one shared block
  bool recompute = false;  // with save: keep only x_in and mod per block
  size_t bytes = 0;        // bytes held (or, with be == nullptr, that would be)
  std::vector<void*> owned;

  T *x_img = nullptr, *tok_in, *tfreq, *h0, *h0s, *yemb, *c, *sc;
  int32_t *t, *y;
  std::vector<BlockActs<T>> blocks;
  T* x_final;  // residual stream entering the final layer
  T *fmod, *hf, *meanf, *rstdf, *out_tok, *out;
  // training: inputs, loss outputs and gradient scratch
  T *x0, *eps, *weight, *loss, *mse, *vb;
  T *dout, *dout_tok, *dhf, *dX, *dA, *dB, *dBig, *dqkv, *dmod, *dsc, *dc, *dh0s, *dh0;
  T* noise;

  void release() {
    if (be)
      for (void* p : owned) be->free_bytes(p);
    owned.clear();
    cap = 0;
    bytes = 0;
  }
  ~Arena() { release(); }

  // Without a backend the arena only counts (activation_bytes()).
  void* raw(size_t nbytes) {
    nbytes = std::max<size_t>(nbytes, 1);
    bytes += nbytes;
    if (!be) return nullptr;
    void* p = be->alloc_bytes(nbytes);
    owned.push_back(p);
    return p;
  }
  T* A(size_t n) { return static_cast<T*>(raw(n * sizeof(T))); }
  int32_t* I(size_t n) { return static_cast<int32_t*>(raw(n * sizeof(int32_t))); }

  // Every buffer of one block (adaLN output included); inference updates the
  // stream in place (xmid = x_in).
  void alloc_block(BlockActs<T>& a, size_t B, size_t L, size_t D, size_t H, size_t heads) {
    alloc_block_acts(a, [this](size_t n) { return A(n); }, B, L, D, H, heads, true, save);
  }

  void ensure(const DiTConfig& cfg, int N) {
    if (N <= cap) return;
    release();
    const size_t B = N, L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden();
    const size_t C = cfg.in_channels, Co = cfg.out_channels(), HW = size_t(cfg.input_size) * cfg.input_size;
    const size_t P = C * cfg.patch_size * cfg.patch_size, Po = Co * cfg.patch_size * cfg.patch_size;
    const size_t BLD = B * L * D, heads = cfg.num_heads;
    x_img = A(B * C * HW);
    tok_in = A(B * L * P);
    tfreq = A(B * kFreqDim);
    h0 = A(B * D);
    h0s = A(B * D);
    yemb = A(B * D);
    c = A(B * D);
    sc = A(B * D);
    t = I(B);
    y = I(B);
    // Blocks: all of every block (training), one shared (inference), or with
    // recomputation every block's x_in and mod plus one shared rest (block 0's).
    int nb = save ? cfg.depth : 1;
    blocks.assign(nb, BlockActs<T>{});
    alloc_block(blocks[0], B, L, D, H, heads);
    for (int i = 1; i < nb; ++i) {
      if (!recompute) {
        alloc_block(blocks[i], B, L, D, H, heads);
        continue;
      }
      blocks[i] = blocks[0];
      blocks[i].x_in = A(BLD);
      blocks[i].mod = A(B * 6 * D);
    }
    x_final = save ? A(BLD) : blocks[0].x_in;
    fmod = A(B * 2 * D);
    hf = A(BLD);
    meanf = A(B * L);
    rstdf = A(B * L);
    out_tok = A(B * L * Po);
    out = A(B * Co * HW);
    noise = A(B * C * HW);
    if (save) {
      x0 = A(B * C * HW);
      eps = A(B * C * HW);
      weight = A(B);
      loss = A(B);
      mse = A(B);
      vb = A(B);
      dout = A(B * Co * HW);
      dout_tok = A(B * L * Po);
      dhf = A(BLD);
      dX = A(BLD);
      dA = A(BLD);
      dB = A(BLD);
      dBig = A(B * L * H);
      dqkv = A(3 * BLD);
      dmod = A(B * 6 * D);
      dsc = A(B * D);
      dc = A(B * D);
      dh0s = A(B * D);
      dh0 = A(B * D);
    }
    cap = N;
  }
};

template <typename T>
struct DiT<T>::Impl {
  DiTConfig cfg;
  std::shared_ptr<Backend<T>> be_ptr;
  Backend<T>* be;
  DiTLayout lay;
  T *params = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr, *ema = nullptr, *pos = nullptr;
  T* tables = nullptr;
  DiffusionTablesView<T> tab;
  bool have_tables = false;
  uint64_t noise_seed = 0, noise_offset = 0;
  int64_t step = 0;
  Arena<T> train, infer;
  std::shared_ptr<Collective> coll;  // data parallelism; null = one process
  bool even_alone = false;            // the data-parallel path with a world of one (tests)

  bool distributed() const { return coll && (coll->size() > 1 || even_alone); }

  // A backend buffer through the collective: directly when the collective
  // takes backend memory (NCCL) or the backend's memory is the host's (CPU),
  // else staged through a host copy (CUDA backend with MPI only).
  template <typename F>
  void on_host_or_device(T* buf, size_t n, F&& op) {
    if (coll->device_buffers() || be->name() == "cpu") {
      // the collective runs on its own stream: the backend's work on buf first
      be->synchronize();
      op(buf);
      return;
    }
    std::vector<T> host(n);
    be->to_host(host.data(), buf, n * sizeof(T));
    op(host.data());
    be->to_device(buf, host.data(), n * sizeof(T));
  }

  // Bucketed gradient averaging during the backward (data parallelism): the
  // backward reports each range of the flat buffer whose gradient is final
  // (final layer, then blocks depth-1 .. 0, then the embedders: descending,
  // contiguous); ranges are merged into buckets of >= `bucket` elements and
  // each bucket's all-reduce starts at once (MPI_Iallreduce, NCCL on its
  // stream) while the backward goes on. Every rank issues the same buckets.
  struct GradReducer {
    Impl* I = nullptr;
    size_t lo = 0, hi = 0, bucket = 0;
    bool poison = false;  // this rank's loss is not finite: send NaN
    void ready(size_t a, size_t b) {
      if (hi != lo && b != lo)
        throw Error("gradient buckets: range [" + std::to_string(a) + ", " + std::to_string(b) +
                    ") does not end where the pending one starts (" + std::to_string(lo) + ")");
      if (hi == lo) hi = b;
      lo = a;
      if (hi - lo >= bucket) flush();
    }
    void flush() {
      if (hi == lo) return;
      const size_t n = hi - lo;
      T* p = I->grads + lo;
      if (poison) I->be->fill(p, std::numeric_limits<T>::quiet_NaN(), n);
      I->be->synchronize();  // the backend's writes of this range first
      I->coll->allreduce_mean_start(p, n);
      lo = hi = 0;
    }
  };
  GradReducer* reducer = nullptr;
  void grads_ready(size_t a, size_t b) {
    if (reducer) reducer->ready(a, b);
  }
  size_t block_start(int i) const {
    const BlockOffsets& o = lay.blocks[i];
    return std::min({o.qkv_w, o.qkv_b, o.proj_w, o.proj_b, o.fc1_w, o.fc1_b, o.fc2_w, o.fc2_b, o.ada_w, o.ada_b});
  }
  // Buckets need the collective to take the gradient where it lives (CPU
  // memory, or NCCL on the GPU); a CUDA model with MPI stages it whole instead.
  bool bucketed() const { return distributed() && (coll->device_buffers() || be->name() == "cpu"); }
  static size_t bucket_elements() {
    // PyTorch DDP's default bucket: 25 MiB; SPEED_DIST_BUCKET_MB overrides
    // (it must be the same on every rank, as a launcher's environment is)
    double mb = 25;
    if (const char* v = std::getenv("SPEED_DIST_BUCKET_MB")) {
      char* end = nullptr;
      double x = std::strtod(v, &end);
      if (end && *end == 0 && x > 0) mb = x;
    }
    return std::max<size_t>(1, static_cast<size_t>(mb * 1048576.0 / sizeof(T)));
  }

  // Between backward and the optimizer: average the gradient over the ranks.
  // A non-finite loss on this rank poisons the gradient, so the reduced
  // gradient is non-finite on every rank and every rank skips the step.
  void reduce_gradients(Arena<T>& a, int N) {
    std::vector<T> l(N);
    be->to_host(l.data(), a.loss, N * sizeof(T));
    bool bad = false;
    for (T x : l) bad = bad || !std::isfinite(static_cast<double>(x));
    const size_t n = lay.num_trainable;
    if (bad) be->fill(grads, std::numeric_limits<T>::quiet_NaN(), n);
    on_host_or_device(grads, n, [&](T* p) { coll->allreduce_mean(p, n); });
  }

  Impl(const DiTConfig& c, std::shared_ptr<Backend<T>> b) : cfg(c), be_ptr(std::move(b)) {
    if (!be_ptr) throw Error("DiT: backend is null");
    cfg.validate();
    be = be_ptr.get();
    lay = make_layout(cfg);
    train.be = be;
    train.save = true;
    infer.be = be;
    infer.save = false;
    const size_t n = lay.num_trainable;
    try {
      params = alloc(n);
      grads = alloc(n);
      m = alloc(n);
      v = alloc(n);
      ema = alloc(n);
      pos = alloc(lay.pos_numel);
    } catch (...) {
      free_all();
      throw;
    }
    for (T* p : {params, grads, m, v, ema}) be->fill(p, T(0), n);
    upload_pos_embed(*be, pos, cfg.hidden_size, cfg.grid());
  }
  ~Impl() { free_all(); }

  T* alloc(size_t n) { return static_cast<T*>(be->alloc_bytes(std::max<size_t>(n, 1) * sizeof(T))); }
  void free_all() {
    for (T* p : {params, grads, m, v, ema, pos, tables}) be_ptr->free_bytes(p);
    params = grads = m = v = ema = pos = tables = nullptr;
  }

  const ParamInfo& find(const std::string& name) const {
    for (const ParamInfo& p : lay.params)
      if (p.name == name) return p;
    std::string best;
    size_t bd = SIZE_MAX;
    for (const ParamInfo& p : lay.params) {
      size_t d = edit_distance(name, p.name);
      if (d < bd) { bd = d; best = p.name; }
    }
    std::ostringstream os;
    os << "unknown DiT parameter '" << name << "'";
    if (bd <= std::max<size_t>(3, name.size() / 4)) os << " (did you mean '" << best << "'?)";
    os << "; this model has " << lay.params.size() << " parameters: " << lay.params.front().name
       << ", " << lay.params[1].name << ", ..., " << lay.params.back().name;
    throw Error(os.str());
  }

  T* slot_ptr(const ParamInfo& p, Slot s, bool writing) const {
    if (!p.trainable) {
      if (s == Slot::Model || s == Slot::EMA) return pos;  // fixed: one copy serves both
      throw Error(std::string("parameter '") + p.name + "' is not trainable: it has no " + slot_name(s) +
                  " slot (only model and ema)");
    }
    switch (s) {
      case Slot::Model: return params + p.offset;
      case Slot::EMA: return ema + p.offset;
      case Slot::AdamM: return m + p.offset;
      case Slot::AdamV: return v + p.offset;
      case Slot::Grad:
        if (writing) throw Error("parameter '" + p.name + "': the grad slot is read-only");
        return grads + p.offset;
    }
    throw Error("invalid Slot value");
  }

  // ---- argument checks (host side, before anything is uploaded) --------------
  void check_batch(int N, const char* what) const {
    if (N < 1) throw Error(std::string(what) + ": batch size N must be >= 1, got " + std::to_string(N));
  }
  void check_t(const int32_t* t, int N, const char* what, bool need_tables) const {
    if (!t) throw Error(std::string(what) + ": t is null");
    int hi = need_tables ? tab.steps : INT32_MAX;
    for (int i = 0; i < N; ++i)
      if (t[i] < 0 || t[i] >= hi)
        throw Error(std::string(what) + ": t[" + std::to_string(i) + "] = " + std::to_string(t[i]) +
                    " is outside [0, " + std::to_string(hi) + ")");
  }
  void check_y(const int32_t* y, int N, const char* what) const {
    if (cfg.num_classes == 0) return;
    if (!y) throw Error(std::string(what) + ": y (labels) is null but the model is class-conditional");
    for (int i = 0; i < N; ++i)
      if (y[i] < 0 || y[i] >= cfg.class_rows())
        throw Error(std::string(what) + ": y[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
                    " is outside [0, " + std::to_string(cfg.class_rows()) + ")" +
                    (cfg.class_rows() > cfg.num_classes ? " (num_classes is the null label)"
                                                        : " (no null label: class_dropout_prob is 0)"));
  }
  void need_tables(const char* what) const {
    if (!have_tables) throw Error(std::string(what) + ": call set_tables() first (no diffusion tables)");
  }

  void upload_labels(Arena<T>& a, const int32_t* t, const int32_t* y, int N) {
    be->to_device(a.t, t, N * sizeof(int32_t));
    if (cfg.num_classes > 0) be->to_device(a.y, y, N * sizeof(int32_t));
  }

  // One block after its adaLN Linear (s.mod is set): s.x_in -> the stream
  // `next`. With `keep` the block input survives (s.xmid is a copy) and
  // `next` is another buffer; else the stream is updated in place. With
  // next == nullptr only the activations backward reads are (re)computed.
  void block_forward(BlockActs<T>& s, const BlockOffsets& o, const T* W, int N, bool keep, T* next) {
    Backend<T>& b = *be;
    const int L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden(), NL = N * L;
    const size_t stream_bytes = size_t(NL) * D * sizeof(T);
    const T* mod = s.mod;
    // x += gate1 * attn(modulate(LN(x), shift1, scale1))
    b.ln_modulate_forward(s.x_in, mod + 0 * D, mod + 1 * D, 6 * D, s.h1, s.mean1, s.rstd1, N, L, D, kLnEps);
    b.linear_forward(s.h1, W + o.qkv_w, W + o.qkv_b, s.qkv, nullptr, NL, D, 3 * D, Act::None);
    b.attention_forward(s.qkv, s.att, s.lse, N, L, cfg.num_heads, cfg.head_dim());
    b.linear_forward(s.att, W + o.proj_w, W + o.proj_b, s.po, nullptr, NL, D, D, Act::None);
    if (keep) b.copy(s.xmid, s.x_in, stream_bytes);
    b.gated_residual_forward(s.xmid, mod + 2 * D, 6 * D, s.po, N, L, D);
    // x += gate2 * mlp(modulate(LN(x), shift2, scale2))
    b.ln_modulate_forward(s.xmid, mod + 3 * D, mod + 4 * D, 6 * D, s.h2, s.mean2, s.rstd2, N, L, D, kLnEps);
    b.linear_forward(s.h2, W + o.fc1_w, W + o.fc1_b, s.f1, s.f1pre, NL, D, H, Act::GeluTanh);
    b.linear_forward(s.f1, W + o.fc2_w, W + o.fc2_b, s.f2, nullptr, NL, H, D, Act::None);
    if (!next) return;
    if (keep) b.copy(next, s.xmid, stream_bytes);
    b.gated_residual_forward(next, mod + 5 * D, 6 * D, s.f2, N, L, D);
  }

  // ---- forward: a.x_img, a.t, a.y -> a.out -----------------------------------
  void forward(Arena<T>& a, int N, const T* W) {
    Backend<T>& b = *be;
    const int L = cfg.num_tokens(), D = cfg.hidden_size, p = cfg.patch_size;
    const int C = cfg.in_channels, P = C * p * p, Po = cfg.out_channels() * p * p, S = cfg.input_size;
    const int NL = N * L;
    // x_embedder (Conv2d k = s = p as a Linear over CPP patches) + pos_embed
    T* X = a.blocks[0].x_in;
    b.patchify(a.x_img, a.tok_in, N, C, S, S, p, PatchLayout::CPP);
    b.linear_forward(a.tok_in, W + lay.x_w, W + lay.x_b, X, nullptr, NL, P, D, Act::None);
    b.add_rows(X, pos, N, size_t(L) * D);
    // c = t_embedder(t) + y_embedder(y); sc = SiLU(c) feeds every adaLN Linear
    b.timestep_embedding(a.t, a.tfreq, N, kFreqDim, kMaxPeriod);
    b.linear_forward(a.tfreq, W + lay.t0_w, W + lay.t0_b, a.h0, nullptr, N, kFreqDim, D, Act::None);
    b.silu_forward(a.h0, a.h0s, size_t(N) * D);
    b.linear_forward(a.h0s, W + lay.t2_w, W + lay.t2_b, a.c, nullptr, N, D, D, Act::None);
    if (lay.has_y) {
      b.embedding_forward(W + lay.y_table, a.y, a.yemb, N, D);
      b.add(a.c, a.yemb, a.c, size_t(N) * D);
    }
    b.silu_forward(a.c, a.sc, size_t(N) * D);

    for (int i = 0; i < cfg.depth; ++i) {
      BlockActs<T>& s = a.blocks[a.save ? i : 0];
      // s.x_in: filled by the previous block (saving), else the shared stream
      b.linear_forward(a.sc, W + lay.blocks[i].ada_w, W + lay.blocks[i].ada_b, s.mod, nullptr, N, D, 6 * D,
                       Act::None);
      T* next = a.save ? (i + 1 < cfg.depth ? a.blocks[i + 1].x_in : a.x_final) : s.xmid;
      block_forward(s, lay.blocks[i], W, N, a.save, next);
    }
    // final layer: modulate(LN(x), shift, scale) -> Linear -> unpatchify (PPC)
    b.linear_forward(a.sc, W + lay.f_ada_w, W + lay.f_ada_b, a.fmod, nullptr, N, D, 2 * D, Act::None);
    b.ln_modulate_forward(a.x_final, a.fmod, a.fmod + D, 2 * D, a.hf, a.meanf, a.rstdf, N, L, D, kLnEps);
    b.linear_forward(a.hf, W + lay.f_lin_w, W + lay.f_lin_b, a.out_tok, nullptr, NL, D, Po, Act::None);
    b.unpatchify(a.out_tok, a.out, N, cfg.out_channels(), S, S, p, PatchLayout::PPC);
  }

  // ---- backward: a.dout = d(loss)/d(out) -> grads (every slot written once) ---
  void backward(Arena<T>& a, int N) {
    Backend<T>& b = *be;
    const T* W = params;
    T* G = grads;
    const int L = cfg.num_tokens(), D = cfg.hidden_size, H = cfg.mlp_hidden(), p = cfg.patch_size;
    const int C = cfg.in_channels, P = C * p * p, Po = cfg.out_channels() * p * p, S = cfg.input_size;
    const int NL = N * L, heads = cfg.num_heads;
    // patchify is the adjoint of unpatchify (both are the same permutation)
    b.patchify(a.dout, a.dout_tok, N, cfg.out_channels(), S, S, p, PatchLayout::PPC);
    b.linear_backward(a.hf, W + lay.f_lin_w, a.dout_tok, nullptr, a.dhf, G + lay.f_lin_w, G + lay.f_lin_b,
                      NL, D, Po, Act::None, false);
    b.ln_modulate_backward(a.dhf, a.x_final, a.meanf, a.rstdf, a.fmod + D, 2 * D, a.dX, a.dmod, a.dmod + D,
                           N, L, D, false);
    b.linear_backward(a.sc, W + lay.f_ada_w, a.dmod, nullptr, a.dsc, G + lay.f_ada_w, G + lay.f_ada_b, N, D,
                      2 * D, Act::None, false);
    grads_ready(lay.f_lin_w, lay.num_trainable);  // the final layer's gradient is final
    // dX is the residual stream's gradient; each branch adds into it
    for (int i = cfg.depth - 1; i >= 0; --i) {
      const BlockOffsets& o = lay.blocks[i];
      BlockActs<T>& s = a.blocks[i];
      // the shared buffers still hold the last block's forward
      if (a.recompute && i + 1 < cfg.depth) block_forward(s, o, W, N, true, nullptr);
      const T* mod = s.mod;
      T* dmod = a.dmod;
      // MLP branch
      b.gated_residual_backward(a.dX, mod + 5 * D, 6 * D, s.f2, a.dA, dmod + 5 * D, N, L, D);
      b.linear_backward(s.f1, W + o.fc2_w, a.dA, nullptr, a.dBig, G + o.fc2_w, G + o.fc2_b, NL, H, D,
                        Act::None, false);
      b.linear_backward(s.h2, W + o.fc1_w, a.dBig, s.f1pre, a.dB, G + o.fc1_w, G + o.fc1_b, NL, D, H,
                        Act::GeluTanh, false);
      b.ln_modulate_backward(a.dB, s.xmid, s.mean2, s.rstd2, mod + 4 * D, 6 * D, a.dX, dmod + 3 * D,
                             dmod + 4 * D, N, L, D, true);
      // attention branch
      b.gated_residual_backward(a.dX, mod + 2 * D, 6 * D, s.po, a.dA, dmod + 2 * D, N, L, D);
      b.linear_backward(s.att, W + o.proj_w, a.dA, nullptr, a.dB, G + o.proj_w, G + o.proj_b, NL, D, D,
                        Act::None, false);
      b.attention_backward(s.qkv, s.att, a.dB, s.lse, a.dqkv, N, L, heads, cfg.head_dim());
      b.linear_backward(s.h1, W + o.qkv_w, a.dqkv, nullptr, a.dA, G + o.qkv_w, G + o.qkv_b, NL, D, 3 * D,
                        Act::None, false);
      b.ln_modulate_backward(a.dA, s.x_in, s.mean1, s.rstd1, mod + 1 * D, 6 * D, a.dX, dmod + 0 * D,
                             dmod + 1 * D, N, L, D, true);
      // adaLN Linear: d(sc) accumulates over blocks and the final layer
      b.linear_backward(a.sc, W + o.ada_w, dmod, nullptr, a.dsc, G + o.ada_w, G + o.ada_b, N, D, 6 * D,
                        Act::None, true);
      grads_ready(block_start(i), i + 1 < cfg.depth ? block_start(i + 1) : lay.f_lin_w);
    }
    // x_embedder (pos_embed is fixed: no gradient)
    b.linear_backward(a.tok_in, W + lay.x_w, a.dX, nullptr, nullptr, G + lay.x_w, G + lay.x_b, NL, P, D,
                      Act::None, false);
    // conditioning: sc = SiLU(c), c = t_emb + y_emb
    b.silu_backward(a.c, a.dsc, a.dc, size_t(N) * D, false);
    if (lay.has_y) b.embedding_backward(a.dc, a.y, G + lay.y_table, N, D, cfg.class_rows());
    b.linear_backward(a.h0s, W + lay.t2_w, a.dc, nullptr, a.dh0s, G + lay.t2_w, G + lay.t2_b, N, D, D,
                      Act::None, false);
    b.silu_backward(a.h0, a.dh0s, a.dh0, size_t(N) * D, false);
    b.linear_backward(a.tfreq, W + lay.t0_w, a.dh0, nullptr, nullptr, G + lay.t0_w, G + lay.t0_b, N,
                      kFreqDim, D, Act::None, false);
    grads_ready(0, block_start(0));  // embedders
  }

  // Upload inputs, q_sample with the given (already uploaded) a.eps, forward,
  // loss and backward. a.loss/mse/vb hold the per-sample values afterwards.
  void loss_and_grad_device(Arena<T>& a, int N, double vb_scale) {
    Backend<T>& b = *be;
    const int C = cfg.in_channels, HW = cfg.input_size * cfg.input_size;
    b.q_sample(a.x0, a.eps, a.t, tab, a.x_img, N, size_t(C) * HW);
    forward(a, N, params);
    b.iddpm_loss(a.out, a.x0, a.x_img, a.eps, a.t, a.weight, tab, vb_scale, cfg.learn_sigma, a.loss, a.mse,
                 a.vb, a.dout, N, C, HW);
    if (reducer) {
      // the poison decision precedes the first bucket
      std::vector<T> l(N);
      be->to_host(l.data(), a.loss, N * sizeof(T));
      for (T x : l) reducer->poison = reducer->poison || !std::isfinite(static_cast<double>(x));
    }
    backward(a, N);
  }

  void upload_train_inputs(Arena<T>& a, const T* x0, const int32_t* t, const int32_t* y, const T* weight,
                           int N, const char* what) {
    check_batch(N, what);
    need_tables(what);
    if (!x0) throw Error(std::string(what) + ": x0 is null");
    if (!weight) throw Error(std::string(what) + ": weight is null");
    check_t(t, N, what, true);
    check_y(y, N, what);
    a.ensure(cfg, N);
    const size_t n = size_t(N) * cfg.in_channels * cfg.input_size * cfg.input_size;
    be->to_device(a.x0, x0, n * sizeof(T));
    be->to_device(a.weight, weight, N * sizeof(T));
    upload_labels(a, t, y, N);
  }
};

template <typename T>
DiT<T>::DiT(const DiTConfig& cfg, std::shared_ptr<Backend<T>> backend)
    : impl_(new Impl(cfg, std::move(backend))) {}
template <typename T>
DiT<T>::~DiT() = default;

template <typename T>
const DiTConfig& DiT<T>::config() const { return impl_->cfg; }
template <typename T>
Backend<T>& DiT<T>::backend() { return *impl_->be; }
template <typename T>
const std::vector<ParamInfo>& DiT<T>::params() const { return impl_->lay.params; }
template <typename T>
size_t DiT<T>::num_trainable() const { return impl_->lay.num_trainable; }

template <typename T>
void DiT<T>::init(uint64_t seed) {
  Impl& I = *impl_;
  const DiTConfig& c = I.cfg;
  std::vector<T> host(I.lay.num_trainable, T(0));
  auto ends_with = [](const std::string& s, const char* suf) {
    size_t n = std::strlen(suf);
    return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
  };
  uint32_t index = 0;
  for (const ParamInfo& p : I.lay.params) {
    ++index;
    if (!p.trainable) continue;
    const std::string& nm = p.name;
    T* dst = host.data() + p.offset;
    // initialize_weights(): zero biases, adaLN-Zero and the final Linear
    if (ends_with(nm, ".bias") || nm.find("adaLN_modulation") != std::string::npos ||
        nm.rfind("final_layer.linear", 0) == 0)
      continue;
    if (nm.rfind("t_embedder.mlp.", 0) == 0 || nm.rfind("y_embedder.", 0) == 0) {
      InitRng r(seed, index, kInitTag, true);
      for (size_t k = 0; k < p.numel; ++k) dst[k] = static_cast<T>(0.02 * r.next());
      continue;
    }
    xavier_uniform(dst, p, seed, index, kInitTag);
  }
  const size_t bytes = host.size() * sizeof(T);
  I.be->to_device(I.params, host.data(), bytes);
  I.be->to_device(I.ema, host.data(), bytes);
  I.be->fill(I.m, T(0), host.size());
  I.be->fill(I.v, T(0), host.size());
  I.be->fill(I.grads, T(0), host.size());
  upload_pos_embed(*I.be, I.pos, c.hidden_size, c.grid());
  I.step = 0;
}

template <typename T>
void DiT<T>::set_recompute(bool on) {
  Arena<T>& a = impl_->train;
  if (a.recompute == on) return;
  a.release();  // the next training call allocates the other layout
  a.recompute = on;
}
template <typename T>
bool DiT<T>::recompute() const { return impl_->train.recompute; }

template <typename T>
size_t DiT<T>::activation_bytes(int N, bool training) const {
  impl_->check_batch(N, "activation_bytes");
  Arena<T> count;  // no backend: counts instead of allocating
  count.save = training;
  count.recompute = training && impl_->train.recompute;
  count.ensure(impl_->cfg, N);
  return count.bytes;
}

template <typename T>
void DiT<T>::read_param(const std::string& name, Slot slot, T* host) const {
  read_param_of(*impl_, name, slot, host);
}

template <typename T>
void DiT<T>::write_param(const std::string& name, Slot slot, const T* host) {
  write_param_of(*impl_, name, slot, host);
}

template <typename T>
void DiT<T>::set_tables(const DiffusionTables& t) {
  t.validate();
  Impl& I = *impl_;
  const size_t n = t.sqrt_abar.size();
  if (n > static_cast<size_t>(INT32_MAX / 8)) throw Error("DiffusionTables: too many time steps");
  std::vector<T> host(8 * n);
  const std::vector<double>* cols[] = {&t.sqrt_abar, &t.sqrt_1m_abar, &t.sqrt_recip_abar,
                                       &t.sqrt_recipm1_abar, &t.coef1, &t.coef2, &t.log_beta,
                                       &t.post_log_var};
  for (int k = 0; k < 8; ++k)
    for (size_t i = 0; i < n; ++i) host[k * n + i] = static_cast<T>((*cols[k])[i]);
  if (I.tables) I.be->free_bytes(I.tables);
  I.tables = nullptr;
  I.have_tables = false;
  I.tables = I.alloc(8 * n);
  I.be->to_device(I.tables, host.data(), host.size() * sizeof(T));
  DiffusionTablesView<T>& v = I.tab;
  v.steps = static_cast<int>(n);
  v.sqrt_abar = I.tables + 0 * n;
  v.sqrt_1m_abar = I.tables + 1 * n;
  v.sqrt_recip_abar = I.tables + 2 * n;
  v.sqrt_recipm1_abar = I.tables + 3 * n;
  v.coef1 = I.tables + 4 * n;
  v.coef2 = I.tables + 5 * n;
  v.log_beta = I.tables + 6 * n;
  v.post_log_var = I.tables + 7 * n;
  I.have_tables = true;
}

template <typename T>
bool DiT<T>::has_tables() const { return impl_->have_tables; }
template <typename T>
uint64_t DiT<T>::noise_seed() const { return impl_->noise_seed; }
template <typename T>
uint64_t DiT<T>::noise_offset() const { return impl_->noise_offset; }
template <typename T>
void DiT<T>::set_noise_state(uint64_t seed, uint64_t offset) {
  impl_->noise_seed = seed;
  impl_->noise_offset = offset;
}
template <typename T>
int64_t DiT<T>::step() const { return impl_->step; }
template <typename T>
void DiT<T>::set_step(int64_t step) {
  if (step < 0) throw Error("set_step: step must be >= 0, got " + std::to_string(step));
  impl_->step = step;
}

template <typename T>
void DiT<T>::set_collective(std::shared_ptr<Collective> c, bool even_alone) {
  impl_->coll = std::move(c);
  impl_->even_alone = even_alone;
}

template <typename T>
void DiT<T>::broadcast_state(int root) {
  Impl& I = *impl_;
  if (!I.distributed()) return;
  if (root < 0 || root >= I.coll->size())
    throw Error("broadcast_state: root " + std::to_string(root) + " is not a rank of a world of " +
                std::to_string(I.coll->size()));
  const size_t n = I.lay.num_trainable;
  for (T* buf : {I.params, I.ema, I.m, I.v})
    I.on_host_or_device(buf, n, [&](T* p) { I.coll->broadcast(p, n * sizeof(T), root); });
  int64_t head[3] = {I.step, static_cast<int64_t>(I.noise_seed), static_cast<int64_t>(I.noise_offset)};
  if (I.coll->device_buffers()) {
    // NCCL broadcasts device memory: move the three scalars through the backend
    void* d = I.be->alloc_bytes(sizeof(head));
    try {
      I.be->to_device(d, head, sizeof(head));
      I.coll->broadcast(d, sizeof(head), root);
      I.be->to_host(head, d, sizeof(head));
    } catch (...) {
      I.be->free_bytes(d);
      throw;
    }
    I.be->free_bytes(d);
  } else {
    I.coll->broadcast(head, sizeof(head), root);
  }
  I.step = head[0];
  I.noise_seed = static_cast<uint64_t>(head[1]);
  I.noise_offset = static_cast<uint64_t>(head[2]);
}

template <typename T>
TrainResult DiT<T>::train_step(const T* x0, const int32_t* t, const int32_t* y, const T* weight, int N,
                               const TrainHyper& hp) {
  Impl& I = *impl_;
  Arena<T>& a = I.train;
  I.upload_train_inputs(a, x0, t, y, weight, N, "train_step");
  const int G = hp.global_batch > 0 ? hp.global_batch : N;
  if (hp.shard_offset < 0 || hp.global_batch < 0 || int64_t(hp.shard_offset) + N > G)
    throw Error("train_step: samples [" + std::to_string(hp.shard_offset) + ", " +
                std::to_string(int64_t(hp.shard_offset) + N) + ") are not inside a global batch of " +
                std::to_string(G));
  if (I.distributed() && int64_t(G) != int64_t(N) * I.coll->size())
    throw Error("train_step: global batch " + std::to_string(G) + " is not " + std::to_string(I.coll->size()) +
                " ranks x " + std::to_string(N) + " samples (every rank takes an equal slice)");
  // Noise per global sample (see TrainHyper): when C*H*W is a multiple of 4
  // the per-sample blocks are contiguous and one call draws them all, exactly
  // the stream a single draw of N*C*H*W normals gives.
  const size_t per = size_t(I.cfg.in_channels) * I.cfg.input_size * I.cfg.input_size;
  const uint64_t bps = philox_blocks(per);
  const uint64_t base = I.noise_offset + uint64_t(hp.shard_offset) * bps;
  if (per % 4 == 0) {
    I.be->normal(a.eps, size_t(N) * per, I.noise_seed, base);
  } else {
    for (int i = 0; i < N; ++i) I.be->normal(a.eps + size_t(i) * per, per, I.noise_seed, base + uint64_t(i) * bps);
  }
  I.noise_offset += uint64_t(G) * bps;
  if (I.bucketed()) {
    typename Impl::GradReducer r;
    r.I = &I;
    r.bucket = Impl::bucket_elements();
    I.reducer = &r;
    try {
      I.loss_and_grad_device(a, N, hp.vb_scale);
      r.flush();
      I.reducer = nullptr;
    } catch (...) {
      I.reducer = nullptr;
      throw;
    }
    I.coll->wait_all();
  } else {
    I.loss_and_grad_device(a, N, hp.vb_scale);
    if (I.distributed()) I.reduce_gradients(a, N);
  }
  OptimHyper oh = hp.optim;
  oh.step = I.step + 1;
  OptimResult r = I.be->optimizer_step(I.params, I.grads, I.m, I.v, oh.ema_decay < 0 ? nullptr : I.ema,
                                       I.lay.num_trainable, oh, a.loss, N);
  if (!r.skipped) ++I.step;
  TrainResult out;
  std::vector<T> tmp(N);
  auto down = [&](const T* src, std::vector<float>& dst) {
    I.be->to_host(tmp.data(), src, N * sizeof(T));
    dst.assign(tmp.begin(), tmp.end());
  };
  down(a.loss, out.loss);
  down(a.mse, out.mse);
  down(a.vb, out.vb);
  if (I.distributed()) {
    // every rank's per-sample values in rank order: [G] on every rank
    const int W = I.coll->size();
    for (std::vector<float>* v : {&out.loss, &out.mse, &out.vb}) {
      std::vector<float> all(size_t(N) * W);
      I.coll->allgather(v->data(), size_t(N) * sizeof(float), all.data());
      v->swap(all);
    }
  }
  out.grad_norm = r.grad_norm;
  out.skipped = r.skipped;
  out.step = I.step;
  return out;
}

template <typename T>
double DiT<T>::loss_and_grad(const T* x0, const T* eps, const int32_t* t, const int32_t* y, const T* weight,
                             int N, double vb_scale, std::vector<T>* loss, std::vector<T>* mse,
                             std::vector<T>* vb) {
  Impl& I = *impl_;
  Arena<T>& a = I.train;
  I.upload_train_inputs(a, x0, t, y, weight, N, "loss_and_grad");
  if (!eps) throw Error("loss_and_grad: eps is null");
  const size_t n = size_t(N) * I.cfg.in_channels * I.cfg.input_size * I.cfg.input_size;
  I.be->to_device(a.eps, eps, n * sizeof(T));
  I.loss_and_grad_device(a, N, vb_scale);
  std::vector<T> l(N);
  I.be->to_host(l.data(), a.loss, N * sizeof(T));
  if (mse) { mse->resize(N); I.be->to_host(mse->data(), a.mse, N * sizeof(T)); }
  if (vb) { vb->resize(N); I.be->to_host(vb->data(), a.vb, N * sizeof(T)); }
  double mean = 0;
  for (T x : l) mean += static_cast<double>(x);
  if (loss) *loss = l;
  return mean / N;
}

template <typename T>
void DiT<T>::forward(const T* x, const int32_t* t, const int32_t* y, int N, T* out, bool use_ema) {
  Impl& I = *impl_;
  I.check_batch(N, "forward");
  if (!x) throw Error("forward: x is null");
  if (!out) throw Error("forward: out is null");
  I.check_t(t, N, "forward", false);
  I.check_y(y, N, "forward");
  Arena<T>& a = I.infer;
  a.ensure(I.cfg, N);
  const size_t HW = size_t(I.cfg.input_size) * I.cfg.input_size;
  I.be->to_device(a.x_img, x, N * I.cfg.in_channels * HW * sizeof(T));
  I.upload_labels(a, t, y, N);
  I.forward(a, N, use_ema ? I.ema : I.params);
  I.be->to_host(out, a.out, N * I.cfg.out_channels() * HW * sizeof(T));
}

template <typename T>
void DiT<T>::sample_step(T* x, int t, const int32_t* y, int N, const SampleStepCoefs& coefs, bool use_ema) {
  Impl& I = *impl_;
  const DiTConfig& c = I.cfg;
  I.check_batch(N, "sample_step");
  if (!x) throw Error("sample_step: x is null");
  if (t < 0) throw Error("sample_step: t must be >= 0, got " + std::to_string(t));
  I.check_y(y, N, "sample_step");
  if (coefs.cfg && (c.num_classes == 0 || c.class_rows() == c.num_classes))
    throw Error("sample_step: classifier-free guidance needs the null label (num_classes > 0 and "
                "class_dropout_prob > 0)");
  if (coefs.guidance_channels < 0)
    throw Error("sample_step: guidance_channels must be >= 0 (0: every channel), got " +
                std::to_string(coefs.guidance_channels));
  const int NB = coefs.cfg ? 2 * N : N;
  const size_t per = size_t(c.in_channels) * c.input_size * c.input_size;
  Arena<T>& a = I.infer;
  a.ensure(c, NB);
  // model input: [x; x] with labels [y; null] under guidance
  I.be->to_device(a.x_img, x, N * per * sizeof(T));
  if (coefs.cfg) I.be->copy(a.x_img + N * per, a.x_img, N * per * sizeof(T));
  std::vector<int32_t> tt(NB, t), yy(NB, 0);
  if (c.num_classes > 0)
    for (int i = 0; i < NB; ++i) yy[i] = i < N ? y[i] : c.num_classes;
  I.upload_labels(a, tt.data(), yy.data(), NB);
  I.forward(a, NB, use_ema ? I.ema : I.params);
  // a.x_img's first N rows are x itself: step in place there
  if (coefs.add_noise) {
    I.be->normal(a.noise, N * per, I.noise_seed, I.noise_offset);
    I.noise_offset += philox_blocks(N * per);
  }
  I.be->sample_step(a.out, a.x_img, a.noise, N, c.in_channels,
                    c.input_size * c.input_size, c.learn_sigma, coefs);
  I.be->to_host(x, a.x_img, N * per * sizeof(T));
}

template class DiT<float>;
template class DiT<double>;

}  // namespace speed
