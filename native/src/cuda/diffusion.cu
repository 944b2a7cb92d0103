// Diffusion (backend.h "diffusion"): q_sample and the IDDPM hybrid loss (simple MSE + the
// variational bound term, with its gradient), one block per sample.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.h"
#include "kernel_common.cuh"

namespace speed {
namespace cuda {
namespace {

__global__ void q_sample_k(const float* __restrict__ x0, const float* __restrict__ eps,
                           const int32_t* __restrict__ t, const float* __restrict__ sa,
                           const float* __restrict__ s1a, float* __restrict__ xt, int N,
                           size_t per_sample) {
  size_t total = (size_t)N * per_sample;
  GRID_STRIDE(i, total) {
    int ti = t[i / per_sample];
    xt[i] = sa[ti] * x0[i] + s1a[ti] * eps[i];
  }
}

// ---- IDDPM hybrid loss (Nichol & Dhariwal 2021: L_simple + vb_scale L_vb): one block per sample ---------------------
__device__ __forceinline__ double approx_cdf(double x) {
  const double c = 0.79788456080286535588;  // sqrt(2/pi)
  return 0.5 * (1.0 + tanh(c * (x + 0.044715 * x * x * x)));
}
__device__ __forceinline__ double approx_pdf(double x) {  // d approx_cdf / dx
  const double c = 0.79788456080286535588;
  double th = tanh(c * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

struct LossTab {
  const float *sqrt_recip, *sqrt_recipm1, *coef1, *coef2, *log_beta, *post_log_var;
};

__global__ void iddpm_loss_k(const float* __restrict__ out, const float* __restrict__ x0,
                             const float* __restrict__ xt, const float* __restrict__ eps,
                             const int32_t* __restrict__ tarr, const float* __restrict__ weight,
                             LossTab tab, double vb_scale, int learn_sigma, float* loss, float* mse,
                             float* vb, float* dout, int N, int C, int HW) {
  const double ln2 = 0.69314718055994530942;
  int n = blockIdx.x;
  int t = tarr[n];
  double w = weight[n];
  double sr = tab.sqrt_recip[t], srm1 = tab.sqrt_recipm1[t], c1 = tab.coef1[t], c2 = tab.coef2[t];
  double lb = tab.log_beta[t], plv = tab.post_log_var[t];
  size_t per = (size_t)C * HW;
  int Cout = learn_sigma ? 2 * C : C;
  const float* on = out + (size_t)n * Cout * HW;
  float* dn = dout + (size_t)n * Cout * HW;
  size_t base = (size_t)n * per;
  double inv_count = 1.0 / (double)per;
  double inv_N = 1.0 / (double)N;
  double s_mse = 0.0, s_vb = 0.0;
  for (size_t e = threadIdx.x; e < per; e += blockDim.x) {
    double eh = on[e];
    double ep = eps[base + e];
    double diff = eh - ep;
    s_mse += diff * diff;
    dn[e] = (float)(w * 2.0 * diff * inv_count * inv_N);
    if (learn_sigma) {
      double v = on[per + e];
      double x = x0[base + e], xtv = xt[base + e];
      double frac = 0.5 * (v + 1.0);
      double lv = frac * lb + (1.0 - frac) * plv;
      double dlv_dv = 0.5 * (lb - plv);
      double x0h = sr * xtv - srm1 * eh;  // eps_hat held constant (stop-gradient)
      double mu = c1 * x0h + c2 * xtv;
      double term, dterm_dlv;
      if (t > 0) {
        double mt = c1 * x + c2 * xtv;
        double d = mt - mu;
        double elv = exp(-lv);
        term = 0.5 * (-1.0 + lv - plv + exp(plv - lv) + d * d * elv) / ln2;
        dterm_dlv = 0.5 * (1.0 - exp(plv - lv) - d * d * elv) / ln2;
      } else {
        double ls = 0.5 * lv;  // log scale
        double inv_stdv = exp(-ls);
        double cx = x - mu;
        double plus_in = inv_stdv * (cx + 1.0 / 255.0);
        double min_in = inv_stdv * (cx - 1.0 / 255.0);
        double cdf_plus = approx_cdf(plus_in), cdf_min = approx_cdf(min_in);
        // d(plus_in)/d(ls) = -plus_in, likewise for min_in.
        double lp, dlp_dls;
        if (x < -0.999) {
          double a = cdf_plus;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12 ? approx_pdf(plus_in) * (-plus_in) / a : 0.0;
        } else if (x > 0.999) {
          double a = 1.0 - cdf_min;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12 ? -approx_pdf(min_in) * (-min_in) / a : 0.0;
        } else {
          double a = cdf_plus - cdf_min;
          lp = log(fmax(a, 1e-12));
          dlp_dls = a >= 1e-12
                        ? (approx_pdf(plus_in) * (-plus_in) - approx_pdf(min_in) * (-min_in)) / a
                        : 0.0;
        }
        term = -lp / ln2;
        dterm_dlv = -dlp_dls * 0.5 / ln2;
      }
      s_vb += term;
      dn[per + e] = (float)(vb_scale * dterm_dlv * dlv_dv * inv_count * inv_N);
    }
  }
  // block reduction (double)
  __shared__ double sm[32], sv[32];
  int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
  s_mse = warp_sum_d(s_mse);
  s_vb = warp_sum_d(s_vb);
  if (lane == 0) {
    sm[wid] = s_mse;
    sv[wid] = s_vb;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double a = 0.0, b = 0.0;
    for (int k = 0; k < (int)(blockDim.x / 32); ++k) {
      a += sm[k];
      b += sv[k];
    }
    double m = w * a * inv_count;
    double vbv = learn_sigma ? b * inv_count : 0.0;
    mse[n] = (float)m;
    vb[n] = (float)vbv;
    loss[n] = (float)(m + vb_scale * vbv);
  }
}

}  // namespace

void q_sample(const float* x0, const float* eps, const int32_t* t,
              const DiffusionTablesView<float>& tab, float* xt, int N, size_t per_sample,
              cudaStream_t s) {
  size_t total = (size_t)N * per_sample;
  if (!total) return;
  q_sample_k<<<grid_for(total), kThreads, 0, s>>>(x0, eps, t, tab.sqrt_abar, tab.sqrt_1m_abar, xt,
                                                  N, per_sample);
  SPEED_CUDA_LAUNCH_CHECK("q_sample");
}

void iddpm_loss(const float* model_out, const float* x0, const float* xt, const float* eps,
                const int32_t* t, const float* weight, const DiffusionTablesView<float>& tab,
                double vb_scale, bool learn_sigma, float* loss, float* mse, float* vb, float* dout,
                int N, int C, int HW, cudaStream_t s) {
  if (N <= 0) return;
  LossTab lt{tab.sqrt_recip_abar, tab.sqrt_recipm1_abar, tab.coef1, tab.coef2, tab.log_beta,
             tab.post_log_var};
  iddpm_loss_k<<<N, 256, 0, s>>>(model_out, x0, xt, eps, t, weight, lt, vb_scale,
                                 learn_sigma ? 1 : 0, loss, mse, vb, dout, N, C, HW);
  SPEED_CUDA_LAUNCH_CHECK("iddpm_loss");
}

}  // namespace cuda
}  // namespace speed
