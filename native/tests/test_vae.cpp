// The whole VAE (speed::VAE) on the CPU backend: float32 against float64 with
// the same random weights (encoder moments, sampled latents, decoder output),
// chunked runs bitwise equal to one chunk, 1 vs 3 threads bitwise, sampling
// = mean + exp(0.5 clamp(logvar)) * Philox eps, the parameter list (names,
// shapes, count of SD's kl-f8), config validation and size errors.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cpu_test_util.h"
#include "speed/cpu.h"
#include "speed/vae.h"

using namespace cputest;
using speed::VAE;
using speed::VAEConfig;

namespace {

// Random weights: conv/linear ~ U(-1,1) * sqrt(3 / fan_in), norms 1 + U(-0.2, 0.2), biases U(-0.1, 0.1).
template <typename T>
void randomize(VAE<T>& m, uint64_t seed) {
  Rng r(seed);
  for (const auto& p : m.params()) {
    std::vector<T> v(p.numel);
    const bool bias = p.shape.size() == 1;
    const bool norm = p.name.find("norm") != std::string::npos;
    const double fan_in = p.shape.size() > 1 ? double(p.numel) / p.shape[0] : 1;
    for (auto& x : v) {
      if (norm && p.name.find("weight") != std::string::npos)
        x = T(1 + r.uniform(-0.2, 0.2));
      else if (bias)
        x = T(r.uniform(-0.1, 0.1));
      else
        x = T(r.uniform() * std::sqrt(3.0 / fan_in));
    }
    m.write_param(p.name, v.data());
  }
}

VAEConfig tiny() {
  VAEConfig c;
  c.block_out_channels = {8, 16};
  c.layers_per_block = 1;
  c.norm_num_groups = 4;
  c.latent_channels = 4;
  return c;
}

template <typename T>
std::vector<T> images(int N, int C, int H, int W, uint64_t seed) {
  Rng r(seed);
  return r.vec<T>(size_t(N) * C * H * W, -1, 1);
}

void test_params() {
  VAEConfig sd;
  auto be = speed::make_cpu_backend<float>(1);
  VAE<float> m(sd, be);
  // diffusers AutoencoderKL (SD kl-f8): 83,653,863 parameters
  expect(m.num_params() == 83653863, "SD kl-f8 has 83653863 parameters", std::to_string(m.num_params()));
  bool has_q = false, has_sc = false, has_up = false;
  for (const auto& p : m.params()) {
    if (p.name == "encoder.mid_block.attentions.0.to_q.weight") has_q = p.shape == std::vector<int64_t>{512, 512};
    if (p.name == "encoder.down_blocks.1.resnets.0.conv_shortcut.weight")
      has_sc = p.shape == std::vector<int64_t>{256, 128, 1, 1};
    if (p.name == "decoder.up_blocks.2.upsamplers.0.conv.weight") has_up = p.shape == std::vector<int64_t>{256, 256, 3, 3};
  }
  expect(has_q && has_sc && has_up, "diffusers names and shapes (to_q [512,512], conv_shortcut, upsamplers)");
  expect(m.unwritten().size() == m.params().size(), "unwritten() lists every parameter before loading");
  expect(sd.down_factor() == 8, "SD down factor 8");
  const double ef = m.encode_flops(256, 256), df = m.decode_flops(256, 256);
  std::printf("     SD kl-f8 at 256x256: encode %.1f GFLOP, decode %.1f GFLOP, activations %.0f MiB per image\n",
              ef / 1e9, df / 1e9, m.activation_bytes(1, 256, 256) / 1048576.0);
  expect(ef > 2e11 && ef < 4e11 && df > 5e11 && df < 8e11, "SD FLOPs at 256x256 in the published range");
  expect(m.activation_bytes(4, 256, 256) > 3.9 * m.activation_bytes(1, 256, 256),
         "activation bytes grow with the chunk");
}

void test_config_errors() {
  auto be = speed::make_cpu_backend<float>(1);
  auto bad = [&](VAEConfig c, const std::string& key) {
    try {
      VAE<float> m(c, be);
    } catch (const speed::Error& e) {
      return std::string(e.what()).find(key) != std::string::npos;
    }
    return false;
  };
  VAEConfig c = tiny();
  c.block_out_channels = {8, 18};
  expect(bad(c, "block_out_channels[1]"), "channels not divisible by groups: error names block_out_channels[1]");
  c = tiny();
  c.block_out_channels = {};
  expect(bad(c, "block_out_channels"), "no levels: error");
  c = tiny();
  c.layers_per_block = 0;
  expect(bad(c, "layers_per_block"), "layers_per_block 0: error");
  VAE<float> m(tiny(), be);
  std::vector<float> x(3 * 6 * 6), z(64);
  bool threw = false;
  try {
    m.encode(x.data(), 1, 6, 5, z.data(), false, 0, 0, 1);
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("multiples of 2") != std::string::npos;
  }
  expect(threw, "encode with W not a multiple of the down factor: error");
  threw = false;
  try {
    std::vector<float> big(1);
    m.decode(big.data(), 1, 200, 100, big.data(), 1);  // 20000 tokens at the lowest resolution
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("at most 16384") != std::string::npos;
  }
  expect(threw, "decode beyond the attention's token bound: error before any allocation");
  threw = false;
  try {
    std::vector<float> nan(16 * 3 * 3 * 3, NAN);
    m.write_param("encoder.conv_in.weight", nan.data());
  } catch (const speed::Error& e) {
    threw = std::string(e.what()).find("not finite") != std::string::npos;
  }
  expect(threw, "write_param refuses non-finite weights");
  threw = false;
  try {
    m.write_param("encoder.nope.weight", x.data());
  } catch (const speed::Error&) {
    threw = true;
  }
  expect(threw, "write_param of an unknown name: error");
}

void test_f32_vs_f64() {
  const VAEConfig c = tiny();
  auto bd = speed::make_cpu_backend<double>(2);
  auto b1 = speed::make_cpu_backend<float>(1), b3 = speed::make_cpu_backend<float>(3);
  VAE<double> md(c, bd);
  VAE<float> m1(c, b1), m3(c, b3);
  randomize(md, 7);
  randomize(m1, 7);
  randomize(m3, 7);
  expect(m1.unwritten().empty(), "every parameter written");
  const int N = 3, H = 12, W = 16, f = c.down_factor(), h = H / f, w = W / f, zc = c.latent_channels;
  auto xd = images<double>(N, 3, H, W, 11);
  std::vector<float> xf(xd.begin(), xd.end());
  std::vector<double> momd(size_t(N) * 2 * zc * h * w);
  std::vector<float> mom1(momd.size()), mom3(momd.size()), momc(momd.size());
  md.encode_moments(xd.data(), N, H, W, momd.data(), N);
  m1.encode_moments(xf.data(), N, H, W, mom1.data(), N);
  m3.encode_moments(xf.data(), N, H, W, mom3.data(), 2);
  int calls = 0, last = 0;
  m1.encode_moments(xf.data(), N, H, W, momc.data(), 1, [&](int done, int total) {
    ++calls;
    last = done * 100 + total;
  });
  expect(rel_err(mom1, momd) < 1e-5, "encoder moments f32 vs f64", "rel " + fmt(rel_err(mom1, momd)));
  expect(bitwise_equal(mom1, mom3), "encoder moments: 1 thread chunk 3 == 3 threads chunk 2, bitwise");
  expect(bitwise_equal(mom1, momc), "encoder moments: chunk 1 == chunk 3, bitwise");
  expect(calls == 3 && last == 303, "progress called once per chunk, last (3, 3)");
  expect(all_finite(momd) && rel_err(momd, std::vector<double>(momd.size(), 0.0)) > 0, "moments finite, non-zero");

  // z = mean; z = mean + exp(0.5 clamp(logvar)) eps, eps = Philox normals of the whole batch
  std::vector<float> zmean(size_t(N) * zc * h * w), zs(zmean.size()), zs1(zmean.size()), eps(zmean.size());
  m1.encode(xf.data(), N, H, W, zmean.data(), false, 0, 0, N);
  m1.encode(xf.data(), N, H, W, zs.data(), true, 1234, 5, N);
  m3.encode(xf.data(), N, H, W, zs1.data(), true, 1234, 5, 1);
  b1->normal(eps.data(), eps.size(), 1234, 5);
  const int per = zc * h * w;
  std::vector<double> want_mean(zmean.size()), want_s(zmean.size());
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < per; ++i) {
      const double mu = mom1[size_t(n) * 2 * per + i], lv = mom1[size_t(n) * 2 * per + per + i];
      want_mean[size_t(n) * per + i] = mu;
      want_s[size_t(n) * per + i] = mu + std::exp(0.5 * std::min(20.0, std::max(-30.0, lv))) * eps[size_t(n) * per + i];
    }
  expect(rel_err(zmean, want_mean) == 0, "encode(sample=false) is the posterior mean");
  expect(rel_err(zs, want_s) < 1e-6, "encode(sample=true) = mean + std * Philox eps", "rel " + fmt(rel_err(zs, want_s)));
  expect(bitwise_equal(zs, zs1), "sampled latents: chunk 1 (3 threads) == one chunk, bitwise");
  std::vector<float> zpart(zmean.size());  // the batch split over two calls: images 0..0, then 1..2
  m1.encode(xf.data(), 1, H, W, zpart.data(), true, 1234, 5, 4);
  m1.encode(xf.data() + 3 * H * W, 2, H, W, zpart.data() + per, true, 1234, 5, 4, {}, 1);
  expect(bitwise_equal(zs, zpart), "sampled latents: split over calls with first_image == one call");

  // decoder
  std::vector<double> zd(zmean.begin(), zmean.end()), yd(size_t(N) * 3 * H * W);
  std::vector<float> y1(yd.size()), y3(yd.size());
  md.decode(zd.data(), N, h, w, yd.data(), N);
  m1.decode(zmean.data(), N, h, w, y1.data(), N);
  m3.decode(zmean.data(), N, h, w, y3.data(), 2);
  expect(rel_err(y1, yd) < 1e-5, "decoder f32 vs f64", "rel " + fmt(rel_err(y1, yd)));
  expect(bitwise_equal(y1, y3), "decoder: 1 thread one chunk == 3 threads chunk 2, bitwise");

  // three levels, 2 layers per block, groups 8, non-square input: f32 vs f64 again
  VAEConfig c3;
  c3.block_out_channels = {8, 16, 16};
  c3.layers_per_block = 2;
  c3.norm_num_groups = 8;
  c3.latent_channels = 3;
  c3.in_channels = 2;
  c3.out_channels = 5;
  VAE<double> d3(c3, bd);
  VAE<float> f3(c3, b3);
  randomize(d3, 9);
  randomize(f3, 9);
  auto x3 = images<double>(2, 2, 16, 8, 5);
  std::vector<float> x3f(x3.begin(), x3.end());
  std::vector<double> m3d(size_t(2) * 6 * 4 * 2), o3d(size_t(2) * 5 * 16 * 8);
  std::vector<float> m3f(m3d.size()), o3f(o3d.size());
  d3.encode_moments(x3.data(), 2, 16, 8, m3d.data(), 2);
  f3.encode_moments(x3f.data(), 2, 16, 8, m3f.data(), 2);
  std::vector<double> z3(size_t(2) * 3 * 4 * 2);
  for (size_t i = 0; i < z3.size(); ++i) z3[i] = std::sin(double(i));
  std::vector<float> z3f(z3.begin(), z3.end());
  d3.decode(z3.data(), 2, 4, 2, o3d.data(), 1);
  f3.decode(z3f.data(), 2, 4, 2, o3f.data(), 1);
  expect(rel_err(m3f, m3d) < 1e-5 && rel_err(o3f, o3d) < 1e-5, "3-level config (in 2, out 5, z 3) f32 vs f64",
         fmt(rel_err(m3f, m3d)) + " / " + fmt(rel_err(o3f, o3d)));
}

}  // namespace

int main() {
  test_params();
  test_config_errors();
  test_f32_vs_f64();
  return finish("test_vae");
}
