// The CPU backend in float32 (the op checks themselves, forward against float64 references
// and backward against finite differences, are test_ops_grad: native/src/core/op_table.h):
//   - every op-table case marked kThreads gives bitwise identical results (forward, then
//     backward) for 1, 2 and 3 threads, with each CPU GEMM for the matrix products;
//   - every case marked kF32 stays within its bound of the float64 reference;
//   - the fast exp/tanh the float32 kernels use, against libm.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../src/core/op_table.h"
#include "../src/cpu/fastmath.h"
#include "cpu_test_util.h"
#include "speed/backend.h"
#include "speed/cpu.h"

using namespace cputest;
using namespace speed::ops;
using speed::Backend;
using V = std::vector<double>;

namespace {

bool is_output(Role r) { return r == Role::Out || r == Role::InOut; }

// Forward, then backward (=) when the op has one, on a float32 CPU backend with `threads`
// threads: every output, gradient and overwritten upstream gradient, concatenated.
V run_f32(const OpCase& c, const Host& h, int threads) {
  auto be = speed::make_cpu_backend<float>(threads);
  CaseRun<float> r(*be, c);
  r.load_inputs(h);
  r.forward();
  V all;
  for (size_t i = 0; i < c.t.size(); ++i)
    if (is_output(c.t[i].role)) {
      V o = r.download(int(i));
      all.insert(all.end(), o.begin(), o.end());
    }
  if (!c.has_grad()) return all;
  for (size_t i = 0; i < c.t.size(); ++i)
    if (c.t[i].role == Role::DIn) r.upload(int(i), V(c.t[i].n, 0.0));
  r.backward(false);
  for (size_t i = 0; i < c.t.size(); ++i)
    if (c.t[i].role == Role::DIn || (c.t[i].role == Role::DOut && c.t[i].bwd_writes)) {
      V o = r.download(int(i));
      all.insert(all.end(), o.begin(), o.end());
    }
  return all;
}

void threads_case(const OpCase& c, const std::string& suffix) {
  const Host h = make_host(c);
  std::vector<V> outs;
  for (int th : {1, 2, 3}) outs.push_back(run_f32(c, h, th));
  expect(bitwise_equal(outs[0], outs[1]) && bitwise_equal(outs[0], outs[2]) && all_finite(outs[0]),
         c.name + (c.has_grad() ? " forward+backward" : "") + suffix + " identical for 1, 2, 3 threads");
}

void f32_case(const OpCase& c) {
  const Host h = make_host(c);
  auto be = speed::make_cpu_backend<float>(2);
  CaseRun<float> r(*be, c);
  r.load_inputs(h);
  r.forward();
  Host ref = h;
  ref.set.assign(c.t.size(), 0);
  c.reference(ref);
  for (size_t i = 0; i < c.t.size(); ++i) {
    if (c.t[i].f32 <= 0) continue;
    const V got = r.download(int(i));
    double e = 0;
    if (c.f32_abs) {
      for (size_t k = 0; k < got.size(); ++k) e = std::max(e, std::fabs(got[k] - ref.v[i][k]));
      if (!all_finite(got)) e = INFINITY;
    } else {
      e = rel_err(got, ref.v[i]);
    }
    expect(e < c.t[i].f32, "float32 " + c.name + " " + c.t[i].name + " vs float64 reference" + (c.f32_abs ? " (abs)" : ""),
           fmt(e));
  }
}

// ---- float32 fast math and float32 kernels against float64 ------------------------
void test_fast_math() {
  double ee = 0, et = 0;
  for (int i = -800000; i <= 80000; ++i) {  // exp on [-80, 8]: softmax arguments are <= 0
    float x = i * 1e-4f;
    double r = std::exp(double(x));
    ee = std::max(ee, std::fabs(speed::cpu::fast_exp(x) - r) / r);
  }
  for (int i = -200000; i <= 200000; ++i) {
    float x = i * 1e-4f;
    et = std::max(et, std::fabs(speed::cpu::fast_tanh(x) - std::tanh(double(x))));
  }
  expect(ee < 3e-7, "fast_exp relative error on [-80, 8]", fmt(ee));
  expect(et < 5e-7, "fast_tanh absolute error on [-20, 20]", fmt(et));
  expect(speed::cpu::fast_tanh(1e30f) == speed::cpu::fast_tanh(50.f) && speed::cpu::fast_exp(-1e30f) >= 0 &&
             std::isfinite(speed::cpu::fast_exp(1e30f)),
         "fast math saturates without NaN or Inf");
}

}  // namespace

int main() {
  int nt = 0, nf = 0;
  for (const OpCase& c : op_cases()) {
    if (c.modes & kThreads) {
      ++nt;
      if (c.uses_gemm) {
        for (bool builtin : {true, false}) {
          speed::cpu_force_builtin_gemm(builtin);
          threads_case(c, builtin ? " [builtin gemm]" : std::string(" [") + speed::cpu_gemm_name() + "]");
        }
        speed::cpu_force_builtin_gemm(false);
      } else {
        threads_case(c, "");
      }
    }
    if (c.modes & kF32) {
      ++nf;
      f32_case(c);
    }
  }
  expect(nt >= 8 && nf >= 2, "the op table has threads and float32 cases", std::to_string(nt) + ", " + std::to_string(nf));
  test_fast_math();
  return finish("test_cpu_ops");
}
