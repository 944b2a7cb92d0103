// Parameter layouts of the core's models (DiT, the ViT and CNN classifiers): names,
// shapes and offsets in state_dict order, their seeded initialisation, the fixed
// 2D sin-cos position embedding, and DiT's analytic FLOP counts.
// Internal to native/src/core (the graphs and the bench use it).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "speed/dit.h"

namespace speed {

// A flat parameter layout: the fixed pos_embed [1, L, D] first (in its own
// buffer, offset 0), then the trainable parameters at consecutive offsets of
// one flat buffer (the same layout serves params, grads, Adam moments, EMA).
struct ParamLayout {
  std::vector<ParamInfo> params;
  size_t num_trainable = 0;  // elements in the flat trainable buffer
  size_t pos_numel = 0;

  void add_pos_embed(int64_t L, int64_t D);
  // Appends a trainable parameter; returns its offset in the flat buffer.
  size_t add(const std::string& name, std::vector<int64_t> shape);
};

// Offsets of a transformer block's attention and MLP Linears (timm / DiT names
// blocks.i.attn.{qkv,proj}.{weight,bias}, blocks.i.mlp.{fc1,fc2}.{weight,bias}).
struct AttnMlpOffsets {
  size_t qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b;
};
// Appends them under `prefix` ("blocks.3.") for width D and MLP hidden size H.
AttnMlpOffsets add_attn_mlp(ParamLayout& lay, const std::string& prefix, int64_t D, int64_t H);

// A model's read_param / write_param: `impl` has find(name) (throws for unknown
// names), slot_ptr(param, slot, writing) and the backend `be`.
template <typename T, typename Impl>
void read_param_of(const Impl& impl, const std::string& name, Slot slot, T* host) {
  const ParamInfo& p = impl.find(name);
  if (!host) throw Error("read_param('" + name + "'): host buffer is null");
  impl.be->to_host(host, impl.slot_ptr(p, slot, false), p.numel * sizeof(T));
}
template <typename T, typename Impl>
void write_param_of(Impl& impl, const std::string& name, Slot slot, const T* host) {
  const ParamInfo& p = impl.find(name);
  if (!host) throw Error("write_param('" + name + "'): host buffer is null");
  impl.be->to_device(impl.slot_ptr(p, slot, true), host, p.numel * sizeof(T));
}

// Host-side generator for init: Philox keyed by the seed, with its own counter
// space per parameter (counter word 2 = parameter index, word 3 = a tag that
// differs between models) so the init never overlaps the noise stream and does
// not depend on which other parameters drew numbers. Uniform numbers in (0, 1),
// or standard normals (Box-Muller) when `normal`.
struct InitRng {
  uint64_t seed;
  uint32_t param, tag;
  bool normal;
  uint64_t block = 0;
  double buf[4] = {0, 0, 0, 0};
  int pos = 4;
  InitRng(uint64_t s, uint32_t p, uint32_t t, bool n) : seed(s), param(p), tag(t), normal(n) {}
  double next();
};

// Xavier-uniform on [out, in] = [shape[0], numel / shape[0]] (a patch Conv2d
// weight viewed as [D, C*p*p]), from InitRng(seed, index, tag).
template <typename T>
void xavier_uniform(T* dst, const ParamInfo& p, uint64_t seed, uint32_t index, uint32_t tag) {
  const double fan_out = static_cast<double>(p.shape[0]);
  const double fan_in = static_cast<double>(p.numel) / fan_out;
  const double bound = std::sqrt(6.0 / (fan_in + fan_out));
  InitRng r(seed, index, tag, false);
  for (size_t k = 0; k < p.numel; ++k) dst[k] = static_cast<T>((2.0 * r.next() - 1.0) * bound);
}

// torch's default init of a Conv2d / Linear weight or bias (kaiming_uniform_ with
// a = sqrt(5) for the weight, which is uniform in +-1/sqrt(fan_in), and the same
// bound for the bias): n values uniform in +-1/sqrt(fan_in), from InitRng(seed, index, tag).
template <typename T>
void torch_default_uniform(T* dst, size_t n, double fan_in, uint64_t seed, uint32_t index, uint32_t tag) {
  const double bound = 1.0 / std::sqrt(fan_in);
  InitRng r(seed, index, tag, false);
  for (size_t k = 0; k < n; ++k) dst[k] = static_cast<T>((2.0 * r.next() - 1.0) * bound);
}

// Activations of one transformer block that backward reads (DiT and ViT blocks).
template <typename T>
struct BlockActs {
  T *x_in, *mod;              // block input [N,L,D], adaLN output [N,6D] (DiT only)
  T *h1, *mean1, *rstd1;      // LayerNorm (+ modulate) 1 output and its statistics
  T *qkv, *att, *lse, *po;    // qkv [N,L,3D], attention out, lse [N,heads,L], proj out
  T *xmid;                    // residual stream after the attention branch
  T *h2, *mean2, *rstd2;      // LayerNorm (+ modulate) 2
  T *f1pre, *f1, *f2;         // fc1 pre-activation and GELU output [N,L,H], fc2 out
};

// Points every buffer of `a` at new memory from alloc(n elements) -> T*: `mod`
// only when with_mod (else null), `xmid` only when own_xmid (else x_in: the
// stream is updated in place).
template <typename T, typename Alloc>
void alloc_block_acts(BlockActs<T>& a, Alloc&& alloc, size_t B, size_t L, size_t D, size_t H, size_t heads,
                      bool with_mod, bool own_xmid) {
  const size_t BLD = B * L * D;
  a.x_in = alloc(BLD);
  a.mod = with_mod ? alloc(B * 6 * D) : nullptr;
  a.h1 = alloc(BLD);
  a.mean1 = alloc(B * L);
  a.rstd1 = alloc(B * L);
  a.qkv = alloc(3 * BLD);
  a.att = alloc(BLD);
  a.lse = alloc(B * heads * L);
  a.po = alloc(BLD);
  a.xmid = own_xmid ? alloc(BLD) : a.x_in;
  a.h2 = alloc(BLD);
  a.mean2 = alloc(B * L);
  a.rstd2 = alloc(B * L);
  a.f1pre = alloc(B * L * H);
  a.f1 = alloc(B * L * H);
  a.f2 = alloc(BLD);
}

// Element offsets inside the flat trainable buffer.
struct BlockOffsets : AttnMlpOffsets {
  size_t ada_w, ada_b;
};

struct DiTLayout : ParamLayout {
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

// pos_embed [L, D] in float64, as DiT's get_2d_sincos_pos_embed (first D/2 channels: column index).
std::vector<double> pos_embed_2d(int hidden, int grid);

// Uploads pos_embed_2d(hidden, grid), cast to T, to the backend buffer dst.
template <typename T>
void upload_pos_embed(Backend<T>& be, T* dst, int hidden, int grid) {
  std::vector<double> pe = pos_embed_2d(hidden, grid);
  std::vector<T> tmp(pe.begin(), pe.end());
  be.to_device(dst, tmp.data(), tmp.size() * sizeof(T));
}

// Analytic FLOPs per image (multiply-add = 2 FLOPs).
//   forward = 2 * (matmul weights) * tokens  [x_embedder, qkv, proj, fc1, fc2, final linear]
//           + 2 * (per-image matmul weights)  [t_embedder MLP, adaLN Linears]
//           + 4 * L^2 * D per block           [Q K^T and P V]
//   backward = 2 * forward; train step = 3 * forward.
double dit_forward_flops_per_image(const DiTConfig& cfg);

}  // namespace speed
