// The backend interface: every op the DiT graph (native/src/core) needs, each
// with its backward. Backends (native/src/cpu, native/src/cuda) implement ops,
// never models. All tensors are row-major, contiguous unless a stride is named,
// and live in the backend's memory (host memory for the CPU, device memory for
// CUDA). Integer index tensors (time steps, labels) are int32 in backend memory.
//
// Conventions
//   - "(=)" means the op overwrites its output, "(+=)" that it accumulates.
//   - Modulation vectors (shift/scale/gate) are rows of a [N, k*D] tensor produced
//     by one adaLN Linear; `mod_stride` is that row length (k*D) in elements and
//     the pointer points at the first element of the chunk in row 0.
//   - Sizes are int (each dimension < 2^31); element counts are size_t.
//   - No op allocates in a hot path unless it says so; scratch is passed in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace speed {

// Every error inside the core or a backend is a speed::Error with a message
// that says what was expected; the N-API layer turns it into a JS Error.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Activation fused after a Linear.
enum class Act : int { None = 0, GeluTanh = 1 };

// Order of the values inside one token's vector.
//   CPP: [C][p][p]  (a Conv2d weight [D, C, p, p] viewed as [D, C*p*p]: patchify)
//   PPC: [p][p][C]  (DiT's unpatchify reads each token's output this way)
enum class PatchLayout : int { CPP = 0, PPC = 1 };

// Per-timestep tables (length `steps` each), in backend memory, element type T.
// Filled by the core from the float64 tables TypeScript computes
// (the IDDPM schedule and posterior coefficients).
template <typename T>
struct DiffusionTablesView {
  int steps = 0;
  const T* sqrt_abar = nullptr;          // sqrt(abar_t)
  const T* sqrt_1m_abar = nullptr;       // sqrt(1 - abar_t)
  const T* sqrt_recip_abar = nullptr;    // sqrt(1 / abar_t)
  const T* sqrt_recipm1_abar = nullptr;  // sqrt(1 / abar_t - 1)
  const T* coef1 = nullptr;              // posterior mean coef on x0
  const T* coef2 = nullptr;              // posterior mean coef on x_t
  const T* log_beta = nullptr;           // log(beta_t)
  const T* post_log_var = nullptr;       // posterior_log_variance_clipped_t
};

// AdamW + clipping + EMA hyper-parameters for one optimizer step.
struct OptimHyper {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;   // decoupled: p -= lr * wd * p
  double max_grad_norm = 0.0;  // <= 0: no clipping
  double ema_decay = 0.9999;   // < 0: no EMA update
  int64_t step = 1;            // 1-based Adam step for bias correction
};

struct OptimResult {
  double grad_norm = 0.0;  // global L2 norm of the gradient before clipping
  bool skipped = false;    // true when a loss or gradient was not finite, or the
                           // update would have stored a non-finite parameter,
                           // moment or EMA value: all of them are then untouched
  bool update_nonfinite = false;  // skipped for the latter reason
};

// Coefficients of one sampling step (all samples of a batch share t).
// IDDPM p_sample or DDIM (Song et al. 2021).
struct SampleStepCoefs {
  enum Mode : int { DDPM = 0, DDIM = 1 };
  int mode = DDPM;
  double sqrt_recip_abar = 1, sqrt_recipm1_abar = 0;  // x0_hat = a x - b eps
  double coef1 = 0, coef2 = 0;                         // DDPM posterior mean
  double log_beta = 0, post_log_var = 0;  // learned-range bounds (DDPM); with
                                          // learn_sigma off, post_log_var is used
  double sqrt_abar_prev = 1;  // DDIM: x = sqrt_abar_prev x0_hat
  double eps_coef = 0;        //        + eps_coef eps_hat
  double sigma = 0;           //        + [add_noise] sigma z
  bool add_noise = false;     // t > 0
  bool clip_x0 = false;       // clamp x0_hat to [-1, 1]
  bool cfg = false;           // model_out holds 2N rows: N conditional, then N null
  double guidance = 1.0;      // eps = eps_null + guidance (eps_cond - eps_null)
  // Guidance applies to eps channels [0, guidance_channels) only; the others keep
  // the conditional prediction. DiT's forward_with_cfg guides the first 3 channels
  // (so a 4-channel latent model's 4th eps channel is unguided). 0: all channels.
  int guidance_channels = 0;
};

// Shape of one 2D convolution (the VAE's ops below). Explicit pads on each side
// let SD's asymmetric downsample padding (top 0, left 0, bottom 1, right 1)
// be a single op; padded values are zero.
struct Conv2dShape {
  int N = 0, Ci = 0, H = 0, W = 0;  // input [N, Ci, H, W]
  int Co = 0, kh = 1, kw = 1;       // weight [Co, Ci, kh, kw]
  int stride = 1;                   // 1 or 2 (both directions)
  int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int Ho() const { return (H + pad_t + pad_b - kh) / stride + 1; }
  int Wo() const { return (W + pad_l + pad_r - kw) / stride + 1; }
  // Throws speed::Error naming `op` and the offending field.
  void validate(const char* op) const {
    auto bad = [op](const std::string& m) { throw Error(std::string(op) + ": " + m); };
    if (N < 0 || Ci < 1 || H < 1 || W < 1 || Co < 1 || kh < 1 || kw < 1)
      bad("N >= 0 and Ci, H, W, Co, kh, kw >= 1 expected, got N=" + std::to_string(N) + " Ci=" + std::to_string(Ci) +
          " H=" + std::to_string(H) + " W=" + std::to_string(W) + " Co=" + std::to_string(Co) +
          " kernel " + std::to_string(kh) + "x" + std::to_string(kw));
    if (stride != 1 && stride != 2) bad("stride must be 1 or 2, got " + std::to_string(stride));
    if (pad_t < 0 || pad_l < 0 || pad_b < 0 || pad_r < 0 || pad_t >= kh || pad_b >= kh || pad_l >= kw || pad_r >= kw)
      bad("pads must be in [0, kernel size), got t/l/b/r " + std::to_string(pad_t) + "/" + std::to_string(pad_l) + "/" +
          std::to_string(pad_b) + "/" + std::to_string(pad_r));
    if (H + pad_t + pad_b < kh || W + pad_l + pad_r < kw)
      bad("the padded input " + std::to_string(H + pad_t + pad_b) + "x" + std::to_string(W + pad_l + pad_r) +
          " is smaller than the kernel");
  }
};

// Pooling window of pool2d_forward.
enum class PoolMode : int { Max = 0, AvgExcludePad = 1 };

template <typename T>
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu" or "cuda"

  // ---- memory -----------------------------------------------------------
  virtual void* alloc_bytes(size_t bytes) = 0;  // throws speed::Error when out of memory
  virtual void free_bytes(void* p) = 0;         // nullptr is fine
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within backend memory
  virtual void fill(T* x, T value, size_t n) = 0;
  virtual void synchronize() {}

  // ---- Linear -----------------------------------------------------------
  // y[M,N] = act(x[M,K] · w[N,K]ᵀ + b[N]) (=). b may be null. When act != None,
  // pre[M,N] receives the pre-activation (needed by backward); else pre is ignored.
  virtual void linear_forward(const T* x, const T* w, const T* b, T* y, T* pre,
                              int M, int K, int N, Act act) = 0;
  // dy[M,N] is the gradient w.r.t. the (post-activation) output. When act != None
  // dy is overwritten with the gradient w.r.t. the pre-activation (uses pre).
  // dx[M,K] (= or += by accum_dx; skipped if null), dw[N,K] (=), db[N] (=, skipped if null).
  virtual void linear_backward(const T* x, const T* w, T* dy, const T* pre, T* dx,
                               T* dw, T* db, int M, int K, int N, Act act,
                               bool accum_dx) = 0;

  // ---- elementwise ------------------------------------------------------
  virtual void silu_forward(const T* x, T* y, size_t n) = 0;
  // dx (= or += by accum) = dy * silu'(x)
  virtual void silu_backward(const T* x, const T* dy, T* dx, size_t n, bool accum) = 0;
  // y = a + b (=); y may alias a or b
  virtual void add(const T* a, const T* b, T* y, size_t n) = 0;
  // x[r, :] += row[:] for r < rows, row of length n (adds pos_embed to every sample)
  virtual void add_rows(T* x, const T* row, size_t rows, size_t n) = 0;

  // ---- patches ------------------------------------------------------------
  // img [N, C, H, W] -> tok [N, (H/p)*(W/p), C*p*p] (=), tokens in row-major grid order
  virtual void patchify(const T* img, T* tok, int N, int C, int H, int W, int p,
                        PatchLayout layout) = 0;
  // the exact inverse permutation (also the adjoint of patchify)
  virtual void unpatchify(const T* tok, T* img, int N, int C, int H, int W, int p,
                          PatchLayout layout) = 0;

  // ---- LayerNorm (no affine) + adaLN modulation ---------------------------
  // x [N, L, D]; y = (x - mean)/sqrt(var + eps) * (1 + scale[n]) + shift[n] (=);
  // mean, rstd [N*L] (=) saved for backward. Biased variance, as torch.
  virtual void ln_modulate_forward(const T* x, const T* shift, const T* scale,
                                   int mod_stride, T* y, T* mean, T* rstd, int N,
                                   int L, int D, double eps) = 0;
  // dx (= or += by accum_dx); dshift[n,:] = Σ_l dy (=); dscale[n,:] = Σ_l dy·xhat (=),
  // both written at mod_stride (they are chunks of d(mod)).
  virtual void ln_modulate_backward(const T* dy, const T* x, const T* mean,
                                    const T* rstd, const T* scale, int mod_stride,
                                    T* dx, T* dshift, T* dscale, int N, int L, int D,
                                    bool accum_dx) = 0;

  // ---- gated residual -----------------------------------------------------
  // x[n,l,:] += gate[n,:] * h[n,l,:]
  virtual void gated_residual_forward(T* x, const T* gate, int mod_stride, const T* h,
                                      int N, int L, int D) = 0;
  // dh = gate * dx (=); dgate[n,:] = Σ_l dx·h (=, at mod_stride). dx itself passes
  // through unchanged (the caller keeps it as the residual stream's gradient).
  virtual void gated_residual_backward(const T* dx, const T* gate, int mod_stride,
                                       const T* h, T* dh, T* dgate, int N, int L,
                                       int D) = 0;

  // ---- multi-head self-attention ---------------------------------------------
  // qkv [N, L, 3, heads, hd] (the qkv Linear's output), out [N, L, heads, hd] (=),
  // lse [N, heads, L] (=): log-sum-exp of each scaled score row, for backward.
  // scale = hd^-0.5. Never materialises more than one head's L×L scores at a time.
  virtual void attention_forward(const T* qkv, T* out, T* lse, int N, int L,
                                 int heads, int hd) = 0;
  // dqkv [N, L, 3, heads, hd] (=)
  virtual void attention_backward(const T* qkv, const T* out, const T* dout,
                                  const T* lse, T* dqkv, int N, int L, int heads,
                                  int hd) = 0;

  // ---- embeddings --------------------------------------------------------
  // out [N, dim] (=) = [cos(t f_i) for i < dim/2, sin(t f_i) for i < dim/2],
  // f_i = exp(-ln(max_period) i / (dim/2)); DiT: dim 256, max_period 10000.
  virtual void timestep_embedding(const int32_t* t, T* out, int N, int dim,
                                  double max_period) = 0;
  // out[n,:] = table[idx[n],:] (=)
  virtual void embedding_forward(const T* table, const int32_t* idx, T* out, int N,
                                 int D) = 0;
  // dtable [rows, D] (=): zero, then dtable[idx[n],:] += dout[n,:]
  virtual void embedding_backward(const T* dout, const int32_t* idx, T* dtable,
                                  int N, int D, int rows) = 0;

  // ---- noise ------------------------------------------------------------------
  // x[i] = standard normal from Philox-4x32-10 (include/speed/philox.h):
  // element i is normal (i % 4) of block (offset + i / 4) under key seed.
  // The caller advances its offset by ceil(n / 4) after the call.
  virtual void normal(T* x, size_t n, uint64_t seed, uint64_t offset) = 0;

  // ---- diffusion --------------------------------------------------------------
  // xt[n] = sqrt_abar[t[n]] x0[n] + sqrt_1m_abar[t[n]] eps[n], per_sample = C*H*W
  virtual void q_sample(const T* x0, const T* eps, const int32_t* t,
                        const DiffusionTablesView<T>& tab, T* xt, int N,
                        size_t per_sample) = 0;
  // IDDPM hybrid loss (Nichol & Dhariwal 2021). model_out [N, Cout, HW] with Cout = 2C when
  // learn_sigma (eps_hat, then v), else C (then vb = 0). weight[N] multiplies mse.
  // Outputs per sample loss = mse + vb_scale * vb, mse, vb [N] (=), and
  // dout [N, Cout, HW] (=) = d(mean_n loss_n)/d(model_out), with the stop-gradient
  // on eps_hat inside vb.
  virtual void iddpm_loss(const T* model_out, const T* x0, const T* xt, const T* eps,
                          const int32_t* t, const T* weight,
                          const DiffusionTablesView<T>& tab, double vb_scale,
                          bool learn_sigma, T* loss, T* mse, T* vb, T* dout, int N,
                          int C, int HW) = 0;

  // ---- optimizer (all trainable parameters in one flat buffer) -------------------
  // norm = ||grads||; skip everything if norm or any losses[0..N) is not finite,
  // or if any value the update would store is not finite (checked before anything
  // is written); else g *= min(1, max_grad_norm / (norm + 1e-6)) when clipping,
  // AdamW with bias correction and decoupled weight decay, then
  // ema = decay ema + (1 - decay) params.
  // ema may be null (no EMA). Returns the norm before clipping.
  virtual OptimResult optimizer_step(T* params, const T* grads, T* m, T* v, T* ema,
                                     size_t n, const OptimHyper& hp, const T* losses,
                                     int N) = 0;

  // ---- sampling ---------------------------------------------------------------
  // One fused reverse step on x [N, C, HW] (in place) from model_out
  // ([N or 2N, Cout, HW]; 2N when coefs.cfg) and noise [N, C, HW] (used when
  // coefs.add_noise): IDDPM p_sample, or DDIM with coefs.eps_coef.
  virtual void sample_step(const T* model_out, T* x, const T* noise, int N, int C,
                           int HW, bool learn_sigma, const SampleStepCoefs& coefs) = 0;

  // ==== VAE ops (forward only; SD's AutoencoderKL, native/src/core/vae.cpp) ====
  // All NCHW, contiguous.
  // y [N, Co, Ho, Wo] (= or += by accum) = conv(x [N, Ci, H, W], w [Co, Ci, kh, kw]) + b[Co]
  // (b may be null). Cross-correlation as torch.nn.functional.conv2d, dilation 1, groups 1.
  virtual void conv2d_forward(const T* x, const T* w, const T* b, T* y, const Conv2dShape& s,
                              bool accum) = 0;
  // GroupNorm over x [N, C, HW] with `groups` groups (C % groups == 0): per (n, g)
  // mean and biased variance over (C/groups)*HW values, y = (x - mean) rstd * gamma[c] + beta[c],
  // then SiLU when `silu` (=). y may alias x. gamma/beta may be null (1 and 0).
  virtual void group_norm_forward(const T* x, const T* gamma, const T* beta, T* y, int N, int C,
                                  int HW, int groups, double eps, bool silu) = 0;
  // y [N, C, 2H, 2W] (=): nearest-neighbour x2, y[n,c,i,j] = x[n,c,i/2,j/2]
  virtual void upsample_nearest2x(const T* x, T* y, int N, int C, int H, int W) = 0;
  // y [B, C, R] (=) = x [B, R, C] transposed per batch (NCHW <-> token-major NLC)
  virtual void transpose_batched(const T* x, T* y, int B, int R, int C) = 0;
  // The diagonal Gaussian posterior of moments [N, 2C, HW] (mean = channels [0, C),
  // logvar = [C, 2C)): z [N, C, HW] (=) = mean + exp(0.5 clamp(logvar, -30, 20)) eps,
  // or z = mean when eps is null.
  virtual void gaussian_sample(const T* moments, const T* eps, T* z, int N, int C, int HW) = 0;

  // ==== Inception-v3 ops (forward only; native/src/core/inception.cpp) ====
  // All NCHW, contiguous (CPU and CUDA implement them). The base versions throw: a backend
  // without its own says so by name instead of failing to compile or running something else.
  //
  // y [N, C, Ho, Wo] (=), Ho = (H + 2 pad - k) / stride + 1 (floor, as torch's
  // ceil_mode=False), pad < k on every side. Max ignores the padded positions (torch pads
  // max pools with -inf); AvgExcludePad divides by the in-bounds count only
  // (avg_pool2d's count_include_pad=False).
  virtual void pool2d_forward(const T* x, T* y, int N, int C, int H, int W, int k, int stride, int pad,
                              PoolMode mode) {
    unsupported("pool2d_forward");
  }
  // y [N, C] (=): the mean of each plane of x [N, C, HW] (adaptive_avg_pool2d to 1x1)
  virtual void global_avg_pool(const T* x, T* y, int N, int C, int HW) { unsupported("global_avg_pool"); }
  // y [N, C, Ho, Wo] (=): bilinear resize as F.interpolate(mode='bilinear', align_corners=False,
  // antialias=False): source coordinate (o + 0.5) * in / out - 0.5, clamped below at 0.
  virtual void resize_bilinear(const T* x, T* y, int N, int C, int H, int W, int Ho, int Wo) {
    unsupported("resize_bilinear");
  }
  // y[n, c_off + c, :] (=) = x[n, c, :] (max(x, 0) when relu) for c < C, y [N, Ctot, HW]:
  // writes one branch into its channel slot of a concatenation (torch.cat(dim=1)).
  // Ctot == C, c_off == 0 and y == x is an in-place ReLU.
  virtual void channel_copy(const T* x, T* y, int N, int C, int HW, int Ctot, int c_off, bool relu) {
    unsupported("channel_copy");
  }

  // ==== CNN classifier training ops (native/src/core/cnn.cpp) ====
  // All NCHW, contiguous. The base versions throw, as the Inception ops' do.
  //
  // The gradients of conv2d_forward (accum = false) given dy [N, Co, Ho, Wo]:
  // dx [N, Ci, H, W] (=, skipped if null: a network's first layer needs none),
  // dw [Co, Ci, kh, kw] (=), db [Co] (=, skipped if null). x is the forward's input.
  virtual void conv2d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, const Conv2dShape& s) {
    unsupported("conv2d_backward", "a CNN training op");
  }
  // y = max(x, 0) (=); y may alias x
  virtual void relu_forward(const T* x, T* y, size_t n) { unsupported("relu_forward", "a CNN training op"); }
  // dx = dy where y > 0, else 0 (=); y is relu_forward's output; dx may alias dy
  virtual void relu_backward(const T* y, const T* dy, T* dx, size_t n) {
    unsupported("relu_backward", "a CNN training op");
  }

 protected:
  [[noreturn]] void unsupported(const char* op, const char* family = "an Inception-v3 op") const {
    throw Error(name() + " backend: " + op + " (" + family + ") is not available on " +
                (name() == "cuda" ? std::string("CUDA") : name()) + " yet; use device 'cpu'");
  }
};

}  // namespace speed
