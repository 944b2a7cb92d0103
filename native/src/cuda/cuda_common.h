// Shared by the CUDA backend's translation units: error checks that turn every
// CUDA runtime failure into a speed::Error (never abort()), and the launch
// helpers' declarations (one kernel file per op family, as backend.h's sections) that
// backend.cu calls.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "speed/backend.h"

namespace speed {
namespace cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const std::string& what, const char* file,
                                    int line) {
  throw Error(std::string("CUDA error in ") + what + " (" + file + ":" +
              std::to_string(line) + "): " + cudaGetErrorName(e) + ": " +
              cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace speed

// Checks a runtime call.
#define SPEED_CUDA_CHECK(call)                                                  \
  do {                                                                          \
    cudaError_t speed_err_ = (call);                                            \
    if (speed_err_ != cudaSuccess)                                              \
      ::speed::cuda::throw_cuda(speed_err_, #call, __FILE__, __LINE__);         \
  } while (0)

// Checks the launch that was just made (configuration errors, and sticky
// errors from earlier asynchronous work).
#define SPEED_CUDA_LAUNCH_CHECK(name)                                           \
  do {                                                                          \
    cudaError_t speed_err_ = cudaGetLastError();                                \
    if (speed_err_ != cudaSuccess)                                              \
      ::speed::cuda::throw_cuda(speed_err_, std::string("launch of ") + (name), __FILE__, __LINE__); \
  } while (0)

namespace speed {
namespace cuda {

// ---- elementwise.cu -------------------------------------------------------------
void fill(float* x, float v, size_t n, cudaStream_t s);
void f32_to_bf16(const float* x, void* y_bf16, size_t n, cudaStream_t s);
void silu_forward(const float* x, float* y, size_t n, cudaStream_t s);
void silu_backward(const float* x, const float* dy, float* dx, size_t n, bool accum,
                   cudaStream_t s);
void add(const float* a, const float* b, float* y, size_t n, cudaStream_t s);
void add_rows(float* x, const float* row, size_t rows, size_t n, cudaStream_t s);

// ---- linear_epilogue.cu (the unfused epilogues of Linear) --------------------------
void gelu_forward(const float* pre, float* y, size_t n, cudaStream_t s);
// dy <- dy * gelu'(pre); optionally also writes a bf16 copy of the result.
void gelu_backward_inplace(float* dy, const float* pre, void* dy_bf16, size_t n,
                           cudaStream_t s);
// db[N] = sum over M rows of dy[M, N] (=)
void column_sum(const float* dy, float* db, int M, int N, cudaStream_t s);

// ---- patchify.cu ------------------------------------------------------------------
void patchify(const float* img, float* tok, int N, int C, int H, int W, int p,
              PatchLayout layout, bool inverse, float* img_out, cudaStream_t s);

// ---- layernorm.cu -----------------------------------------------------------------
void ln_modulate_forward(const float* x, const float* shift, const float* scale,
                         int mod_stride, float* y, float* mean, float* rstd, int N,
                         int L, int D, float eps, cudaStream_t s);
void ln_modulate_backward(const float* dy, const float* x, const float* mean,
                          const float* rstd, const float* scale, int mod_stride,
                          float* dx, float* dshift, float* dscale, int N, int L, int D,
                          bool accum_dx, cudaStream_t s);

// ---- gated_residual.cu --------------------------------------------------------------
void gated_residual_forward(float* x, const float* gate, int mod_stride, const float* h,
                            int N, int L, int D, cudaStream_t s);
void gated_residual_backward(const float* dx, const float* gate, int mod_stride,
                             const float* h, float* dh, float* dgate, int N, int L,
                             int D, cudaStream_t s);

// ---- embedding.cu -------------------------------------------------------------------
void timestep_embedding(const int32_t* t, float* out, int N, int dim, double max_period,
                        cudaStream_t s);
void embedding_forward(const float* table, const int32_t* idx, float* out, int N, int D,
                       cudaStream_t s);
void embedding_backward(const float* dout, const int32_t* idx, float* dtable, int N,
                        int D, int rows, cudaStream_t s);

// ---- noise.cu -----------------------------------------------------------------------
void normal(float* x, size_t n, uint64_t seed, uint64_t offset, cudaStream_t s);

// ---- diffusion.cu -------------------------------------------------------------------
void q_sample(const float* x0, const float* eps, const int32_t* t,
              const DiffusionTablesView<float>& tab, float* xt, int N, size_t per_sample,
              cudaStream_t s);
void iddpm_loss(const float* model_out, const float* x0, const float* xt,
                const float* eps, const int32_t* t, const float* weight,
                const DiffusionTablesView<float>& tab, double vb_scale, bool learn_sigma,
                float* loss, float* mse, float* vb, float* dout, int N, int C, int HW,
                cudaStream_t s);

// ---- optimizer.cu -------------------------------------------------------------------
// `scratch` holds at least optimizer_scratch_doubles() doubles of device memory;
// `result` receives {grad_norm (double), skipped (int32)} in device memory:
// skip = 1 for a non-finite loss or gradient, 2 for an update that would store a
// non-finite parameter, moment or EMA value (nothing is written in either case).
struct OptimDeviceResult {
  double norm;
  double clip;
  int32_t skip;
};
size_t optimizer_scratch_doubles();
void optimizer_step(float* params, const float* grads, float* m, float* v, float* ema,
                    size_t n, const OptimHyper& hp, const float* losses, int N,
                    double* scratch, OptimDeviceResult* result, cudaStream_t s);

// ---- sampling.cu --------------------------------------------------------------------
void sample_step(const float* model_out, float* x, const float* noise, int N, int C,
                 int HW, bool learn_sigma, const SampleStepCoefs& c, cudaStream_t s);

// ---- attention.cu ---------------------------------------------------------------
// `scratch` for backward: N*heads*L floats (the rowsum(dO * O) terms).
// `bf16`: use the bf16 tensor-core kernels (attention_tc.cu) when they support the
// head_dim and the pointers are 16-byte aligned, unless SPEED_CUDA_ATTENTION=fp32;
// otherwise (and always for FP32/TF32 math) the float32 CUDA-core kernels.
void attention_forward(const float* qkv, float* out, float* lse, int N, int L, int heads,
                       int hd, bool bf16, cudaStream_t s);
void attention_backward(const float* qkv, const float* out, const float* dout,
                        const float* lse, float* dqkv, float* scratch, int N, int L,
                        int heads, int hd, bool bf16, cudaStream_t s);
bool attention_supports_head_dim(int hd);

// ---- attention_tc.cu (bf16 mma.sync m16n8k16) ---------------------------------------
bool attention_tc_supports(int hd, const void* a, const void* b, const void* c, const void* d);
bool attention_tc_disabled_by_env();  // SPEED_CUDA_ATTENTION=fp32
void attention_tc_forward(const float* qkv, float* out, float* lse, int N, int L, int heads,
                          int hd, cudaStream_t s);
void attention_tc_backward(const float* qkv, const float* out, const float* dout,
                           const float* lse, float* dqkv, float* scratch, int N, int L,
                           int heads, int hd, cudaStream_t s);

// ---- conv.cu (VAE ops) ----------------------------------------------------------------
// col [Ci*kh*kw, cols] (float32, or bf16 when `bf16`) for output pixels [p0, p0 + cols) of one
// sample xs [Ci, H, W] of the conv `sh`.
void im2col(const float* xs, void* col, bool bf16, const Conv2dShape& sh, long long p0, int cols,
            cudaStream_t s);
void conv_bias_add(float* y, const float* b, int N, int Co, long long HW, cudaStream_t s);
// CNN training: dxs [Ci, H, W] (+=) of one sample from dcol [Ci*kh*kw, cols] (float32), the
// adjoint of im2col over output pixels [p0, p0 + cols); db [Co] (=) = sum of dy [N, Co, HW]
// over n and pixels; ReLU (y may alias x, dx may alias dy).
void col2im(const float* dcol, float* dxs, const Conv2dShape& sh, long long p0, int cols, cudaStream_t s);
void conv_bias_grad(const float* dy, float* db, int N, int Co, long long HW, cudaStream_t s);
void relu_forward(const float* x, float* y, size_t n, cudaStream_t s);
void relu_backward(const float* y, const float* dy, float* dx, size_t n, cudaStream_t s);
void group_norm(const float* x, const float* gamma, const float* beta, float* y, int N, int C, int HW,
                int groups, double eps, bool silu, cudaStream_t s);
void upsample_nearest2x(const float* x, float* y, int N, int C, int H, int W, cudaStream_t s);
void transpose_batched(const float* x, float* y, int B, int R, int C, cudaStream_t s);
void gaussian_sample(const float* m, const float* eps, float* z, int N, int C, int HW, cudaStream_t s);
// S [rows, L] -> softmax(scale S) in place; a bf16 copy into pb when not null; lse [rows] when not null.
void softmax_rows_scaled(float* S, void* pb, float* lse, int rows, int L, float scale, cudaStream_t s);

// ---- pool.cu (Inception-v3 ops) -------------------------------------------------------
// Each validates its shape (throwing speed::Error named after the backend op) and launches.
void pool2d(const float* x, float* y, int N, int C, int H, int W, int k, int stride, int pad, PoolMode mode,
            cudaStream_t s);
void global_avg_pool(const float* x, float* y, int N, int C, int HW, cudaStream_t s);
void resize_bilinear(const float* x, float* y, int N, int C, int H, int W, int Ho, int Wo, cudaStream_t s);
void channel_copy(const float* x, float* y, int N, int C, int HW, int Ctot, int c_off, bool relu, cudaStream_t s);

}  // namespace cuda
}  // namespace speed
