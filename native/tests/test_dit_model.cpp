// DiT model structure: config validation, presets, DiT-S/2 state_dict names,
// shapes and parameter count, initialisation (zeros out, determinism,
// statistics, pos_embed formula), and parameter access errors.
#include <cmath>
#include <cstring>

#include "test_dit_util.h"

using namespace speed;
using ditt::expect_error;

static void test_validate() {
  DiTConfig ok;
  ok.validate();
  auto bad = [](auto mutate, const char* needle, const char* what) {
    DiTConfig c;
    mutate(c);
    expect_error([&] { c.validate(); }, needle, what);
  };
  bad([](DiTConfig& c) { c.input_size = 30; c.patch_size = 4; }, "input_size", "input not divisible by patch");
  bad([](DiTConfig& c) { c.patch_size = 0; }, "patch_size", "patch 0");
  bad([](DiTConfig& c) { c.hidden_size = 390; }, "multiple of 4", "hidden not divisible by 4");
  bad([](DiTConfig& c) { c.hidden_size = 384; c.num_heads = 5; }, "num_heads=5", "hidden not divisible by heads");
  bad([](DiTConfig& c) { c.class_dropout_prob = 1.0; }, "class_dropout_prob: expected a number in [0, 1)", "dropout 1");
  bad([](DiTConfig& c) { c.class_dropout_prob = NAN; }, "class_dropout_prob", "dropout NaN");
  bad([](DiTConfig& c) { c.num_classes = -1; }, "num_classes", "negative classes");
  bad([](DiTConfig& c) { c.depth = 0; }, "depth", "depth 0");
  bad([](DiTConfig& c) { c.in_channels = 0; }, "in_channels", "channels 0");
  bad([](DiTConfig& c) { c.mlp_ratio = -1; }, "mlp_ratio", "mlp ratio");
  // the constructor validates too
  DiTConfig c;
  c.hidden_size = 6;
  expect_error([&] { DiT<float> m(c, make_cpu_backend<float>(1)); }, "hidden_size", "constructor validates");

  DiffusionTables t = linear_diffusion_tables(50);
  t.validate();
  t.coef2.pop_back();
  expect_error([&] { t.validate(); }, "DiffusionTables.coef2: expected length 50", "short table");
  t = linear_diffusion_tables(50);
  t.log_beta[3] = INFINITY;
  expect_error([&] { t.validate(); }, "log_beta[3]", "non-finite table");
}

static void test_presets() {
  struct P { const char* name; int depth, hidden, heads, patch; };
  const P ps[] = {{"DiT-Ti/4", 12, 192, 3, 4}, {"DiT-S/2", 12, 384, 6, 2}, {"DiT-B/8", 12, 768, 12, 8},
                  {"DiT-L/2", 24, 1024, 16, 2}, {"DiT-XL/2", 28, 1152, 16, 2}, {"DiT-XL/4", 28, 1152, 16, 4}};
  for (const P& p : ps) {
    DiTConfig base;
    base.in_channels = 3;
    base.num_classes = 10;
    DiTConfig c = dit_preset(p.name, base);
    CHECK(c.depth == p.depth && c.hidden_size == p.hidden && c.num_heads == p.heads && c.patch_size == p.patch,
          "%s: got depth %d hidden %d heads %d patch %d", p.name, c.depth, c.hidden_size, c.num_heads, c.patch_size);
    CHECK(c.in_channels == 3 && c.num_classes == 10, "%s: preset must keep the base's other fields", p.name);
  }
  expect_error([] { dit_preset("DiT-XS/2"); }, "unknown DiT preset 'DiT-XS/2': expected one of DiT-Ti/2", "bad preset");
  expect_error([] { dit_preset("DiT-S/3"); }, "DiT-XL/8", "bad patch lists all names");
}

static void test_dit_s2_names() {
  DiTConfig c = dit_preset("DiT-S/2");
  c.input_size = 32;
  c.in_channels = 4;
  c.num_classes = 1000;
  c.class_dropout_prob = 0.1;
  c.learn_sigma = true;
  DiT<float> m(c, make_cpu_backend<float>(1));
  // D = 384, p = 2, C = 4, Cout = 8, tokens = 16 * 16 = 256, 1000 classes + null
  typedef std::pair<std::string, std::vector<int64_t>> NS;
  std::vector<NS> want = {
      {"pos_embed", {1, 256, 384}},
      {"x_embedder.proj.weight", {384, 4, 2, 2}},
      {"x_embedder.proj.bias", {384}},
      {"t_embedder.mlp.0.weight", {384, 256}},
      {"t_embedder.mlp.0.bias", {384}},
      {"t_embedder.mlp.2.weight", {384, 384}},
      {"t_embedder.mlp.2.bias", {384}},
      {"y_embedder.embedding_table.weight", {1001, 384}},
  };
  for (int i = 0; i < 12; ++i) {
    std::string b = "blocks." + std::to_string(i) + ".";
    std::vector<NS> blk = {
        {b + "attn.qkv.weight", {1152, 384}},        {b + "attn.qkv.bias", {1152}},
        {b + "attn.proj.weight", {384, 384}},        {b + "attn.proj.bias", {384}},
        {b + "mlp.fc1.weight", {1536, 384}},         {b + "mlp.fc1.bias", {1536}},
        {b + "mlp.fc2.weight", {384, 1536}},         {b + "mlp.fc2.bias", {384}},
        {b + "adaLN_modulation.1.weight", {2304, 384}}, {b + "adaLN_modulation.1.bias", {2304}},
    };
    want.insert(want.end(), blk.begin(), blk.end());
  }
  want.push_back({"final_layer.linear.weight", {32, 384}});
  want.push_back({"final_layer.linear.bias", {32}});
  want.push_back({"final_layer.adaLN_modulation.1.weight", {768, 384}});
  want.push_back({"final_layer.adaLN_modulation.1.bias", {768}});

  const auto& got = m.params();
  CHECK(got.size() == want.size(), "DiT-S/2: %zu parameters, expected %zu", got.size(), want.size());
  size_t flat = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    CHECK(got[i].name == want[i].first, "param %zu: name '%s', expected '%s'", i, got[i].name.c_str(),
          want[i].first.c_str());
    CHECK(got[i].shape == want[i].second, "param %s: wrong shape", got[i].name.c_str());
    size_t n = 1;
    for (int64_t s : want[i].second) n *= s;
    CHECK(got[i].numel == n, "param %s: numel %zu, expected %zu", got[i].name.c_str(), got[i].numel, n);
    CHECK(got[i].trainable == (i != 0), "param %s: trainable flag", got[i].name.c_str());
    if (i > 0) {
      CHECK(got[i].offset == flat, "param %s: offset %zu, expected %zu (state_dict order, packed)",
            got[i].name.c_str(), got[i].offset, flat);
      flat += n;
    }
  }
  // By hand: x_embedder 384*16 + 384 = 6,528; t_embedder 384*256 + 384 + 384*384 + 384
  // = 246,528; y table 1001*384 = 384,384; per block qkv 443,520 + proj 147,840 +
  // fc1 591,360 + fc2 590,208 + adaLN 887,040 = 2,659,968, x12 = 31,919,616; final
  // 32*384 + 32 + 768*384 + 768 = 308,000. Total 32,865,056 (DiT's "33M" for S/2).
  CHECK(m.num_trainable() == 32865056u, "DiT-S/2 trainable count %zu, expected 32,865,056", m.num_trainable());

  // unconditional: no y_embedder; no dropout: no null row
  DiTConfig u = c;
  u.num_classes = 0;
  u.depth = 1;
  DiT<float> mu(u, make_cpu_backend<float>(1));
  for (const ParamInfo& p : mu.params())
    CHECK(p.name.find("y_embedder") == std::string::npos, "unconditional model has %s", p.name.c_str());
  DiTConfig nd = u;
  nd.num_classes = 10;
  nd.class_dropout_prob = 0;
  DiT<float> mn(nd, make_cpu_backend<float>(1));
  CHECK(mn.params()[7].name == "y_embedder.embedding_table.weight" && mn.params()[7].shape[0] == 10,
        "no dropout: table has num_classes rows");
}

template <typename T>
static std::vector<T> read(const DiT<T>& m, const std::string& name, Slot s = Slot::Model) {
  size_t n = 0;
  for (const ParamInfo& p : m.params())
    if (p.name == name) n = p.numel;
  std::vector<T> v(n);
  m.read_param(name, s, v.data());
  return v;
}

static void test_init() {
  DiTConfig c = ditt::small_config(8);
  DiT<float> a(c, make_cpu_backend<float>(2)), b(c, make_cpu_backend<float>(1)), d(c, make_cpu_backend<float>(1));
  a.init(7);
  b.init(7);
  d.init(8);
  bool same = true, differs = false;
  for (const ParamInfo& p : a.params()) {
    auto va = read(a, p.name), vb = read(b, p.name), vd = read(d, p.name);
    same = same && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
    if (p.trainable && std::memcmp(va.data(), vd.data(), va.size() * sizeof(float)) != 0) differs = true;
    auto ve = read(a, p.name, Slot::EMA);
    CHECK(std::memcmp(va.data(), ve.data(), va.size() * sizeof(float)) == 0, "%s: EMA != weights after init",
          p.name.c_str());
    if (p.trainable) {
      auto vm = read(a, p.name, Slot::AdamM);
      for (float x : vm) CHECK(x == 0, "%s: Adam m not zero", p.name.c_str());
    }
    // statistics of each initialiser
    const std::string& n = p.name;
    double s2 = 0, mx = 0;
    for (float x : va) { s2 += double(x) * x; mx = std::max(mx, std::fabs(double(x))); }
    double sd = std::sqrt(s2 / va.size());
    bool zero = n.find(".bias") != std::string::npos || n.find("adaLN_modulation") != std::string::npos ||
                n.rfind("final_layer.linear", 0) == 0;
    if (!p.trainable) continue;
    if (zero) {
      CHECK(mx == 0, "%s must be zero-initialised (max |x| = %g)", n.c_str(), mx);
    } else if (n.rfind("t_embedder", 0) == 0 || n.rfind("y_embedder", 0) == 0) {
      CHECK(std::fabs(sd - 0.02) < 0.003, "%s: std %g, expected N(0, 0.02)", n.c_str(), sd);
    } else {
      double fan_out = double(p.shape[0]), fan_in = double(p.numel) / fan_out;
      double bound = std::sqrt(6.0 / (fan_in + fan_out));
      CHECK(mx <= bound && mx > 0.9 * bound, "%s: max |x| %g, Xavier bound %g", n.c_str(), mx, bound);
      CHECK(std::fabs(sd - bound / std::sqrt(3.0)) < 0.1 * bound, "%s: std %g, expected %g", n.c_str(), sd,
            bound / std::sqrt(3.0));
    }
  }
  CHECK(same, "init(7) differs between two models (or thread counts)");
  CHECK(differs, "init(7) and init(8) gave identical weights");
  CHECK(a.step() == 0, "step after init");

  // adaLN-Zero: a new model outputs exactly zeros
  std::mt19937_64 rng(3);
  const int N = 3;
  auto x = ditt::normal_vec<float>(rng, size_t(N) * 3 * 64, 1.0);
  std::vector<int32_t> t = {0, 500, 999}, y = {0, 4, 5};
  std::vector<float> out(size_t(N) * 6 * 64, 1.0f);
  a.forward(x.data(), t.data(), y.data(), N, out.data(), false);
  bool zeros = true;
  for (float v : out) zeros = zeros && v == 0.0f;
  CHECK(zeros, "freshly initialised model must output exactly zeros");

  // pos_embed: first D/2 channels encode the column, last D/2 the row;
  // each half [sin(pos w_i), cos(pos w_i)], w_i = 10000^(-i/(D/4))
  auto pe = read(a, "pos_embed");
  const int D = c.hidden_size, g = c.grid(), q = D / 4;
  double worst = 0;
  for (int k = 0; k < g * g; ++k) {
    int col = k % g, row = k / g;
    for (int i = 0; i < q; ++i) {
      double w = 1.0 / std::pow(10000.0, double(i) / q);
      double want[4] = {std::sin(col * w), std::cos(col * w), std::sin(row * w), std::cos(row * w)};
      for (int h = 0; h < 4; ++h) worst = std::max(worst, std::fabs(pe[size_t(k) * D + h * q + i] - want[h]));
    }
  }
  CHECK(worst < 1e-6, "pos_embed differs from the formula by %g", worst);
  CHECK(pe[1 * D + 0] == float(std::sin(1.0)) && pe[g * D + D / 2] == float(std::sin(1.0)) &&
            pe[g * D + 0] == 0.0f,
        "pos_embed: token 1 is column 1, token g is row 1");
}

static void test_param_access() {
  DiTConfig c = ditt::small_config(8);
  DiT<float> m(c, make_cpu_backend<float>(1));
  m.init(1);
  std::vector<float> buf(64 * 3 * 2 * 2), back(buf.size());
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = 0.001f * i;
  for (Slot s : {Slot::Model, Slot::EMA, Slot::AdamM, Slot::AdamV}) {
    m.write_param("x_embedder.proj.weight", s, buf.data());
    m.read_param("x_embedder.proj.weight", s, back.data());
    CHECK(buf == back, "write/read round trip, slot %d", int(s));
  }
  m.read_param("x_embedder.proj.weight", Slot::Model, back.data());
  CHECK(buf == back, "other slots must not touch the model slot");
  expect_error([&] { m.read_param("blocks.0.attn.qkv.weights", Slot::Model, back.data()); },
               "did you mean 'blocks.0.attn.qkv.weight'", "did-you-mean");
  expect_error([&] { m.read_param("nonsense", Slot::Model, back.data()); }, "unknown DiT parameter 'nonsense'",
               "unknown name");
  expect_error([&] { m.write_param("x_embedder.proj.weight", Slot::Grad, buf.data()); }, "read-only",
               "grad write");
  expect_error([&] { m.read_param("pos_embed", Slot::AdamM, back.data()); }, "not trainable", "pos_embed adam");
  // argument checks of the steps
  std::vector<float> x(3 * 64), w(1, 1.0f), out(6 * 64);
  std::vector<int32_t> t = {5}, y = {1};
  TrainHyper hp;
  expect_error([&] { m.train_step(x.data(), t.data(), y.data(), w.data(), 1, hp); }, "set_tables", "no tables");
  m.set_tables(linear_diffusion_tables(100));
  t[0] = 100;
  expect_error([&] { m.train_step(x.data(), t.data(), y.data(), w.data(), 1, hp); }, "t[0] = 100 is outside [0, 100)",
               "t range");
  t[0] = 5;
  y[0] = 6;
  expect_error([&] { m.forward(x.data(), t.data(), y.data(), 1, out.data(), false); }, "y[0] = 6 is outside [0, 6)",
               "y range");
  expect_error([&] { m.forward(x.data(), t.data(), y.data(), 0, out.data(), false); }, "batch size N must be >= 1",
               "N = 0");
  y[0] = 1;
  SampleStepCoefs sc;
  sc.cfg = true;
  DiTConfig nd = c;
  nd.class_dropout_prob = 0;
  DiT<float> mn(nd, make_cpu_backend<float>(1));
  expect_error([&] { mn.sample_step(x.data(), 5, y.data(), 1, sc, false); }, "null label", "cfg without null row");
}

int main() {
  try {
    test_validate();
    test_presets();
    test_dit_s2_names();
    test_init();
    test_param_access();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_dit_model");
}
