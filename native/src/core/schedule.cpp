// The linear-schedule IDDPM tables in C++ (betas from 1e-4 to 0.02, scaled to the step count), for native programs.
#include <cmath>

#include "speed/bench.h"

namespace speed {

DiffusionTables linear_diffusion_tables(int T) {
  // beta_max = 20 / T must stay below 1
  if (T <= 20) throw Error("linear_diffusion_tables: steps must be > 20 for the linear schedule, got " + std::to_string(T));
  const double s = 1000.0 / T, b0 = s * 1e-4, b1 = s * 0.02;
  std::vector<double> beta(T), abar(T), abar_prev(T), pv(T);
  double prod = 1.0;
  for (int t = 0; t < T; ++t) {
    beta[t] = b0 + (b1 - b0) * t / (T - 1);  // numpy linspace
    abar_prev[t] = prod;
    prod *= 1.0 - beta[t];
    abar[t] = prod;
  }
  DiffusionTables d;
  for (int t = 0; t < T; ++t) {
    pv[t] = beta[t] * (1.0 - abar_prev[t]) / (1.0 - abar[t]);
    d.sqrt_abar.push_back(std::sqrt(abar[t]));
    d.sqrt_1m_abar.push_back(std::sqrt(1.0 - abar[t]));
    d.sqrt_recip_abar.push_back(std::sqrt(1.0 / abar[t]));
    d.sqrt_recipm1_abar.push_back(std::sqrt(1.0 / abar[t] - 1.0));
    d.coef1.push_back(beta[t] * std::sqrt(abar_prev[t]) / (1.0 - abar[t]));
    d.coef2.push_back((1.0 - abar_prev[t]) * std::sqrt(1.0 - beta[t]) / (1.0 - abar[t]));
    d.log_beta.push_back(std::log(beta[t]));
  }
  // posterior variance is 0 at t = 0: the clipped log uses the t = 1 entry there
  for (int t = 0; t < T; ++t) d.post_log_var.push_back(std::log(t == 0 ? pv[1] : pv[t]));
  return d;
}

}  // namespace speed
