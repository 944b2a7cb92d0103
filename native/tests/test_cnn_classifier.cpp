// The CNN classifier (a feature network) and the backend ops it trains with:
// conv2d_backward and ReLU against finite differences in float64 (and
// conv2d_backward's result independent of the thread count); the whole model's
// forward against a naive host forward, its backward against finite differences
// in float64; AdamW steps learn a small separable set; argument errors.
#include <algorithm>
#include <cmath>

#include "speed/cnn.h"
#include "classifier_test_util.h"

using namespace speed;
using clst::host_ce;

// ---- ops -----------------------------------------------------------------------------------

static double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// L = <conv(x, w) + b, r>: dL/dy = r, so conv2d_backward(dy = r) must give dL/dx, dL/dw, dL/db.
static void conv_backward_case(const Conv2dShape& s0, std::mt19937_64& rng) {
  auto be = make_cpu_backend<double>(3);
  Conv2dShape s = s0;
  const size_t nx = size_t(s.N) * s.Ci * s.H * s.W, nw = size_t(s.Co) * s.Ci * s.kh * s.kw;
  const size_t ny = size_t(s.N) * s.Co * s.Ho() * s.Wo();
  auto x = ditt::normal_vec<double>(rng, nx, 1.0);
  auto w = ditt::normal_vec<double>(rng, nw, 0.5);
  auto b = ditt::normal_vec<double>(rng, s.Co, 0.5);
  auto r = ditt::normal_vec<double>(rng, ny, 1.0);
  std::vector<double> dx(nx, 7.0), dw(nw, 7.0), db(s.Co, 7.0), y(ny);
  be->conv2d_backward(x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data(), s);
  auto L = [&]() {
    be->conv2d_forward(x.data(), w.data(), b.data(), y.data(), s, false);
    return dot(y, r);
  };
  const double h = 1e-3;  // L is linear in each argument: the central difference is exact up to rounding
  char what[160];
  std::snprintf(what, sizeof what, "conv %dx%dx%dx%d -> %d k%dx%d s%d pad %d/%d/%d/%d", s.N, s.Ci, s.H, s.W, s.Co,
                s.kh, s.kw, s.stride, s.pad_t, s.pad_l, s.pad_b, s.pad_r);
  auto check = [&](std::vector<double>& v, const std::vector<double>& g, const char* name) {
    double worst = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = L();
      v[i] = keep - h;
      const double dn = L();
      v[i] = keep;
      const double num = (up - dn) / (2 * h);
      worst = std::max(worst, std::fabs(num - g[i]) / (1 + std::fabs(num)));
    }
    CHECK(worst < 1e-9, "%s: d%s worst error %.3g", what, name, worst);
  };
  check(x, dx, "x");
  check(w, dw, "w");
  check(b, db, "b");

  // dx = null (a first layer) leaves dw and db unchanged; one thread gives the same bits
  auto be1 = make_cpu_backend<double>(1);
  std::vector<double> dw1(nw), db1(s.Co), dx1(nx);
  be1->conv2d_backward(x.data(), w.data(), r.data(), nullptr, dw1.data(), db1.data(), s);
  CHECK(dw1 == dw && db1 == db, "%s: dw/db differ with dx null or one thread", what);
  be1->conv2d_backward(x.data(), w.data(), r.data(), dx1.data(), dw1.data(), nullptr, s);
  CHECK(dx1 == dx, "%s: dx differs between 1 and 3 threads", what);
}

static void conv_backward() {
  std::mt19937_64 rng(5);
  auto shape = [](int N, int Ci, int H, int W, int Co, int k, int stride, int pt, int pl, int pb, int pr) {
    Conv2dShape s;
    s.N = N, s.Ci = Ci, s.H = H, s.W = W, s.Co = Co, s.kh = s.kw = k, s.stride = stride;
    s.pad_t = pt, s.pad_l = pl, s.pad_b = pb, s.pad_r = pr;
    return s;
  };
  conv_backward_case(shape(2, 3, 6, 5, 4, 3, 1, 1, 1, 1, 1), rng);  // the CNN's conv
  conv_backward_case(shape(3, 2, 7, 6, 3, 3, 2, 1, 1, 1, 1), rng);  // its stride-2 conv, odd size
  conv_backward_case(shape(1, 2, 5, 5, 2, 3, 2, 0, 0, 1, 1), rng);  // asymmetric pads
  conv_backward_case(shape(2, 3, 4, 4, 5, 1, 1, 0, 0, 0, 0), rng);  // 1x1
  Conv2dShape big = shape(1, 1, 40, 40, 2, 3, 1, 1, 1, 1, 1);       // 1600 pixels: two im2col tiles
  conv_backward_case(big, rng);
  Conv2dShape many = shape(19, 2, 5, 5, 3, 3, 1, 1, 1, 1, 1);       // more samples than sample groups
  conv_backward_case(many, rng);
  // N = 0: dw and db are zero
  auto be = make_cpu_backend<float>(2);
  Conv2dShape e = shape(0, 2, 4, 4, 3, 3, 1, 1, 1, 1, 1);
  std::vector<float> dw(3 * 2 * 9, 5.f), db(3, 5.f), w(3 * 2 * 9, 1.f);
  float dummy = 0;
  be->conv2d_backward(&dummy, w.data(), &dummy, nullptr, dw.data(), db.data(), e);
  CHECK(std::all_of(dw.begin(), dw.end(), [](float v) { return v == 0.f; }) &&
            std::all_of(db.begin(), db.end(), [](float v) { return v == 0.f; }),
        "N = 0: dw/db not zeroed");
  Conv2dShape bad = shape(1, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1);
  ditt::expect_error([&] { be->conv2d_backward(&dummy, w.data(), &dummy, nullptr, dw.data(), db.data(), bad); },
                     "stride must be 1 or 2", "conv2d_backward stride 3");
}

static void relu() {
  auto be = make_cpu_backend<double>(2);
  std::mt19937_64 rng(9);
  const size_t n = 5000;
  auto x = ditt::normal_vec<double>(rng, n, 1.0);
  auto r = ditt::normal_vec<double>(rng, n, 1.0);
  std::vector<double> y(n), dx(n), tmp(n);
  be->relu_forward(x.data(), y.data(), n);
  be->relu_backward(y.data(), r.data(), dx.data(), n);
  const double h = 1e-6;
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    CHECK(y[i] == std::max(x[i], 0.0), "relu_forward[%zu]", i);
    if (std::fabs(x[i]) <= 2 * h) continue;  // the kink
    double xp = x[i] + h, xm = x[i] - h, yp, ym;
    be->relu_forward(&xp, &yp, 1);
    be->relu_forward(&xm, &ym, 1);
    worst = std::max(worst, std::fabs(r[i] * (yp - ym) / (2 * h) - dx[i]));
  }
  CHECK(worst < 1e-9, "relu_backward vs finite differences: worst %.3g", worst);
  // in place (y = x, dx = dy) as the CNN runs them
  tmp = x;
  be->relu_forward(tmp.data(), tmp.data(), n);
  CHECK(tmp == y, "in-place relu_forward");
  tmp = r;
  be->relu_backward(y.data(), tmp.data(), tmp.data(), n);
  CHECK(tmp == dx, "in-place relu_backward");
}

// ---- the model -------------------------------------------------------------------------------

static CNNConfig tiny() {
  CNNConfig c;
  c.input_size = 8;  // 8 -> 4 -> 2
  c.in_channels = 2;
  c.channels = {3, 4};
  c.fc_hidden = 6;
  c.num_classes = 5;
  return c;
}

template <typename T>
static std::vector<double> param(const CNNClassifier<T>& m, const std::string& name) {
  for (const ParamInfo& p : m.params())
    if (p.name == name) {
      std::vector<T> v(p.numel);
      m.read_param(name, Slot::Model, v.data());
      return std::vector<double>(v.begin(), v.end());
    }
  return {};
}

// The forward written out with loops (cross-correlation as torch's conv2d, NCHW
// flatten), sharing nothing with the backend: returns {features, logits}.
static std::pair<std::vector<double>, std::vector<double>> naive_forward(const CNNClassifier<double>& m,
                                                                          const std::vector<double>& x, int N) {
  const CNNConfig& c = m.config();
  std::vector<double> a = x;
  int C = c.in_channels, S = c.input_size;
  for (int i = 0; i < 2 * c.stages(); ++i) {
    const int Co = c.channels[i / 2], st = i % 2 ? 2 : 1, So = (S + 2 - 3) / st + 1;
    auto w = param(m, "features." + std::to_string(2 * i) + ".weight");
    auto b = param(m, "features." + std::to_string(2 * i) + ".bias");
    std::vector<double> o(size_t(N) * Co * So * So);
    for (int n = 0; n < N; ++n)
      for (int co = 0; co < Co; ++co)
        for (int oy = 0; oy < So; ++oy)
          for (int ox = 0; ox < So; ++ox) {
            double s = b[co];
            for (int ci = 0; ci < C; ++ci)
              for (int ky = 0; ky < 3; ++ky)
                for (int kx = 0; kx < 3; ++kx) {
                  const int iy = oy * st - 1 + ky, ix = ox * st - 1 + kx;
                  if (iy < 0 || iy >= S || ix < 0 || ix >= S) continue;
                  s += w[((co * C + ci) * 3 + ky) * 3 + kx] * a[((size_t(n) * C + ci) * S + iy) * S + ix];
                }
            o[((size_t(n) * Co + co) * So + oy) * So + ox] = std::max(s, 0.0);
          }
    a = o;
    C = Co;
    S = So;
  }
  auto lin = [&](const std::vector<double>& in, int K, const std::string& name, int M, bool relu) {
    auto w = param(m, name + ".weight");
    auto b = param(m, name + ".bias");
    std::vector<double> out(size_t(N) * M);
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < M; ++j) {
        double s = b[j];
        for (int k = 0; k < K; ++k) s += w[size_t(j) * K + k] * in[size_t(n) * K + k];
        out[size_t(n) * M + j] = relu ? std::max(s, 0.0) : s;
      }
    return out;
  };
  auto f = lin(a, C * S * S, "fc1", c.fc_hidden, true);
  return {f, lin(f, c.fc_hidden, "fc2", c.num_classes, false)};
}

static void names_and_init() {
  auto be = make_cpu_backend<double>(1);
  CNNClassifier<double> m(tiny(), be);
  m.init(11);
  const char* want[] = {"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
                        "features.4.weight", "features.4.bias", "features.6.weight", "features.6.bias",
                        "fc1.weight",        "fc1.bias",        "fc2.weight",        "fc2.bias"};
  CHECK(m.params().size() == 12, "%zu parameters", m.params().size());
  for (size_t i = 0; i < 12 && i < m.params().size(); ++i)
    CHECK(m.params()[i].name == want[i], "parameter %zu is %s, expected %s", i, m.params()[i].name.c_str(), want[i]);
  CHECK(m.params()[8].shape == std::vector<int64_t>({6, 16}), "fc1.weight shape");
  CHECK(m.params()[2].shape == std::vector<int64_t>({3, 3, 3, 3}), "features.2.weight shape");
  // torch's default: weight and bias uniform in +-1/sqrt(fan_in), filling that range
  for (const ParamInfo& p : m.params()) {
    const ParamInfo& wp = p.shape.size() >= 2 ? p : *(&p - 1);
    const double bound = 1.0 / std::sqrt(double(wp.numel) / wp.shape[0]);
    auto v = param(m, p.name);
    double mx = 0;
    for (double e : v) mx = std::max(mx, std::fabs(e));
    CHECK(mx <= bound && (v.size() < 20 || mx > 0.7 * bound), "%s: max |value| %.4g, bound %.4g", p.name.c_str(), mx,
          bound);
  }
  CNNClassifier<double> m2(tiny(), be);
  m2.init(11);
  CHECK(param(m2, "fc1.weight") == param(m, "fc1.weight"), "init is not a function of the seed");
  m2.init(12);
  CHECK(param(m2, "fc1.weight") != param(m, "fc1.weight"), "seeds 11 and 12 give the same init");
}

static void gradcheck() {
  const CNNConfig cfg = tiny();
  auto be = make_cpu_backend<double>(2);
  CNNClassifier<double> m(cfg, be);
  m.init(3);
  std::mt19937_64 rng(17);
  const int N = 4, K = cfg.num_classes, D = cfg.fc_hidden;
  auto x = ditt::normal_vec<double>(rng, size_t(N) * 2 * 8 * 8, 1.0);
  std::vector<int32_t> y = {0, 3, 4, 3};
  ClassifierStepResult r = m.loss_and_grad(x.data(), y.data(), N);
  CHECK(std::fabs(r.loss - host_ce(r.logits, y, K)) <= 1e-12 * (1 + r.loss), "loss %.15g vs host CE %.15g", r.loss,
        host_ce(r.logits, y, K));
  std::vector<double> f(size_t(N) * D), z(size_t(N) * K);
  m.features(x.data(), N, f.data());
  m.logits(x.data(), N, z.data());
  auto ref = naive_forward(m, x, N);
  double ef = 0, ez = 0, fmax = 0;
  for (size_t i = 0; i < f.size(); ++i) ef = std::max(ef, std::fabs(f[i] - ref.first[i])), fmax = std::max(fmax, f[i]);
  for (size_t i = 0; i < z.size(); ++i) ez = std::max(ez, std::fabs(z[i] - ref.second[i]));
  CHECK(ef < 1e-12 && ez < 1e-12, "forward vs naive loops: features %.3g, logits %.3g", ef, ez);
  CHECK(fmax > 1e-3, "features are all ~0");
  for (size_t i = 0; i < z.size(); ++i) CHECK(z[i] == r.logits[i], "logits() and loss_and_grad disagree at %zu", i);

  auto objective = [&]() {
    std::vector<double> zz(size_t(N) * K);
    m.logits(x.data(), N, zz.data());
    return host_ce(zz, y, K);
  };
  // second-order central differences of a small step: a ReLU kink inside +-h would spoil one
  clst::check_gradients(m, objective, rng, 1e-5, 6, false, 1e-6, 1e-9, "gradcheck");
}

// Four classes, each a bright 3x3 square in its own quadrant of an 8x8 noisy image.
static void separable_set(std::mt19937_64& rng, int N, std::vector<float>& x, std::vector<int32_t>& y) {
  std::normal_distribution<double> noise(0.0, 0.3);
  std::uniform_int_distribution<int> cls(0, 3), jitter(0, 1);
  x.assign(size_t(N) * 64, 0.f);
  y.assign(N, 0);
  for (int n = 0; n < N; ++n) {
    y[n] = cls(rng);
    for (int i = 0; i < 64; ++i) x[size_t(n) * 64 + i] = static_cast<float>(noise(rng)) - 0.5f;
    const int oy = (y[n] / 2) * 4 + jitter(rng), ox = (y[n] % 2) * 4 + jitter(rng);
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) x[size_t(n) * 64 + (oy + a) * 8 + ox + b] += 1.5f;
  }
}

static void learns() {
  CNNConfig cfg;
  cfg.input_size = 8;
  cfg.in_channels = 1;
  cfg.channels = {8, 8};
  cfg.fc_hidden = 16;
  cfg.num_classes = 4;
  auto be = make_cpu_backend<float>(2);
  CNNClassifier<float> m(cfg, be);
  m.init(5);
  std::mt19937_64 rng(23);
  std::vector<float> x, xt;
  std::vector<int32_t> y, yt;
  OptimHyper hp;
  hp.lr = 3e-3;
  hp.weight_decay = 0.01;
  hp.max_grad_norm = 1.0;
  double first = 0, last = 0;
  for (int s = 0; s < 150; ++s) {
    separable_set(rng, 32, x, y);
    ClassifierStepResult r = m.train_step(x.data(), y.data(), 32, hp);
    CHECK(!r.skipped && std::isfinite(r.loss), "step %d skipped or non-finite", s);
    if (s == 0) first = r.loss;
    last = r.loss;
  }
  separable_set(rng, 200, xt, yt);
  std::vector<float> z(200 * 4);
  m.logits(xt.data(), 200, z.data());
  int correct = 0;
  for (int n = 0; n < 200; ++n)
    correct += static_cast<int>(std::max_element(&z[n * 4], &z[n * 4] + 4) - &z[n * 4]) == yt[n];
  std::printf("learns: loss %.4f -> %.4f, held-out %d/200 correct, step %lld\n", first, last, correct,
              static_cast<long long>(m.step()));
  CHECK(m.step() == 150, "step counter %lld", static_cast<long long>(m.step()));
  CHECK(last < 0.2 * first, "loss did not fall: %.4f -> %.4f", first, last);
  CHECK(correct >= 190, "only %d/200 held-out images correct", correct);
}

static void errors() {
  auto be = make_cpu_backend<float>(1);
  CNNConfig c = tiny();
  c.channels = {};
  ditt::expect_error([&] { CNNClassifier<float> m(c, be); }, "CNNConfig.channels", "no stages");
  c = tiny();
  c.channels = {4, 0};
  ditt::expect_error([&] { CNNClassifier<float> m(c, be); }, "channels[1] must be", "zero width");
  c = tiny();
  c.num_classes = 1;
  ditt::expect_error([&] { CNNClassifier<float> m(c, be); }, "CNNConfig.num_classes", "one class");
  c = tiny();
  c.fc_hidden = 0;
  ditt::expect_error([&] { CNNClassifier<float> m(c, be); }, "CNNConfig.fc_hidden", "fc_hidden 0");
  c = tiny();
  c.input_size = 0;
  ditt::expect_error([&] { CNNClassifier<float> m(c, be); }, "CNNConfig.input_size", "input 0");
  ditt::expect_error([&] { CNNClassifier<float> m(tiny(), nullptr); }, "backend is null", "null backend");
  CNNClassifier<float> m(tiny(), be);
  m.init(1);
  std::vector<float> x(2 * 8 * 8, 0.f), buf(1000);
  std::vector<int32_t> y = {5};
  ditt::expect_error([&] { m.loss_and_grad(x.data(), y.data(), 1); }, "outside [0, 5)", "label 5");
  ditt::expect_error([&] { m.loss_and_grad(x.data(), y.data(), 0); }, "N must be >= 1", "N = 0");
  ditt::expect_error([&] { m.features(nullptr, 1, buf.data()); }, "x is null", "null x");
  ditt::expect_error([&] { m.read_param("fc2.weight", Slot::EMA, buf.data()); }, "no EMA", "ema slot");
  ditt::expect_error([&] { m.read_param("fc2.wieght", Slot::Model, buf.data()); }, "unknown CNN parameter", "name");
  ditt::expect_error([&] { m.write_param("fc2.weight", Slot::Grad, buf.data()); }, "read-only", "grad write");
  ditt::expect_error([&] { m.set_step(-1); }, "step must be >= 0", "negative step");
  size_t total = 0;
  for (const ParamInfo& p : m.params()) total += p.numel;
  CHECK(total == m.num_trainable(), "num_trainable %zu vs sum %zu", m.num_trainable(), total);
}

int main() {
  try {
    conv_backward();
    relu();
    names_and_init();
    gradcheck();
    learns();
    errors();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_cnn_classifier");
}
