// Branch-free float32 exp and tanh that the compiler vectorises (std::expf and
// std::tanhf are library calls that keep loops scalar). float64 keeps std::.
// Accuracy (checked in native/tests/test_cpu_ops.cpp): exp ~2 ulp on the
// softmax range, tanh within 5e-7 absolute.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace speed::cpu {

// Cephes expf: exp(x) = 2^n exp(r), r = x - n ln2 in [-ln2/2, ln2/2], degree-6 polynomial.
inline float fast_exp(float x) {
  x = std::min(88.3762626647949f, std::max(-87.3365478515625f, x));
  // n = round(x / ln2) by the 1.5·2^23 trick: std::floor does not vectorise
  // under the default -ftrapping-math, this does (ties round to even: harmless).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// Rational minimax tanh (as in Eigen's float tanh), saturating beyond |x| = 7.9.
inline float fast_tanh(float x) {
  const float c = 7.90531110763549805f;
  x = std::min(c, std::max(-c, x));
  const float x2 = x * x;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

inline float vexp(float x) { return fast_exp(x); }
inline double vexp(double x) { return std::exp(x); }
inline float vtanh(float x) { return fast_tanh(x); }
inline double vtanh(double x) { return std::tanh(x); }

}  // namespace speed::cpu
