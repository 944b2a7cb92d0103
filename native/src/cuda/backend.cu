// speed::Backend<float> on an NVIDIA GPU: memory on one device and one stream,
// matrix products through cuBLASLt (gemm.h), everything else through the fused
// kernels of the per-op files (cuda_common.h lists them). Semantics are those of
// backend.h and match the CPU backend; tests under native/tests/cuda check each op
// against it.
//
// bf16 weights: in CudaMath::BF16 the Linear weights are converted to bf16 on
// first use and cached per pointer (weight_cache.h). A copy goes stale only when
// a write overlaps its weight's bytes: to_device, copy, fill and normal report
// their destination range, optimizer_step the parameter and EMA buffers,
// free_bytes drops the entries inside the freed block (the DiT core writes
// parameters only through these). So a training step converts each weight once
// (after the optimizer wrote it) and reuses it for forward and dx. Activations are
// converted into scratch buffers at each use. A cached copy costs 2 bytes per
// parameter.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "cuda_common.h"
#include "gemm.h"
#include "speed/cuda.h"
#include "weight_cache.h"

namespace speed {

bool cuda_available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) {
      if (e == cudaErrorNoDevice)
        *why = "no CUDA device was found";
      else if (e == cudaErrorInsufficientDriver)
        *why = "the NVIDIA driver is missing or older than the CUDA runtime this build needs";
      else
        *why = std::string("the CUDA runtime could not start: ") + cudaGetErrorName(e) + ": " +
               cudaGetErrorString(e);
    }
    cudaGetLastError();  // clear
    return false;
  }
  if (n <= 0) {
    if (why) *why = "no CUDA device was found";
    return false;
  }
  if (why) why->clear();
  return true;
}

namespace cuda {
namespace {

class CudaBackend final : public Backend<float> {
 public:
  explicit CudaBackend(const CudaOptions& o) : opts_(o) {
    int count = 0;
    SPEED_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (o.device < 0 || o.device >= count)
      throw Error("cuda device " + std::to_string(o.device) + " does not exist (" +
                  std::to_string(count) + " device(s) present)");
    SPEED_CUDA_CHECK(cudaSetDevice(o.device));
    SPEED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    lt_ = lt_create(o.math, stream_);
    SPEED_CUDA_CHECK(cudaMalloc(&opt_scratch_, optimizer_scratch_doubles() * sizeof(double)));
    SPEED_CUDA_CHECK(cudaMalloc(&opt_result_, sizeof(OptimDeviceResult)));
    SPEED_CUDA_CHECK(cudaMallocHost(&opt_host_, sizeof(OptimDeviceResult)));
    // SPEED_CUDA_NO_FUSED_EPILOGUE=1 runs the unfused epilogues, the path taken when cuBLASLt
    // offers no fused algorithm, so that a test can check it on a GPU where it would not run.
    const char* nf = std::getenv("SPEED_CUDA_NO_FUSED_EPILOGUE");
    fuse_ = !(nf && nf[0] && nf[0] != '0');
  }

  ~CudaBackend() override {
    cudaSetDevice(opts_.device);
    if (stream_) cudaStreamSynchronize(stream_);
    wcache_.clear([](void* b) { cudaFree(b); });
    cudaFree(scratch_a_);
    cudaFree(scratch_b_);
    cudaFree(scratch_f_);
    cudaFree(scratch_col_);
    cudaFree(scratch_dcol_);
    cudaFree(scratch_s_);
    cudaFree(scratch_pb_);
    cudaFree(opt_scratch_);
    cudaFree(opt_result_);
    cudaFreeHost(opt_host_);
    lt_destroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }

  CudaWeightCacheStats weight_cache_stats() const {
    CudaWeightCacheStats st;
    st.hits = wcache_.stats().hits;
    st.conversions = wcache_.stats().conversions;
    st.invalidations = wcache_.stats().invalidations;
    st.entries = wcache_.size();
    return st;
  }

  // ---- memory ---------------------------------------------------------------
  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    size_t b = bytes < 256 ? 256 : bytes;
    cudaError_t e = cudaMalloc(&p, b);
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      throw Error("cuda: out of device memory allocating " + std::to_string(bytes >> 20) +
                  " MiB (" + std::to_string(fr >> 20) + " MiB free of " +
                  std::to_string(tot >> 20) + " MiB): " + cudaGetErrorString(e) +
                  "; use a smaller batch or model");
    }
    sizes_[p] = b;
    return p;
  }
  void free_bytes(void* p) override {
    if (!p) return;
    // Drop cached bf16 copies of anything inside the freed block (a block of unknown
    // size, not from alloc_bytes: every copy is suspect).
    auto sz = sizes_.find(p);
    SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (sz == sizes_.end()) {
      wcache_.invalidate_all();
    } else {
      wcache_.erase(p, sz->second, [](void* b) { cudaFree(b); });
      sizes_.erase(sz);
    }
    SPEED_CUDA_CHECK(cudaFree(p));
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    wcache_.invalidate(dst, bytes);
    if (!bytes) return;
    SPEED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may go away
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    SPEED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    wcache_.invalidate(dst, bytes);
    if (!bytes) return;
    SPEED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill(float* x, float value, size_t n) override {
    wcache_.invalidate(x, n * sizeof(float));
    cuda::fill(x, value, n, stream_);
  }
  void synchronize() override { SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- Linear -----------------------------------------------------------------
  void linear_forward(const float* x, const float* w, const float* b, float* y, float* pre, int M,
                      int K, int N, Act act) override {
    check_dims("linear_forward", M, K, N);
    if (M == 0 || N == 0) return;
    GemmCall c;
    c.transa = true;  // w [N, K] row-major = K x N column-major, used transposed
    c.transb = false; // x [M, K] row-major = K x M column-major
    c.m = N;
    c.n = M;
    c.k = K;
    c.A = weight_operand(w, (size_t)N * K);
    c.lda = K;
    c.B = act_operand(x, (size_t)M * K, 0);
    c.ldb = K;
    c.ldd = N;
    if (act == Act::GeluTanh) {
      if (!pre) throw Error("linear_forward: act = GeluTanh needs a pre-activation buffer");
      if (fuse_ && N % 8 == 0) {
        c.D = y;
        c.epi = Epi::GeluAuxBias;
        c.bias = const_cast<float*>(b);
        c.aux = pre;
        c.aux_ld = N;
        if (lt_matmul(lt_, c)) return;
      }
      matmul_bias(c, pre, b, M, N);
      gelu_forward(pre, y, (size_t)M * N, stream_);
    } else {
      matmul_bias(c, y, b, M, N);
    }
  }

  void linear_backward(const float* x, const float* w, float* dy, const float* pre, float* dx,
                       float* dw, float* db, int M, int K, int N, Act act,
                       bool accum_dx) override {
    check_dims("linear_backward", M, K, N);
    const size_t mn = (size_t)M * N;
    const bool bf16 = opts_.math == CudaMath::BF16;
    const void* dyop = dy;
    if (act == Act::GeluTanh) {
      if (!pre) throw Error("linear_backward: act = GeluTanh needs the saved pre-activation");
      void* dyb = bf16 ? scratch(&scratch_b_, &cap_b_, mn * 2) : nullptr;
      gelu_backward_inplace(dy, pre, dyb, mn, stream_);
      if (bf16) dyop = dyb;
    } else if (bf16) {
      void* dyb = scratch(&scratch_b_, &cap_b_, mn * 2);
      f32_to_bf16(dy, dyb, mn, stream_);
      dyop = dyb;
    }
    if (M == 0) {  // no rows: gradients of w and b are zero
      if (dw) cuda::fill(dw, 0.f, (size_t)N * K, stream_);
      if (db) cuda::fill(db, 0.f, (size_t)N, stream_);
      return;
    }
    if (dx) {  // dx [M, K] = dy [M, N] . w [N, K]
      GemmCall c;
      c.transa = false;  // w as K x N column-major
      c.transb = false;  // dy as N x M column-major
      c.m = K;
      c.n = M;
      c.k = N;
      c.A = weight_operand(w, (size_t)N * K);
      c.lda = K;
      c.B = dyop;
      c.ldb = N;
      c.D = dx;
      c.ldd = K;
      c.beta = accum_dx ? 1.0f : 0.0f;
      lt_matmul(lt_, c);
    }
    if (dw || db) {
      if (!dw) throw Error("linear_backward: db without dw is not supported");
      // dw [N, K] = dy^T [N, M] . x [M, K]; column-major: K x N = x(KxM) . dy^T(MxN)
      GemmCall c;
      c.transa = false;
      c.transb = true;
      c.m = K;
      c.n = N;
      c.k = M;
      c.A = act_operand(x, (size_t)M * K, 0);
      c.lda = K;
      c.B = dyop;
      c.ldb = N;
      c.D = dw;
      c.ldd = K;
      if (db && fuse_) {
        c.epi = Epi::BGradB;
        c.bias = db;
        if (lt_matmul(lt_, c)) return;
        c.epi = Epi::None;
        c.bias = nullptr;
      }
      lt_matmul(lt_, c);
      if (db) column_sum(dy, db, M, N, stream_);
    }
  }

  // ---- elementwise --------------------------------------------------------------
  void silu_forward(const float* x, float* y, size_t n) override { cuda::silu_forward(x, y, n, stream_); }
  void silu_backward(const float* x, const float* dy, float* dx, size_t n, bool accum) override {
    cuda::silu_backward(x, dy, dx, n, accum, stream_);
  }
  void add(const float* a, const float* b, float* y, size_t n) override { cuda::add(a, b, y, n, stream_); }
  void add_rows(float* x, const float* row, size_t rows, size_t n) override {
    cuda::add_rows(x, row, rows, n, stream_);
  }

  // ---- patches ------------------------------------------------------------------
  void patchify(const float* img, float* tok, int N, int C, int H, int W, int p,
                PatchLayout layout) override {
    check_patch("patchify", N, C, H, W, p);
    cuda::patchify(img, tok, N, C, H, W, p, layout, false, nullptr, stream_);
  }
  void unpatchify(const float* tok, float* img, int N, int C, int H, int W, int p,
                  PatchLayout layout) override {
    check_patch("unpatchify", N, C, H, W, p);
    cuda::patchify(tok, img, N, C, H, W, p, layout, true, nullptr, stream_);
  }

  // ---- LayerNorm + adaLN ----------------------------------------------------------
  void ln_modulate_forward(const float* x, const float* shift, const float* scale, int mod_stride,
                           float* y, float* mean, float* rstd, int N, int L, int D,
                           double eps) override {
    cuda::ln_modulate_forward(x, shift, scale, mod_stride, y, mean, rstd, N, L, D, (float)eps,
                              stream_);
  }
  void ln_modulate_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                            const float* scale, int mod_stride, float* dx, float* dshift,
                            float* dscale, int N, int L, int D, bool accum_dx) override {
    cuda::ln_modulate_backward(dy, x, mean, rstd, scale, mod_stride, dx, dshift, dscale, N, L, D,
                               accum_dx, stream_);
  }

  // ---- gated residual -------------------------------------------------------------
  void gated_residual_forward(float* x, const float* gate, int mod_stride, const float* h, int N,
                              int L, int D) override {
    cuda::gated_residual_forward(x, gate, mod_stride, h, N, L, D, stream_);
  }
  void gated_residual_backward(const float* dx, const float* gate, int mod_stride, const float* h,
                               float* dh, float* dgate, int N, int L, int D) override {
    cuda::gated_residual_backward(dx, gate, mod_stride, h, dh, dgate, N, L, D, stream_);
  }

  // ---- attention --------------------------------------------------------------------
  void attention_forward(const float* qkv, float* out, float* lse, int N, int L, int heads,
                         int hd) override {
    if (!cuda::attention_supports_head_dim(hd)) {  // e.g. the VAE's single head of 512
      attention_forward_gemm(qkv, out, lse, N, L, heads, hd);
      return;
    }
    const bool bf16 = opts_.math == CudaMath::BF16;
    cuda::attention_forward(qkv, out, lse, N, L, heads, hd, bf16, stream_);
  }
  void attention_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                          float* dqkv, int N, int L, int heads, int hd) override {
    float* s = static_cast<float*>(scratch(&scratch_f_, &cap_f_, (size_t)N * heads * L * sizeof(float)));
    const bool bf16 = opts_.math == CudaMath::BF16;
    cuda::attention_backward(qkv, out, dout, lse, dqkv, s, N, L, heads, hd, bf16, stream_);
  }

  // ---- embeddings ---------------------------------------------------------------------
  void timestep_embedding(const int32_t* t, float* out, int N, int dim, double max_period) override {
    cuda::timestep_embedding(t, out, N, dim, max_period, stream_);
  }
  void embedding_forward(const float* table, const int32_t* idx, float* out, int N, int D) override {
    cuda::embedding_forward(table, idx, out, N, D, stream_);
  }
  void embedding_backward(const float* dout, const int32_t* idx, float* dtable, int N, int D,
                          int rows) override {
    cuda::embedding_backward(dout, idx, dtable, N, D, rows, stream_);
  }

  // ---- noise, diffusion -------------------------------------------------------------
  void normal(float* x, size_t n, uint64_t seed, uint64_t offset) override {
    wcache_.invalidate(x, n * sizeof(float));
    cuda::normal(x, n, seed, offset, stream_);
  }
  void q_sample(const float* x0, const float* eps, const int32_t* t,
                const DiffusionTablesView<float>& tab, float* xt, int N, size_t per_sample) override {
    cuda::q_sample(x0, eps, t, tab, xt, N, per_sample, stream_);
  }
  void iddpm_loss(const float* model_out, const float* x0, const float* xt, const float* eps,
                  const int32_t* t, const float* weight, const DiffusionTablesView<float>& tab,
                  double vb_scale, bool learn_sigma, float* loss, float* mse, float* vb,
                  float* dout, int N, int C, int HW) override {
    cuda::iddpm_loss(model_out, x0, xt, eps, t, weight, tab, vb_scale, learn_sigma, loss, mse, vb,
                     dout, N, C, HW, stream_);
  }

  // ---- optimizer --------------------------------------------------------------------
  OptimResult optimizer_step(float* params, const float* grads, float* m, float* v, float* ema,
                             size_t n, const OptimHyper& hp, const float* losses, int N) override {
    cuda::optimizer_step(params, grads, m, v, ema, n, hp, losses, N, opt_scratch_, opt_result_,
                         stream_);
    SPEED_CUDA_CHECK(cudaMemcpyAsync(opt_host_, opt_result_, sizeof(OptimDeviceResult),
                                     cudaMemcpyDeviceToHost, stream_));
    SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));
    OptimResult r;
    r.grad_norm = opt_host_->norm;
    r.skipped = opt_host_->skip != 0;
    r.update_nonfinite = opt_host_->skip == 2;
    if (!r.skipped) {  // the weights (and their EMA) changed; a skipped step wrote nothing
      wcache_.invalidate(params, n * sizeof(float));
      if (ema && hp.ema_decay >= 0) wcache_.invalidate(ema, n * sizeof(float));
    }
    return r;
  }

  // ---- sampling ---------------------------------------------------------------------
  void sample_step(const float* model_out, float* x, const float* noise, int N, int C, int HW,
                   bool learn_sigma, const SampleStepCoefs& coefs) override {
    if (coefs.add_noise && !noise) throw Error("sample_step: add_noise needs a noise tensor");
    cuda::sample_step(model_out, x, noise, N, C, HW, learn_sigma, coefs, stream_);
  }

  // ---- VAE ops (conv.cu + cuBLASLt) ---------------------------------------------------
  // conv2d: per sample and per tile of output pixels, im2col (float32 or bf16) then one
  // GEMM Y[Co, tile] = W[Co, K] col[K, tile] with float32 accumulation, written in place
  // at row stride Ho*Wo (beta = 1 accumulates for accum); the bias is added after. In
  // cuBLAS's column-major terms D [tile x Co] = col^T [tile x K] W^T [K x Co]. A 1x1
  // stride-1 conv without padding uses x itself (or its bf16 copy) as the operand.
  void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& s,
                      bool accum) override {
    s.validate("cuda backend: conv2d_forward");
    if (s.N == 0) return;
    const bool bf16 = opts_.math == CudaMath::BF16;
    const size_t esz = bf16 ? 2 : 4;
    const long long HWo = (long long)s.Ho() * s.Wo();
    const int K = s.Ci * s.kh * s.kw;
    const bool direct = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad_t == 0 && s.pad_l == 0 &&
                        s.pad_b == 0 && s.pad_r == 0;
    const long long tile = direct ? HWo : conv_tile(K, HWo);
    const void* wop = weight_operand(w, (size_t)s.Co * K);
    void* col = direct ? nullptr : scratch(&scratch_col_, &cap_col_, (size_t)K * tile * esz);
    const size_t in_per = (size_t)s.Ci * s.H * s.W;
    for (int n = 0; n < s.N; ++n) {
      const float* xs = x + n * in_per;
      float* ys = y + (size_t)n * s.Co * HWo;
      const char* xop = direct ? static_cast<const char*>(act_operand(xs, in_per, 0)) : nullptr;
      for (long long p0 = 0; p0 < HWo; p0 += tile) {
        const int cols = (int)std::min<long long>(tile, HWo - p0);
        if (!direct) cuda::im2col(xs, col, bf16, s, p0, cols, stream_);
        GemmCall c;
        c.transa = false;
        c.transb = false;
        c.m = cols;
        c.n = s.Co;
        c.k = K;
        c.A = direct ? static_cast<const void*>(xop + p0 * esz) : col;
        c.lda = direct ? HWo : cols;
        c.B = wop;
        c.ldb = K;
        c.D = ys + p0;
        c.ldd = HWo;
        c.beta = accum ? 1.0f : 0.0f;
        lt_matmul(lt_, c);
      }
    }
    if (b) cuda::conv_bias_add(y, b, s.N, s.Co, HWo, stream_);
  }
  // conv2d_backward: per sample and per pixel tile of the forward, im2col again, then
  //   dW [Co, K] (+)= dy [Co, tile] col [K, tile]^T  (column-major: dW^T [K x Co] = col^T' dy^T),
  //   dcol [K, tile] = W^T dy                         (column-major: dcol^T [tile x K] = dy^T W),
  // and col2im gathers dcol into dx. dW accumulates over the stream's GEMMs in sample
  // order (beta 1 after the first), so the result does not depend on timing.
  void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                       const Conv2dShape& s) override {
    s.validate("cuda backend: conv2d_backward");
    if (!x || !w || !dy || !dw) throw Error("cuda backend: conv2d_backward: x, w, dy and dw must not be null");
    const long long HWo = (long long)s.Ho() * s.Wo();
    const int K = s.Ci * s.kh * s.kw;
    if (db) cuda::conv_bias_grad(dy, db, s.N, s.Co, HWo, stream_);
    if (s.N == 0) {
      cuda::fill(dw, 0.f, (size_t)s.Co * K, stream_);
      return;
    }
    const bool bf16 = opts_.math == CudaMath::BF16;
    const size_t esz = bf16 ? 2 : 4;
    const long long tile = conv_tile(K, HWo);
    void* col = scratch(&scratch_col_, &cap_col_, (size_t)K * tile * esz);
    float* dcol = dx ? static_cast<float*>(scratch(&scratch_dcol_, &cap_dcol_, (size_t)K * tile * 4)) : nullptr;
    const void* wop = dx ? weight_operand(w, (size_t)s.Co * K) : nullptr;
    const size_t in_per = (size_t)s.Ci * s.H * s.W;
    for (int n = 0; n < s.N; ++n) {
      const float* xs = x + n * in_per;
      const char* dyop = static_cast<const char*>(act_operand(dy + (size_t)n * s.Co * HWo, (size_t)s.Co * HWo, 0));
      float* dxs = dx ? dx + n * in_per : nullptr;
      if (dxs) SPEED_CUDA_CHECK(cudaMemsetAsync(dxs, 0, in_per * sizeof(float), stream_));
      for (long long p0 = 0; p0 < HWo; p0 += tile) {
        const int cols = (int)std::min<long long>(tile, HWo - p0);
        cuda::im2col(xs, col, bf16, s, p0, cols, stream_);
        GemmCall c;
        c.transa = true;
        c.transb = false;
        c.m = K;
        c.n = s.Co;
        c.k = cols;
        c.A = col;
        c.lda = cols;
        c.B = dyop + p0 * esz;
        c.ldb = HWo;
        c.D = dw;
        c.ldd = K;
        c.beta = (n == 0 && p0 == 0) ? 0.0f : 1.0f;
        lt_matmul(lt_, c);
        if (dxs) {
          GemmCall d;
          d.transa = false;
          d.transb = true;
          d.m = cols;
          d.n = K;
          d.k = s.Co;
          d.A = dyop + p0 * esz;
          d.lda = HWo;
          d.B = wop;
          d.ldb = K;
          d.D = dcol;
          d.ldd = cols;
          d.beta = 0.0f;
          lt_matmul(lt_, d);
          cuda::col2im(dcol, dxs, s, p0, cols, stream_);
        }
      }
    }
  }
  void relu_forward(const float* x, float* y, size_t n) override { cuda::relu_forward(x, y, n, stream_); }
  void relu_backward(const float* y, const float* dy, float* dx, size_t n) override {
    cuda::relu_backward(y, dy, dx, n, stream_);
  }
  void group_norm_forward(const float* x, const float* gamma, const float* beta, float* y, int N, int C,
                          int HW, int groups, double eps, bool silu) override {
    if (N < 0 || C < 1 || HW < 1 || groups < 1 || C % groups != 0 || !(eps > 0))
      throw Error("cuda backend: group_norm_forward: expected N >= 0, C, HW >= 1, groups dividing C and eps > 0; got N=" +
                  std::to_string(N) + " C=" + std::to_string(C) + " HW=" + std::to_string(HW) +
                  " groups=" + std::to_string(groups));
    cuda::group_norm(x, gamma, beta, y, N, C, HW, groups, eps, silu, stream_);
  }
  void upsample_nearest2x(const float* x, float* y, int N, int C, int H, int W) override {
    if (N < 0 || C < 1 || H < 1 || W < 1) throw Error("cuda backend: upsample_nearest2x: bad shape");
    cuda::upsample_nearest2x(x, y, N, C, H, W, stream_);
  }
  void transpose_batched(const float* x, float* y, int B, int R, int C) override {
    if (B < 0 || R < 1 || C < 1) throw Error("cuda backend: transpose_batched: bad shape");
    cuda::transpose_batched(x, y, B, R, C, stream_);
  }
  void gaussian_sample(const float* moments, const float* eps, float* z, int N, int C, int HW) override {
    if (N < 0 || C < 1 || HW < 1) throw Error("cuda backend: gaussian_sample: bad shape");
    cuda::gaussian_sample(moments, eps, z, N, C, HW, stream_);
  }

  // ---- Inception-v3 ops (pool.cu) -------------------------------------------------------
  void pool2d_forward(const float* x, float* y, int N, int C, int H, int W, int k, int stride, int pad,
                      PoolMode mode) override {
    cuda::pool2d(x, y, N, C, H, W, k, stride, pad, mode, stream_);
  }
  void global_avg_pool(const float* x, float* y, int N, int C, int HW) override {
    cuda::global_avg_pool(x, y, N, C, HW, stream_);
  }
  void resize_bilinear(const float* x, float* y, int N, int C, int H, int W, int Ho, int Wo) override {
    cuda::resize_bilinear(x, y, N, C, H, W, Ho, Wo, stream_);
  }
  void channel_copy(const float* x, float* y, int N, int C, int HW, int Ctot, int c_off, bool relu) override {
    cuda::channel_copy(x, y, N, C, HW, Ctot, c_off, relu, stream_);
  }

 private:
  // Attention through two GEMMs per (sample, head) and a row softmax, for head dims
  // the fused kernels do not serve: S [L, L] = Q K^T (column-major D[j, i] = K[j] . Q[i]),
  // P = softmax(S / sqrt(hd)) with lse, O = P V. bf16 operands in BF16 math.
  void attention_forward_gemm(const float* qkv, float* out, float* lse, int N, int L, int heads, int hd) {
    if (N <= 0 || L <= 0 || heads <= 0 || hd <= 0) throw Error("cuda backend: attention_forward: bad shape");
    const bool bf16 = opts_.math == CudaMath::BF16;
    const size_t esz = bf16 ? 2 : 4;
    const int D = heads * hd, row = 3 * D;
    const size_t LL = (size_t)L * L;
    const char* qop = static_cast<const char*>(act_operand(qkv, (size_t)N * L * row, 0));
    float* S = static_cast<float*>(scratch(&scratch_s_, &cap_s_, LL * sizeof(float)));
    void* Pb = bf16 ? scratch(&scratch_pb_, &cap_pb_, LL * 2) : nullptr;
    const float scale = (float)(1.0 / std::sqrt((double)hd));
    for (int n = 0; n < N; ++n)
      for (int h = 0; h < heads; ++h) {
        const char* q = qop + ((size_t)n * L * row + (size_t)h * hd) * esz;
        const char* k = q + (size_t)D * esz;
        const char* v = q + (size_t)2 * D * esz;
        GemmCall c1;
        c1.transa = true;
        c1.transb = false;
        c1.m = L;
        c1.n = L;
        c1.k = hd;
        c1.A = k;
        c1.lda = row;
        c1.B = q;
        c1.ldb = row;
        c1.D = S;
        c1.ldd = L;
        lt_matmul(lt_, c1);
        cuda::softmax_rows_scaled(S, Pb, lse + ((size_t)n * heads + h) * L, L, L, scale, stream_);
        GemmCall c2;
        c2.transa = false;
        c2.transb = false;
        c2.m = hd;
        c2.n = L;
        c2.k = L;
        c2.A = v;
        c2.lda = row;
        c2.B = bf16 ? static_cast<const void*>(Pb) : static_cast<const void*>(S);
        c2.ldb = L;
        c2.D = out + (size_t)n * L * D + (size_t)h * hd;
        c2.ldd = D;
        lt_matmul(lt_, c2);
      }
  }

  static void check_dims(const char* op, int M, int K, int N) {
    if (M < 0 || K <= 0 || N <= 0)
      throw Error(std::string(op) + ": expected M >= 0, K > 0, N > 0, got M=" + std::to_string(M) +
                  " K=" + std::to_string(K) + " N=" + std::to_string(N));
  }
  static void check_patch(const char* op, int N, int C, int H, int W, int p) {
    if (N < 0 || C <= 0 || p <= 0 || H <= 0 || W <= 0 || H % p || W % p)
      throw Error(std::string(op) + ": expected H and W divisible by the patch size p, got H=" +
                  std::to_string(H) + " W=" + std::to_string(W) + " p=" + std::to_string(p));
  }

  // Output pixels per im2col tile of a conv with reduction length K: all of them unless the
  // tile [K, pixels] would exceed 32M elements (64 MiB bf16 / 128 MiB fp32).
  static long long conv_tile(int K, long long HWo) {
    constexpr long long kColElems = 32ll << 20;
    if ((long long)K * HWo <= kColElems) return HWo;
    return std::max<long long>(256, (kColElems / K) / 256 * 256);
  }

  // Grows a scratch buffer (synchronising first: a kernel may still read it).
  void* scratch(void** buf, size_t* cap, size_t bytes) {
    if (bytes > *cap) {
      SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (*buf) SPEED_CUDA_CHECK(cudaFree(*buf));
      *buf = nullptr;
      *cap = 0;
      size_t want = bytes + bytes / 4;
      cudaError_t e = cudaMalloc(buf, want);
      if (e != cudaSuccess) {
        cudaGetLastError();
        throw Error("cuda: out of device memory for " + std::to_string(want >> 20) +
                    " MiB of scratch: " + cudaGetErrorString(e));
      }
      *cap = want;
    }
    return *buf;
  }

  // The matrix operand for an activation: itself (TF32/FP32) or a bf16 copy.
  const void* act_operand(const float* x, size_t n, int) {
    if (opts_.math != CudaMath::BF16) return x;
    void* b = scratch(&scratch_a_, &cap_a_, n * 2);
    f32_to_bf16(x, b, n, stream_);
    return b;
  }

  // The matrix operand for a weight: itself or its cached bf16 copy.
  const void* weight_operand(const float* w, size_t n) {
    if (opts_.math != CudaMath::BF16) return w;
    if (const WeightCache::Entry* hit = wcache_.lookup(w, n)) return hit->buf;
    WeightCache::Entry& c = wcache_.entry(w);
    if (!c.buf || c.cap < n) {
      if (c.buf) {
        SPEED_CUDA_CHECK(cudaStreamSynchronize(stream_));
        cudaFree(c.buf);
        c.buf = nullptr;
        c.cap = 0;
      }
      cudaError_t e = cudaMalloc(&c.buf, n * 2);
      if (e != cudaSuccess) {
        cudaGetLastError();
        c.buf = nullptr;
        throw Error("cuda: out of device memory for a bf16 weight copy: " +
                    std::string(cudaGetErrorString(e)));
      }
      c.cap = n;
    }
    f32_to_bf16(w, c.buf, n, stream_);
    wcache_.converted(w, n);
    return c.buf;
  }

  // D = op(A) op(B) (+ bias per output column of the row-major result).
  void matmul_bias(GemmCall c, float* out, const float* b, int M, int N) {
    c.D = out;
    if (b && fuse_) {
      c.epi = Epi::Bias;
      c.bias = const_cast<float*>(b);
      if (lt_matmul(lt_, c)) return;
    }
    c.epi = Epi::None;
    c.bias = nullptr;
    lt_matmul(lt_, c);
    if (b) cuda::add_rows(out, b, (size_t)M, (size_t)N, stream_);
  }

  CudaOptions opts_;
  cudaStream_t stream_ = nullptr;
  LtGemm* lt_ = nullptr;
  bool fuse_ = true;
  WeightCache wcache_;
  std::unordered_map<void*, size_t> sizes_;
  void* scratch_a_ = nullptr;
  size_t cap_a_ = 0;
  void* scratch_b_ = nullptr;
  size_t cap_b_ = 0;
  void* scratch_f_ = nullptr;
  size_t cap_f_ = 0;
  void* scratch_col_ = nullptr;  // conv2d im2col tile (VAE, CNN)
  size_t cap_col_ = 0;
  void* scratch_dcol_ = nullptr;  // conv2d_backward's dcol tile (CNN)
  size_t cap_dcol_ = 0;
  void* scratch_s_ = nullptr;  // attention_forward_gemm scores [L, L] (VAE)
  size_t cap_s_ = 0;
  void* scratch_pb_ = nullptr;  // their bf16 copy
  size_t cap_pb_ = 0;
  double* opt_scratch_ = nullptr;
  OptimDeviceResult* opt_result_ = nullptr;
  OptimDeviceResult* opt_host_ = nullptr;
};

}  // namespace
}  // namespace cuda

CudaWeightCacheStats cuda_weight_cache_stats(const Backend<float>& be) {
  const auto* c = dynamic_cast<const cuda::CudaBackend*>(&be);
  if (!c) throw Error("cuda_weight_cache_stats: backend '" + be.name() + "' is not a CUDA backend");
  return c->weight_cache_stats();
}

std::shared_ptr<Backend<float>> make_cuda_backend(const CudaOptions& opts) {
  std::string why;
  if (!cuda_available(&why)) throw Error("device 'cuda' is not available: " + why);
  return std::make_shared<cuda::CudaBackend>(opts);
}

}  // namespace speed
