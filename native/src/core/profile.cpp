// ProfilingBackend<T>: every op forwarded to the wrapped backend; while
// recording, each call is timed between two synchronize() calls and added to
// its (op, shape) row.
#include "speed/profile.h"

#include <chrono>
#include <map>
#include <type_traits>
#include <utility>

namespace speed {

namespace {

std::string dims(std::initializer_list<long long> v, const char* sep) {
  std::string s;
  for (long long x : v) s += (s.empty() ? "" : sep) + std::to_string(x);
  return s;
}

template <typename T>
class Profiler final : public ProfilingBackend<T> {
 public:
  explicit Profiler(std::shared_ptr<Backend<T>> in) : in_(std::move(in)) {
    if (!in_) throw Error("make_profiling_backend: the wrapped backend is null");
  }

  void record(bool on) override {
    if (on) {
      rows_.clear();
      index_.clear();
    }
    on_ = on;
  }
  std::vector<OpProfile> rows() const override { return rows_; }

  std::string name() const override { return in_->name(); }
  void* alloc_bytes(size_t bytes) override { return in_->alloc_bytes(bytes); }
  void free_bytes(void* p) override { in_->free_bytes(p); }
  void synchronize() override { in_->synchronize(); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    timed("to_device", "", 0, [&] { in_->to_device(dst, src, bytes); });
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    timed("to_host", "", 0, [&] { in_->to_host(dst, src, bytes); });
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    timed("copy", "", 0, [&] { in_->copy(dst, src, bytes); });
  }
  void fill(T* x, T value, size_t n) override {
    timed("fill", "", 0, [&] { in_->fill(x, value, n); });
  }

  void linear_forward(const T* x, const T* w, const T* b, T* y, T* pre, int M, int K, int N,
                      Act act) override {
    timed(act == Act::None ? "linear_forward" : "linear_forward+gelu", dims({M, K, N}, "x"),
          2.0 * M * K * N, [&] { in_->linear_forward(x, w, b, y, pre, M, K, N, act); });
  }
  void linear_backward(const T* x, const T* w, T* dy, const T* pre, T* dx, T* dw, T* db, int M,
                       int K, int N, Act act, bool accum_dx) override {
    const double f = 2.0 * M * K * N * ((dx ? 1 : 0) + (dw ? 1 : 0));
    timed(act == Act::None ? "linear_backward" : "linear_backward+gelu", dims({M, K, N}, "x"), f,
          [&] { in_->linear_backward(x, w, dy, pre, dx, dw, db, M, K, N, act, accum_dx); });
  }

  void silu_forward(const T* x, T* y, size_t n) override {
    timed("silu_forward", "", 0, [&] { in_->silu_forward(x, y, n); });
  }
  void silu_backward(const T* x, const T* dy, T* dx, size_t n, bool accum) override {
    timed("silu_backward", "", 0, [&] { in_->silu_backward(x, dy, dx, n, accum); });
  }
  void add(const T* a, const T* b, T* y, size_t n) override {
    timed("add", "", 0, [&] { in_->add(a, b, y, n); });
  }
  void add_rows(T* x, const T* row, size_t rows, size_t n) override {
    timed("add_rows", "", 0, [&] { in_->add_rows(x, row, rows, n); });
  }
  void patchify(const T* img, T* tok, int N, int C, int H, int W, int p, PatchLayout layout) override {
    timed("patchify", "", 0, [&] { in_->patchify(img, tok, N, C, H, W, p, layout); });
  }
  void unpatchify(const T* tok, T* img, int N, int C, int H, int W, int p, PatchLayout layout) override {
    timed("unpatchify", "", 0, [&] { in_->unpatchify(tok, img, N, C, H, W, p, layout); });
  }
  void ln_modulate_forward(const T* x, const T* shift, const T* scale, int mod_stride, T* y, T* mean,
                           T* rstd, int N, int L, int D, double eps) override {
    timed("ln_modulate_forward", "", 0,
          [&] { in_->ln_modulate_forward(x, shift, scale, mod_stride, y, mean, rstd, N, L, D, eps); });
  }
  void ln_modulate_backward(const T* dy, const T* x, const T* mean, const T* rstd, const T* scale,
                            int mod_stride, T* dx, T* dshift, T* dscale, int N, int L, int D,
                            bool accum_dx) override {
    timed("ln_modulate_backward", "", 0, [&] {
      in_->ln_modulate_backward(dy, x, mean, rstd, scale, mod_stride, dx, dshift, dscale, N, L, D, accum_dx);
    });
  }
  void gated_residual_forward(T* x, const T* gate, int mod_stride, const T* h, int N, int L,
                              int D) override {
    timed("gated_residual_forward", "", 0, [&] { in_->gated_residual_forward(x, gate, mod_stride, h, N, L, D); });
  }
  void gated_residual_backward(const T* dx, const T* gate, int mod_stride, const T* h, T* dh, T* dgate,
                               int N, int L, int D) override {
    timed("gated_residual_backward", "", 0,
          [&] { in_->gated_residual_backward(dx, gate, mod_stride, h, dh, dgate, N, L, D); });
  }
  // FLOPs as bench.h counts them: 4·N·L²·D forward, twice that backward.
  void attention_forward(const T* qkv, T* out, T* lse, int N, int L, int heads, int hd) override {
    timed("attention_forward", dims({N, L, heads, hd}, ","), 4.0 * N * L * double(L) * heads * hd,
          [&] { in_->attention_forward(qkv, out, lse, N, L, heads, hd); });
  }
  void attention_backward(const T* qkv, const T* out, const T* dout, const T* lse, T* dqkv, int N, int L,
                          int heads, int hd) override {
    timed("attention_backward", dims({N, L, heads, hd}, ","), 8.0 * N * L * double(L) * heads * hd,
          [&] { in_->attention_backward(qkv, out, dout, lse, dqkv, N, L, heads, hd); });
  }
  void timestep_embedding(const int32_t* t, T* out, int N, int dim, double max_period) override {
    timed("timestep_embedding", "", 0, [&] { in_->timestep_embedding(t, out, N, dim, max_period); });
  }
  void embedding_forward(const T* table, const int32_t* idx, T* out, int N, int D) override {
    timed("embedding_forward", "", 0, [&] { in_->embedding_forward(table, idx, out, N, D); });
  }
  void embedding_backward(const T* dout, const int32_t* idx, T* dtable, int N, int D, int rows) override {
    timed("embedding_backward", "", 0, [&] { in_->embedding_backward(dout, idx, dtable, N, D, rows); });
  }
  void normal(T* x, size_t n, uint64_t seed, uint64_t offset) override {
    timed("normal", "", 0, [&] { in_->normal(x, n, seed, offset); });
  }
  void q_sample(const T* x0, const T* eps, const int32_t* t, const DiffusionTablesView<T>& tab, T* xt, int N,
                size_t per_sample) override {
    timed("q_sample", "", 0, [&] { in_->q_sample(x0, eps, t, tab, xt, N, per_sample); });
  }
  void iddpm_loss(const T* model_out, const T* x0, const T* xt, const T* eps, const int32_t* t,
                  const T* weight, const DiffusionTablesView<T>& tab, double vb_scale, bool learn_sigma,
                  T* loss, T* mse, T* vb, T* dout, int N, int C, int HW) override {
    timed("iddpm_loss", "", 0, [&] {
      in_->iddpm_loss(model_out, x0, xt, eps, t, weight, tab, vb_scale, learn_sigma, loss, mse, vb, dout, N,
                      C, HW);
    });
  }
  OptimResult optimizer_step(T* params, const T* grads, T* m, T* v, T* ema, size_t n, const OptimHyper& hp,
                             const T* losses, int N) override {
    OptimResult r;
    timed("optimizer_step", "", 0,
          [&] { r = in_->optimizer_step(params, grads, m, v, ema, n, hp, losses, N); });
    return r;
  }
  void sample_step(const T* model_out, T* x, const T* noise, int N, int C, int HW, bool learn_sigma,
                   const SampleStepCoefs& coefs) override {
    timed("sample_step", "", 0, [&] { in_->sample_step(model_out, x, noise, N, C, HW, learn_sigma, coefs); });
  }

  // ---- VAE ops --------------------------------------------------------------------
  void conv2d_forward(const T* x, const T* w, const T* b, T* y, const Conv2dShape& s,
                      bool accum) override {
    const double f = 2.0 * s.N * s.Co * double(s.Ho()) * s.Wo() * s.Ci * s.kh * s.kw;
    timed("conv2d_forward",
          dims({s.N, s.Ci, s.H, s.W}, ",") + "->" + std::to_string(s.Co) + " k" + std::to_string(s.kh) + "s" +
              std::to_string(s.stride),
          f, [&] { in_->conv2d_forward(x, w, b, y, s, accum); });
  }
  void group_norm_forward(const T* x, const T* gamma, const T* beta, T* y, int N, int C, int HW,
                          int groups, double eps, bool silu) override {
    timed(silu ? "group_norm_forward+silu" : "group_norm_forward", "", 0,
          [&] { in_->group_norm_forward(x, gamma, beta, y, N, C, HW, groups, eps, silu); });
  }
  void upsample_nearest2x(const T* x, T* y, int N, int C, int H, int W) override {
    timed("upsample_nearest2x", "", 0, [&] { in_->upsample_nearest2x(x, y, N, C, H, W); });
  }
  void transpose_batched(const T* x, T* y, int B, int R, int C) override {
    timed("transpose_batched", "", 0, [&] { in_->transpose_batched(x, y, B, R, C); });
  }
  void gaussian_sample(const T* moments, const T* eps, T* z, int N, int C, int HW) override {
    timed("gaussian_sample", "", 0, [&] { in_->gaussian_sample(moments, eps, z, N, C, HW); });
  }

  // ---- Inception-v3 ops ----------------------------------------------------------------
  void pool2d_forward(const T* x, T* y, int N, int C, int H, int W, int k, int stride, int pad,
                      PoolMode mode) override {
    timed(mode == PoolMode::Max ? "pool2d_forward max" : "pool2d_forward avg", "", 0,
          [&] { in_->pool2d_forward(x, y, N, C, H, W, k, stride, pad, mode); });
  }
  void global_avg_pool(const T* x, T* y, int N, int C, int HW) override {
    timed("global_avg_pool", "", 0, [&] { in_->global_avg_pool(x, y, N, C, HW); });
  }
  void resize_bilinear(const T* x, T* y, int N, int C, int H, int W, int Ho, int Wo) override {
    timed("resize_bilinear", "", 0, [&] { in_->resize_bilinear(x, y, N, C, H, W, Ho, Wo); });
  }
  void channel_copy(const T* x, T* y, int N, int C, int HW, int Ctot, int c_off, bool relu) override {
    timed(relu ? "channel_copy+relu" : "channel_copy", "", 0,
          [&] { in_->channel_copy(x, y, N, C, HW, Ctot, c_off, relu); });
  }

 private:
  template <typename F>
  void timed(const char* op, std::string shape, double flops, F&& f) {
    if (!on_) {
      f();
      return;
    }
    using clock = std::chrono::steady_clock;
    in_->synchronize();  // earlier work must not count against this op
    const auto t0 = clock::now();
    f();
    in_->synchronize();
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    auto key = std::make_pair(std::string(op), std::move(shape));
    auto it = index_.find(key);
    if (it == index_.end()) {
      it = index_.emplace(key, rows_.size()).first;
      OpProfile row;
      row.op = key.first;
      row.shape = key.second;
      rows_.push_back(row);
    }
    OpProfile& row = rows_[it->second];
    ++row.calls;
    row.ms += ms;
    row.flops += flops;
  }

  std::shared_ptr<Backend<T>> in_;
  bool on_ = false;
  std::vector<OpProfile> rows_;
  std::map<std::pair<std::string, std::string>, size_t> index_;
};

}  // namespace

template <typename T>
std::shared_ptr<ProfilingBackend<T>> make_profiling_backend(std::shared_ptr<Backend<T>> inner) {
  return std::make_shared<Profiler<T>>(std::move(inner));
}

template std::shared_ptr<ProfilingBackend<float>> make_profiling_backend(std::shared_ptr<Backend<float>>);
template std::shared_ptr<ProfilingBackend<double>> make_profiling_backend(std::shared_ptr<Backend<double>>);

}  // namespace speed
