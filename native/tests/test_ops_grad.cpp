// The op table's grad mode (native/src/core/op_table.h): every case marked kGrad, on the CPU
// backend in float64 (2 threads):
//   - forward against the case's float64 reference; outputs it does not cover must be written
//     (every output is poisoned with NaN first);
//   - backward against central finite differences of L = Σ r·out (r = the upstream gradient),
//     for every input gradient; chunks of a gradient that belong to another op keep their sentinel;
//   - tensors backward overwrites besides the gradients against the case's reference_bwd;
//   - (+=): gradients that follow the accum flag equal the (=) result plus their initial value;
//   - gradients forward computes itself (iddpm_loss's dout) against finite differences;
//   - error cases throw a speed::Error saying what was wrong.
// Cases that run a matrix product run again with the built-in GEMM forced.
//   test_ops_grad [filter]   (filter: a substring of the case names)
#include <cstring>
#include <memory>

#include "../src/core/op_table.h"
#include "cpu_test_util.h"
#include "speed/cpu.h"

using namespace cputest;
using namespace speed;
using namespace speed::ops;
using V = std::vector<double>;

namespace {

std::shared_ptr<Backend<double>> B;

bool is_output(Role r) { return r == Role::Out || r == Role::InOut; }

// The elements of v where region(i) holds (all when region is null).
V pick(const V& v, const std::function<bool(size_t)>& region, bool inside = true) {
  V o;
  for (size_t i = 0; i < v.size(); ++i)
    if (!region || region(i) == inside) o.push_back(v[i]);
  return o;
}

void grad_case(const OpCase& c, const std::string& suffix) {
  const std::string tag = c.name + suffix;
  const Host h0 = make_host(c);
  if (!c.throws.empty()) {
    bool threw = false;
    std::string msg = "no error";
    try {
      CaseRun<double> r(*B, c);
      r.load_inputs(h0);
      r.forward();
      if (c.has_grad()) r.backward(false);
    } catch (const Error& e) {
      msg = e.what();
      threw = msg.find(c.throws) != std::string::npos;
    }
    expect(threw, tag + " throws speed::Error naming '" + c.throws + "'", "(" + msg + ")");
    return;
  }
  CaseRun<double> r(*B, c);
  // forward from the inputs of `h`; returns h with the outputs replaced
  auto run_fwd = [&](const Host& h) {
    r.load_inputs(h);
    r.forward();
    Host o = h;
    for (size_t i = 0; i < c.t.size(); ++i)
      if (is_output(c.t[i].role)) o.v[i] = r.download(int(i));
    return o;
  };
  const Host got = run_fwd(h0);
  Host ref = h0;
  ref.set.assign(c.t.size(), 0);
  if (c.reference) c.reference(ref);
  for (size_t i = 0; i < c.t.size(); ++i) {
    if (!is_output(c.t[i].role)) continue;
    if (ref.set[i]) {
      const double e = rel_err(got.v[i], ref.v[i], c.ref_floor);
      expect(e <= c.ref_tol, tag + " " + c.t[i].name + " vs float64 reference", "rel " + fmt(e));
    } else {
      expect(all_finite(got.v[i]), tag + " " + c.t[i].name + " written (finite)");
    }
  }
  for (const FwdGrad& g : c.fwd_grads) {
    Host hin = h0;
    V num = numeric_grad(hin.v[g.of], [&] { return g.objective(run_fwd(hin)); });
    const double e = rel_err(pick(got.v[g.out], g.region), pick(num, g.region));
    expect(e < c.fd_tol, tag + " " + g.what, "rel " + fmt(e));
  }
  if (!c.has_grad()) return;

  // backward after a forward from h0: the forward outputs, the gradients and what backward
  // overwrote; gradients start from their fill (accum ones in a (+=) run; those with a region:
  // the sentinel), else poisoned
  auto backward_results = [&](bool accum) {
    r.load_inputs(h0);
    r.forward();
    Host o = h0;
    for (size_t i = 0; i < c.t.size(); ++i)
      if (is_output(c.t[i].role)) o.v[i] = r.download(int(i));
    for (size_t i = 0; i < c.t.size(); ++i) {
      const TensorSpec& s = c.t[i];
      if (s.role != Role::DIn) continue;
      if ((accum && s.accum) || s.region)
        r.upload(int(i), h0.v[i]);
      else
        r.poison(int(i));
    }
    r.backward(accum);
    for (size_t i = 0; i < c.t.size(); ++i) {
      const TensorSpec& s = c.t[i];
      if (s.role == Role::DIn || (s.role == Role::DOut && s.bwd_writes)) o.v[i] = r.download(int(i));
    }
    return o;
  };
  const Host g = backward_results(false);
  auto loss = [&](const Host& hin) {
    const Host o = run_fwd(hin);
    double s = 0;
    for (size_t d = 0; d < c.t.size(); ++d)
      if (c.t[d].role == Role::DOut) s += dotv(hin.v[d], o.v[c.t[d].of]);
    return s;
  };
  for (size_t i = 0; i < c.t.size(); ++i) {
    const TensorSpec& s = c.t[i];
    if (s.role != Role::DIn) continue;
    Host hin = h0;
    const V num = numeric_grad(hin.v[s.of], [&] { return loss(hin); });
    const double e = rel_err(pick(g.v[i], s.region), pick(num, s.region));
    expect(e < c.fd_tol, tag + " " + s.name + " vs finite differences", "rel " + fmt(e));
    if (s.region) {
      const V outside = pick(g.v[i], s.region, false), sentinel = pick(h0.v[i], s.region, false);
      expect(bitwise_equal(outside, sentinel), tag + " backward writes only its chunks of " + s.name);
    }
  }
  if (c.reference_bwd) {
    Host rb = g;
    for (size_t i = 0; i < c.t.size(); ++i)
      if (c.t[i].role == Role::DOut) rb.v[i] = h0.v[i];  // the values backward read
    rb.set.assign(c.t.size(), 0);
    c.reference_bwd(rb);
    for (size_t i = 0; i < c.t.size(); ++i) {
      if (!rb.set[i]) continue;
      const double e = rel_err(g.v[i], rb.v[i]);
      expect(e < c.fd_tol, tag + " " + c.t[i].name + " overwritten by backward as expected", "rel " + fmt(e));
    }
  }
  bool any_accum = false;
  for (const TensorSpec& s : c.t) any_accum |= s.role == Role::DIn && s.accum;
  if (!any_accum) return;
  const Host ga = backward_results(true);
  for (size_t i = 0; i < c.t.size(); ++i) {
    const TensorSpec& s = c.t[i];
    if (s.role != Role::DIn) continue;
    V want = g.v[i];
    if (s.accum)
      for (size_t k = 0; k < want.size(); ++k) want[k] += h0.v[i][k];
    const double e = rel_err(ga.v[i], want);
    expect(e < c.accum_tol, tag + " " + s.name + (s.accum ? " accumulates (+=)" : " (=) in an accumulating call"),
           "rel " + fmt(e));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  B = make_cpu_backend<double>(2);
  int cases = 0;
  for (const OpCase& c : op_cases()) {
    if (!(c.modes & kGrad) || (filter && !std::strstr(c.name.c_str(), filter))) continue;
    ++cases;
    try {
      grad_case(c, "");
      if (c.uses_gemm) {  // the built-in kernel through the same checks
        cpu_force_builtin_gemm(true);
        grad_case(c, " [builtin gemm]");
        cpu_force_builtin_gemm(false);
      }
    } catch (const std::exception& e) {
      cpu_force_builtin_gemm(false);
      expect(false, c.name + " ran without an exception", e.what());
    }
  }
  std::printf("%d op cases (grad mode)\n", cases);
  expect(cases > 0, "the filter selects at least one case");
  return finish("test_ops_grad");
}
