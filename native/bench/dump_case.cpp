// dump_case: writes one DiT forward/loss/backward case as a safetensors file
// for tools/torch_crosscheck.py (a PyTorch DiT loads the weights and compares).
//
//   dump_case --out case.safetensors [--preset DiT-Ti/4] [--size 8] [--channels 3]
//             [--classes 10] [--dropout 0.1] [--learn-sigma 1] [--vb-scale 1]
//             [--seed 0] [--batch 4] [--float32]
//
// File format: standard safetensors (8-byte little-endian header length, JSON
// header, raw little-endian data; the header is padded with spaces to 8 bytes).
// Keys (F32 unless noted):
//   param.<name>    every parameter under its DiT state_dict name, including
//                   param.pos_embed [1, T, D] (the fixed sin-cos table); all
//                   trainable values are random and non-zero
//   grad.<name>     d(mean_n loss_n)/d(param) for every trainable parameter
//   input.x0        [N, C, H, W] in [-1, 1], with some values exactly -1 and 1
//   input.eps       [N, C, H, W] the noise
//   input.t         [N] I32; input.t[0] = 0 (the discretized-likelihood branch)
//   input.y         [N] I32 labels (num_classes = the null label, when present)
//   input.weight    [N] per-sample weights of the mse term
//   input.xt        [N, C, H, W] = sqrt_abar[t] x0 + sqrt_1m_abar[t] eps
//   output.model_out [N, Cout, H, W] the model applied to (xt, t, y)
//   output.loss, output.mse, output.vb   [N] per sample (loss = mse + vb_scale vb)
//   __metadata__ (strings): preset, input_size, in_channels, num_classes,
//                 class_dropout_prob, learn_sigma ("true"/"false"), vb_scale,
//                 T ("1000"), schedule ("linear"), dtype (the compute precision)
// The diffusion tables are those of the linear schedule with T = 1000.
// The case is computed in float64 (weights and inputs first rounded to float32,
// so the stored F32 values are exactly what was used) unless --float32.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "speed/bench.h"
#include "speed/cpu.h"
#include "speed/dit.h"

using namespace speed;

namespace {

struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename T>
Entry f32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<T>& v) {
  std::vector<float> f(v.begin(), v.end());
  Entry e{name, "F32", shape, std::string(reinterpret_cast<const char*>(f.data()), f.size() * sizeof(float))};
  return e;
}

Entry i32(const std::string& name, const std::vector<int32_t>& v) {
  return Entry{name, "I32", {static_cast<int64_t>(v.size())},
               std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t))};
}

void write_safetensors(const std::string& path, const std::vector<Entry>& es,
                       const std::vector<std::pair<std::string, std::string>>& meta) {
  std::ostringstream h;
  h << "{\"__metadata__\":{";
  for (size_t i = 0; i < meta.size(); ++i)
    h << (i ? "," : "") << "\"" << meta[i].first << "\":\"" << meta[i].second << "\"";
  h << "}";
  size_t off = 0;
  for (const Entry& e : es) {
    h << ",\"" << e.name << "\":{\"dtype\":\"" << e.dtype << "\",\"shape\":[";
    for (size_t k = 0; k < e.shape.size(); ++k) h << (k ? "," : "") << e.shape[k];
    h << "],\"data_offsets\":[" << off << "," << off + e.bytes.size() << "]}";
    off += e.bytes.size();
  }
  h << "}";
  std::string header = h.str();
  while (header.size() % 8) header += ' ';
  uint64_t n = header.size();
  unsigned char len[8];
  for (int k = 0; k < 8; ++k) len[k] = static_cast<unsigned char>(n >> (8 * k));  // little-endian
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("dump_case: cannot open '" + path + "' for writing");
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(header.data(), header.size());
  for (const Entry& e : es) f.write(e.bytes.data(), e.bytes.size());
  if (!f) throw Error("dump_case: write to '" + path + "' failed");
}

template <typename T>
T round32(double v) { return static_cast<T>(static_cast<float>(v)); }

struct Args {
  std::string out, preset = "DiT-Ti/4";
  int size = 8, channels = 3, classes = 10, batch = 4;
  double dropout = 0.1, vb_scale = 1.0;
  bool learn_sigma = true, float32 = false;
  uint64_t seed = 0;
};

template <typename T>
void run(const Args& a) {
  DiTConfig base;
  base.input_size = a.size;
  base.in_channels = a.channels;
  base.num_classes = a.classes;
  base.class_dropout_prob = a.dropout;
  base.learn_sigma = a.learn_sigma;
  DiTConfig c = dit_preset(a.preset, base);
  c.validate();
  DiT<T> m(c, make_cpu_backend<T>(0));
  m.init(a.seed);
  DiffusionTables tb = linear_diffusion_tables(1000);
  m.set_tables(tb);
  std::mt19937_64 rng(a.seed * 7919 + 17);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<Entry> es;
  // weights: DiT's init plus noise, so that the zero-initialised (adaLN-Zero)
  // parameters are non-zero and every gradient is exercised
  for (const ParamInfo& p : m.params()) {
    std::vector<T> v(p.numel);
    m.read_param(p.name, Slot::Model, v.data());
    if (p.trainable) {
      for (T& x : v) x = round32<T>(static_cast<double>(x) + 0.03 * nd(rng));
      m.write_param(p.name, Slot::Model, v.data());
    }
    es.push_back(f32("param." + p.name, p.shape, v));
  }
  const int N = a.batch, C = c.in_channels, S = c.input_size, HW = S * S;
  const size_t n = size_t(N) * C * HW;
  std::vector<T> x0(n), eps(n), w(N), xt(n);
  for (T& v : x0) v = round32<T>(std::max(-1.0, std::min(1.0, 0.6 * nd(rng))));
  x0[0] = T(-1);
  x0[1] = T(1);
  for (T& v : eps) v = round32<T>(nd(rng));
  std::vector<int32_t> t(N), y(N, 0);
  std::uniform_int_distribution<int> ut(1, 999), uy(0, std::max(0, c.class_rows() - 1));
  for (int i = 0; i < N; ++i) {
    t[i] = i == 0 ? 0 : ut(rng);
    y[i] = c.num_classes > 0 ? uy(rng) : 0;
    w[i] = round32<T>(0.5 + (i % 3) * 0.5);
  }
  if (c.class_rows() > c.num_classes && N > 1) y[N - 1] = c.num_classes;  // the null label
  for (int i = 0; i < N; ++i)
    for (int k = 0; k < C * HW; ++k) {
      size_t j = size_t(i) * C * HW + k;
      xt[j] = static_cast<T>(tb.sqrt_abar[t[i]] * x0[j] + tb.sqrt_1m_abar[t[i]] * eps[j]);
    }
  std::vector<T> loss, mse, vb;
  m.loss_and_grad(x0.data(), eps.data(), t.data(), y.data(), w.data(), N, a.vb_scale, &loss, &mse, &vb);
  for (const ParamInfo& p : m.params()) {
    if (!p.trainable) continue;
    std::vector<T> g(p.numel);
    m.read_param(p.name, Slot::Grad, g.data());
    es.push_back(f32("grad." + p.name, p.shape, g));
  }
  std::vector<T> out(size_t(N) * c.out_channels() * HW);
  m.forward(xt.data(), t.data(), y.data(), N, out.data(), false);
  const std::vector<int64_t> img = {N, C, S, S}, vec = {N};
  es.push_back(f32("input.x0", img, x0));
  es.push_back(f32("input.eps", img, eps));
  es.push_back(i32("input.t", t));
  es.push_back(i32("input.y", y));
  es.push_back(f32("input.weight", vec, w));
  es.push_back(f32("input.xt", img, xt));
  es.push_back(f32("output.model_out", {N, c.out_channels(), S, S}, out));
  es.push_back(f32("output.loss", vec, loss));
  es.push_back(f32("output.mse", vec, mse));
  es.push_back(f32("output.vb", vec, vb));
  std::ostringstream dp, vs;
  dp << a.dropout;
  vs << a.vb_scale;
  write_safetensors(a.out, es,
                    {{"preset", a.preset}, {"input_size", std::to_string(a.size)},
                     {"in_channels", std::to_string(a.channels)}, {"num_classes", std::to_string(a.classes)},
                     {"class_dropout_prob", dp.str()}, {"learn_sigma", a.learn_sigma ? "true" : "false"},
                     {"vb_scale", vs.str()}, {"T", "1000"}, {"schedule", "linear"},
                     {"dtype", sizeof(T) == 8 ? "float64" : "float32"}});
  double mean = 0;
  for (T v : loss) mean += double(v) / N;
  std::printf("dump_case: wrote %s (%s, %zu parameters, batch %d, mean loss %.6f)\n", a.out.c_str(),
              a.preset.c_str(), m.params().size(), N, mean);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--float32") { a.float32 = true; continue; }
    if (k == "-h" || k == "--help") {
      std::printf("usage: dump_case --out FILE [--preset DiT-Ti/4] [--size 8] [--channels 3] [--classes 10]\n"
                  "                 [--dropout 0.1] [--learn-sigma 1] [--vb-scale 1] [--seed 0] [--batch 4] [--float32]\n");
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "dump_case: %s needs a value\n", k.c_str());
      return 2;
    }
    std::string v = argv[++i];
    char* end = nullptr;
    auto num = [&]() {
      double x = std::strtod(v.c_str(), &end);
      if (v.empty() || *end) {
        std::fprintf(stderr, "dump_case: %s expects a number, got '%s'\n", k.c_str(), v.c_str());
        std::exit(2);
      }
      return x;
    };
    if (k == "--out") a.out = v;
    else if (k == "--preset") a.preset = v;
    else if (k == "--size") a.size = int(num());
    else if (k == "--channels") a.channels = int(num());
    else if (k == "--classes") a.classes = int(num());
    else if (k == "--dropout") a.dropout = num();
    else if (k == "--learn-sigma") a.learn_sigma = num() != 0;
    else if (k == "--vb-scale") a.vb_scale = num();
    else if (k == "--seed") a.seed = uint64_t(num());
    else if (k == "--batch") a.batch = int(num());
    else {
      std::fprintf(stderr, "dump_case: unknown option '%s' (see --help)\n", k.c_str());
      return 2;
    }
  }
  if (a.out.empty()) {
    std::fprintf(stderr, "dump_case: --out FILE is required\n");
    return 2;
  }
  try {
    if (a.float32) run<float>(a);
    else run<double>(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dump_case: %s\n", e.what());
    return 1;
  }
  return 0;
}
