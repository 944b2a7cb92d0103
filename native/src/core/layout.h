// The parameter layout of DiT: names, shapes and offsets in DiT's state_dict
// order, the fixed 2D sin-cos position embedding, and analytic FLOP counts.
// Internal to native/src/core (the graph and the bench use it).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "speed/dit.h"

namespace speed {

// Element offsets inside the flat trainable buffer.
struct BlockOffsets {
  size_t qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b, ada_w, ada_b;
};

struct DiTLayout {
  std::vector<ParamInfo> params;  // pos_embed first (offset 0 in its own buffer)
  size_t num_trainable = 0;       // elements in the flat trainable buffer
  size_t pos_numel = 0;
  size_t x_w = 0, x_b = 0;                    // x_embedder.proj
  size_t t0_w = 0, t0_b = 0, t2_w = 0, t2_b = 0;  // t_embedder.mlp.0 / .2
  size_t y_table = 0;
  bool has_y = false;
  std::vector<BlockOffsets> blocks;
  size_t f_lin_w = 0, f_lin_b = 0, f_ada_w = 0, f_ada_b = 0;  // final_layer
};

constexpr int kFreqDim = 256;          // DiT's TimestepEmbedder frequency_embedding_size
constexpr double kMaxPeriod = 10000.0;
constexpr double kLnEps = 1e-6;

DiTLayout make_layout(const DiTConfig& cfg);

// pos_embed [L, D] in float64: reference §4 (first D/2 channels: column index).
std::vector<double> pos_embed_2d(int hidden, int grid);

// Analytic FLOPs per image (multiply-add = 2 FLOPs).
//   forward = 2 * (matmul weights) * tokens  [x_embedder, qkv, proj, fc1, fc2, final linear]
//           + 2 * (per-image matmul weights)  [t_embedder MLP, adaLN Linears]
//           + 4 * L^2 * D per block           [Q K^T and P V]
//   backward = 2 * forward; train step = 3 * forward.
double dit_forward_flops_per_image(const DiTConfig& cfg);

}  // namespace speed
