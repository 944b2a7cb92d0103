// Helpers shared by the CPU backend tests: random data, poisoning, comparisons,
// central finite differences and a pass/fail tally. Plain C++, no framework.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cputest {

inline int g_failures = 0, g_checks = 0;

// Prints one summary line per check; a failing check makes main return 1.
inline bool expect(bool ok, const std::string& what, const std::string& detail = "") {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.empty() ? "" : "  ",
              detail.c_str());
  return ok;
}
inline int finish(const char* program) {
  std::printf("%s: %d checks, %d failed\n", program, g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  double uniform(double lo = -1, double hi = 1) {
    return std::uniform_real_distribution<double>(lo, hi)(gen);
  }
  int integer(int lo, int hi) {  // [lo, hi]
    return std::uniform_int_distribution<int>(lo, hi)(gen);
  }
  template <typename T>
  std::vector<T> vec(size_t n, double lo = -1, double hi = 1) {
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(uniform(lo, hi));
    return v;
  }
};

template <typename T>
void poison(std::vector<T>& v) {
  for (auto& x : v) x = std::numeric_limits<T>::quiet_NaN();
}

template <typename T>
bool all_finite(const std::vector<T>& v) {
  for (auto x : v)
    if (!std::isfinite(static_cast<double>(x))) return false;
  return true;
}

// max |a - b| / max(max |b|, floor); NaN anywhere gives +inf.
template <typename A, typename B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b, double floor = 1e-12) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = floor;
  for (size_t i = 0; i < a.size(); ++i) {
    double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::fabs(x - y));
    den = std::max(den, std::fabs(y));
  }
  return num / den;
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(static_cast<double>(a[i])) && std::isnan(static_cast<double>(b[i]))) continue;
    if (a[i] != b[i]) return false;
  }
  return true;
}

inline std::string fmt(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

// Central differences of the scalar f() with respect to every element of x
// (modified in place and restored).
inline std::vector<double> numeric_grad(std::vector<double>& x, const std::function<double()>& f,
                                        double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + h;
    double fp = f();
    x[i] = keep - h;
    double fm = f();
    x[i] = keep;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline double dotv(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace cputest
