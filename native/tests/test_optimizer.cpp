// optimizer_step: AdamW (PyTorch semantics, decoupled weight decay, bias
// correction) + global-norm clipping + EMA against values computed by hand here
// over 3 steps; the returned norm; the skip on a NaN loss or an Inf gradient, and
// on an update that would store a non-finite parameter, moment or EMA value (huge
// lr, overflowing v, a NaN already in the state): everything bitwise untouched;
// identical results for 1 and 2 threads.
#include <cmath>
#include <vector>

#include "cpu_test_util.h"
#include "speed/cpu.h"

using namespace cputest;

namespace {

template <typename T>
void hand_computed(const char* tname, double tol) {
  auto be = speed::make_cpu_backend<T>(2);
  const size_t n = 5;
  std::vector<T> p = {T(0.5), T(-1.25), T(2.0), T(0.0), T(3.0)};
  std::vector<T> m(n, T(0)), v(n, T(0)), ema = p;
  std::vector<double> P(p.begin(), p.end()), Mo(n, 0), Vo(n, 0), E(P);
  const double grads[3][5] = {{0.3, -0.4, 1.2, 0.0, -2.0},
                              {-0.1, 0.2, 0.05, 0.7, 0.3},
                              {4.0, -3.0, 0.5, 0.25, 1.0}};
  speed::OptimHyper hp;
  hp.lr = 0.01;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.max_grad_norm = 1.0;
  hp.ema_decay = 0.8;
  std::string t = tname;
  for (int s = 0; s < 3; ++s) {
    hp.step = s + 1;
    std::vector<T> g(grads[s], grads[s] + n);
    T losses[2] = {T(0.3), T(1.7)};
    speed::OptimResult r = be->optimizer_step(p.data(), g.data(), m.data(), v.data(), ema.data(), n, hp,
                                              losses, 2);
    // by hand
    double norm = 0;
    for (size_t i = 0; i < n; ++i) norm += double(g[i]) * double(g[i]);
    norm = std::sqrt(norm);
    double coef = std::min(1.0, 1.0 / (norm + 1e-6));
    for (size_t i = 0; i < n; ++i) {
      double gi = double(g[i]) * coef;
      P[i] -= 0.01 * 0.1 * P[i];
      Mo[i] = 0.9 * Mo[i] + 0.1 * gi;
      Vo[i] = 0.95 * Vo[i] + 0.05 * gi * gi;
      double mh = Mo[i] / (1 - std::pow(0.9, s + 1)), vh = Vo[i] / (1 - std::pow(0.95, s + 1));
      P[i] -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
      E[i] = 0.8 * E[i] + 0.2 * P[i];
    }
    std::string st = t + " step " + std::to_string(s + 1);
    expect(!r.skipped && std::fabs(r.grad_norm - norm) < 1e-12 * norm, st + " grad norm before clipping",
           fmt(r.grad_norm) + " vs " + fmt(norm));
    double e = std::max({rel_err(p, P), rel_err(m, Mo), rel_err(v, Vo), rel_err(ema, E)});
    expect(e < tol, st + " params, moments, EMA vs hand-computed AdamW + clip + EMA", "rel " + fmt(e));
  }
  // no clipping, no EMA: max_grad_norm <= 0, ema_decay < 0
  std::vector<T> p2 = {T(1.0)}, m2 = {T(0)}, v2 = {T(0)}, e2 = {T(7)}, g2 = {T(10.0)};
  speed::OptimHyper h2;
  h2.lr = 0.1;
  h2.max_grad_norm = 0;
  h2.ema_decay = -1;
  h2.step = 1;
  T l = T(1);
  be->optimizer_step(p2.data(), g2.data(), m2.data(), v2.data(), e2.data(), 1, h2, &l, 1);
  // step 1 with bias correction: update = lr * g / (|g| + eps) = 0.1 (sign of g)
  expect(std::fabs(double(p2[0]) - (1.0 - 0.1 * 10.0 / (10.0 + 1e-8))) < tol && e2[0] == T(7) &&
             std::fabs(double(m2[0]) - 1.0) < tol,
         t + " no clipping (max_grad_norm 0) and no EMA (decay < 0)");
}

template <typename T>
void skips(const char* tname) {
  auto be = speed::make_cpu_backend<T>(2);
  Rng rng(3);
  const size_t n = 300001;  // several norm chunks
  auto p = rng.vec<T>(n), g = rng.vec<T>(n), m = rng.vec<T>(n, 0, 0.1), v = rng.vec<T>(n, 0, 0.1);
  auto ema = rng.vec<T>(n);
  speed::OptimHyper hp;
  hp.max_grad_norm = 1.0;
  std::string t = tname;
  {  // NaN loss
    auto p0 = p, m0 = m, v0 = v, e0 = ema;
    T losses[3] = {T(1), std::numeric_limits<T>::quiet_NaN(), T(2)};
    auto r = be->optimizer_step(p.data(), g.data(), m.data(), v.data(), ema.data(), n, hp, losses, 3);
    expect(r.skipped && bitwise_equal(p, p0) && bitwise_equal(m, m0) && bitwise_equal(v, v0) &&
               bitwise_equal(ema, e0),
           t + " NaN loss: skipped, params/moments/EMA bitwise untouched");
  }
  {  // Inf gradient
    auto p0 = p, m0 = m, v0 = v, e0 = ema, gi = g;
    gi[n - 2] = std::numeric_limits<T>::infinity();
    T losses[1] = {T(1)};
    auto r = be->optimizer_step(p.data(), gi.data(), m.data(), v.data(), ema.data(), n, hp, losses, 1);
    expect(r.skipped && !std::isfinite(r.grad_norm) && bitwise_equal(p, p0) && bitwise_equal(m, m0) &&
               bitwise_equal(v, v0) && bitwise_equal(ema, e0),
           t + " Inf gradient: skipped, params/moments/EMA bitwise untouched");
  }
  // Finite loss and gradient, but an update that would store a non-finite value:
  // skipped (update_nonfinite), nothing written. Positions: inside the AVX2 body of
  // a chunk and the last element (the generic tail of the last chunk).
  auto untouched_after = [&](const std::string& what, speed::OptimHyper h, std::vector<T> gi,
                             std::vector<T> mi) {
    auto p0 = p, v0 = v, e0 = ema, m0 = mi;
    T losses[2] = {T(1), T(0.5)};
    auto r = be->optimizer_step(p.data(), gi.data(), mi.data(), v.data(), ema.data(), n, h, losses, 2);
    expect(r.skipped && r.update_nonfinite && bitwise_equal(p, p0) && bitwise_equal(mi, m0) &&
               bitwise_equal(v, v0) && bitwise_equal(ema, e0),
           t + " " + what + ": skipped as a non-finite update, params/moments/EMA bitwise untouched",
           "skipped " + std::to_string(r.skipped) + " update_nonfinite " + std::to_string(r.update_nonfinite));
  };
  {  // lr = the largest finite value: every parameter would become +-Inf or NaN (lr=1e38)
    speed::OptimHyper h = hp;
    h.lr = double(std::numeric_limits<T>::max());
    untouched_after("lr = max finite", h, g, m);
  }
  // float: one gradient element whose square overflows float: v would become Inf while
  // the parameter itself stays finite (the old step wrote that Inf into v). (In double
  // such a gradient overflows the norm first and is skipped as a gradient.)
  const T huge = T(1e30);
  for (size_t at : {n / 2 + 3, n - 1}) {
    if (sizeof(T) != 4) break;
    speed::OptimHyper h = hp;
    h.max_grad_norm = 0;  // no clipping, so the huge element reaches v
    auto gi = g;
    gi[at] = huge;
    untouched_after("g[" + std::to_string(at) + "]^2 overflows v", h, gi, m);
  }
  {  // a state already damaged (a NaN in m, e.g. from a checkpoint of a diverged run)
    auto mi = m;
    mi[12345] = std::numeric_limits<T>::quiet_NaN();
    untouched_after("NaN already in m", hp, g, mi);
  }
  {  // a large but finite update is applied, and not flagged
    speed::OptimHyper h = hp;
    h.lr = 1e3;
    auto pa = p, ma = m, va = v, ea = ema;
    T losses[1] = {T(1)};
    auto r = be->optimizer_step(pa.data(), g.data(), ma.data(), va.data(), ea.data(), n, h, losses, 1);
    expect(!r.skipped && !r.update_nonfinite && !bitwise_equal(pa, p), t + " lr 1e3: applied (finite), not flagged");
  }
  {  // same bits with 1 and 2 threads
    auto b1 = speed::make_cpu_backend<T>(1);
    auto pa = p, ma = m, va = v, ea = ema, pb = p, mb = m, vb = v, eb = ema;
    T losses[1] = {T(1)};
    auto ra = b1->optimizer_step(pa.data(), g.data(), ma.data(), va.data(), ea.data(), n, hp, losses, 1);
    auto rb = be->optimizer_step(pb.data(), g.data(), mb.data(), vb.data(), eb.data(), n, hp, losses, 1);
    expect(!ra.skipped && ra.grad_norm == rb.grad_norm && bitwise_equal(pa, pb) && bitwise_equal(ma, mb) &&
               bitwise_equal(va, vb) && bitwise_equal(ea, eb) && !bitwise_equal(pa, p),
           t + " identical for 1 and 2 threads (300001 elements)");
  }
}

}  // namespace

int main() {
  hand_computed<double>("double", 1e-12);
  hand_computed<float>("float", 2e-6);
  skips<float>("float");
  skips<double>("double");
  return finish("test_optimizer");
}
