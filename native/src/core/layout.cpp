#include "layout.h"

#include <cmath>

#include "speed/philox.h"

namespace speed {

void ParamLayout::add_pos_embed(int64_t L, int64_t D) {
  ParamInfo pos;
  pos.name = "pos_embed";
  pos.shape = {1, L, D};
  pos.numel = static_cast<size_t>(L * D);
  pos.offset = 0;
  pos.trainable = false;
  params.push_back(pos);
  pos_numel = pos.numel;
}

size_t ParamLayout::add(const std::string& name, std::vector<int64_t> shape) {
  ParamInfo pi;
  pi.name = name;
  pi.shape = std::move(shape);
  pi.numel = 1;
  for (int64_t s : pi.shape) pi.numel *= static_cast<size_t>(s);
  pi.offset = num_trainable;
  num_trainable += pi.numel;
  params.push_back(pi);
  return pi.offset;
}

AttnMlpOffsets add_attn_mlp(ParamLayout& lay, const std::string& b, int64_t D, int64_t H) {
  AttnMlpOffsets o;
  o.qkv_w = lay.add(b + "attn.qkv.weight", {3 * D, D});
  o.qkv_b = lay.add(b + "attn.qkv.bias", {3 * D});
  o.proj_w = lay.add(b + "attn.proj.weight", {D, D});
  o.proj_b = lay.add(b + "attn.proj.bias", {D});
  o.fc1_w = lay.add(b + "mlp.fc1.weight", {H, D});
  o.fc1_b = lay.add(b + "mlp.fc1.bias", {H});
  o.fc2_w = lay.add(b + "mlp.fc2.weight", {D, H});
  o.fc2_b = lay.add(b + "mlp.fc2.bias", {D});
  return o;
}

double InitRng::next() {
  if (pos == 4) {
    Philox4 c{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), param, tag}};
    Philox4 w = philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    ++block;
    const double inv = 1.0 / 4294967296.0;
    double u[4];
    for (int k = 0; k < 4; ++k) u[k] = (w.v[k] + 0.5) * inv;
    if (normal) {
      const double two_pi = 6.283185307179586476925286766559;
      double r0 = std::sqrt(-2.0 * std::log(u[0])), r1 = std::sqrt(-2.0 * std::log(u[2]));
      buf[0] = r0 * std::cos(two_pi * u[1]);
      buf[1] = r0 * std::sin(two_pi * u[1]);
      buf[2] = r1 * std::cos(two_pi * u[3]);
      buf[3] = r1 * std::sin(two_pi * u[3]);
    } else {
      for (int k = 0; k < 4; ++k) buf[k] = u[k];
    }
    pos = 0;
  }
  return buf[pos++];
}

DiTLayout make_layout(const DiTConfig& c) {
  DiTLayout lay;
  const int64_t D = c.hidden_size, C = c.in_channels, p = c.patch_size, L = c.num_tokens();
  const int64_t H = c.mlp_hidden(), Co = c.out_channels();
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { return lay.add(name, std::move(shape)); };
  // pos_embed is registered directly on DiT, so state_dict lists it first.
  lay.add_pos_embed(L, D);

  lay.x_w = add("x_embedder.proj.weight", {D, C, p, p});
  lay.x_b = add("x_embedder.proj.bias", {D});
  lay.t0_w = add("t_embedder.mlp.0.weight", {D, kFreqDim});
  lay.t0_b = add("t_embedder.mlp.0.bias", {D});
  lay.t2_w = add("t_embedder.mlp.2.weight", {D, D});
  lay.t2_b = add("t_embedder.mlp.2.bias", {D});
  if (c.num_classes > 0) {
    lay.has_y = true;
    lay.y_table = add("y_embedder.embedding_table.weight", {c.class_rows(), D});
  }
  for (int i = 0; i < c.depth; ++i) {
    std::string b = "blocks." + std::to_string(i) + ".";
    BlockOffsets o;
    static_cast<AttnMlpOffsets&>(o) = add_attn_mlp(lay, b, D, H);
    o.ada_w = add(b + "adaLN_modulation.1.weight", {6 * D, D});
    o.ada_b = add(b + "adaLN_modulation.1.bias", {6 * D});
    lay.blocks.push_back(o);
  }
  lay.f_lin_w = add("final_layer.linear.weight", {p * p * Co, D});
  lay.f_lin_b = add("final_layer.linear.bias", {p * p * Co});
  lay.f_ada_w = add("final_layer.adaLN_modulation.1.weight", {2 * D, D});
  lay.f_ada_b = add("final_layer.adaLN_modulation.1.bias", {2 * D});
  return lay;
}

std::vector<double> pos_embed_2d(int D, int grid) {
  // models.py get_2d_sincos_pos_embed: meshgrid(grid_w, grid_h) puts the column
  // index first; each half is [sin(pos w), cos(pos w)], w_i = 10000^(-i/(D/4)).
  const int q = D / 4;
  std::vector<double> out(static_cast<size_t>(grid) * grid * D);
  for (int r = 0; r < grid; ++r) {
    for (int col = 0; col < grid; ++col) {
      double* e = &out[(static_cast<size_t>(r) * grid + col) * D];
      for (int i = 0; i < q; ++i) {
        double w = std::pow(10000.0, -static_cast<double>(i) / q);
        e[i] = std::sin(col * w);
        e[q + i] = std::cos(col * w);
        e[2 * q + i] = std::sin(r * w);
        e[3 * q + i] = std::cos(r * w);
      }
    }
  }
  return out;
}

double dit_forward_flops_per_image(const DiTConfig& c) {
  const double D = c.hidden_size, L = c.num_tokens(), H = c.mlp_hidden();
  const double P = static_cast<double>(c.in_channels) * c.patch_size * c.patch_size;
  const double Po = static_cast<double>(c.out_channels()) * c.patch_size * c.patch_size;
  double tok_weights = P * D + c.depth * (3 * D * D + D * D + 2 * D * H) + D * Po;
  double img_weights = kFreqDim * D + D * D + c.depth * 6 * D * D + 2 * D * D;
  double attn = c.depth * 4.0 * L * L * D;
  return 2.0 * tok_weights * L + 2.0 * img_weights + attn;
}

}  // namespace speed
