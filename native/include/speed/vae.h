// The Stable Diffusion VAE (AutoencoderKL, "kl-f8"; Rombach et al. 2022, as in
// diffusers' AutoencoderKL and LDM's ldm/modules/diffusionmodules/model.py),
// forward only, written once against speed::Backend<T>'s ops (conv2d,
// group_norm, upsample_nearest2x, transpose_batched, linear, attention, add,
// gaussian_sample).
//
// Encoder: conv_in 3x3 -> per level i: layers_per_block ResNet blocks (out
// channels block_out_channels[i]), then (except the last level) a Downsample:
// zero pad (top 0, left 0, bottom 1, right 1) + conv 3x3 stride 2 -> mid block
// (ResNet, single-head self-attention over the H*W tokens, ResNet) ->
// GroupNorm + SiLU -> conv_out 3x3 to 2*latent_channels -> quant_conv 1x1.
// The diagonal Gaussian: mean, logvar = split(moments), logvar clamped to
// [-30, 20], z = mean (deterministic) or mean + exp(0.5 logvar) eps.
// Decoder: post_quant_conv 1x1 -> conv_in 3x3 -> mid block -> per level
// (reversed channels) layers_per_block+1 ResNet blocks, then (except the last)
// nearest x2 + conv 3x3 -> GroupNorm + SiLU -> conv_out 3x3.
// ResNet block: h = conv1(silu(gn1(x))); h = conv2(silu(gn2(h))); out =
// shortcut(x) + h, shortcut a 1x1 conv when channels change. GroupNorm eps 1e-6.
// Attention: h = gn(x); q,k,v = Linear(h tokens); softmax(q kᵀ / sqrt(C)) v;
// out = x + proj(that).
//
// Parameter names are diffusers' (the canonical names; src/vae/weights.ts maps
// the LDM names onto them): encoder.down_blocks.0.resnets.0.conv1.weight,
// encoder.mid_block.attentions.0.to_q.weight [C, C] (Linear), ...
//
// Memory: a call runs its batch in chunks of at most `chunk` images; the
// activation arena is sized for one chunk (activation_bytes(chunk, H, W)) and
// reused. All pointer arguments of the public methods are HOST memory.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/dit.h"  // ParamInfo

namespace speed {

struct VAEConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;

  int down_factor() const { return 1 << (static_cast<int>(block_out_channels.size()) - 1); }
  // Throws speed::Error naming the field and what was expected.
  void validate() const;
};

// Called after each chunk with (images done, total); may be empty.
using VAEProgress = std::function<void(int done, int total)>;

template <typename T>
class VAE {
 public:
  VAE(const VAEConfig& cfg, std::shared_ptr<Backend<T>> backend);
  ~VAE();
  VAE(const VAE&) = delete;
  VAE& operator=(const VAE&) = delete;

  const VAEConfig& config() const;
  Backend<T>& backend();
  // Every parameter (diffusers names and shapes), all of them required.
  const std::vector<ParamInfo>& params() const;
  size_t num_params() const;
  void read_param(const std::string& name, T* host) const;
  void write_param(const std::string& name, const T* host);
  // Names of parameters never written since construction (a loader's check).
  std::vector<std::string> unwritten() const;

  // images [N, in_channels, H, W] -> moments [N, 2*latent, H/f, W/f] (quant_conv output).
  void encode_moments(const T* images, int N, int H, int W, T* moments, int chunk,
                      const VAEProgress& progress = {});
  // images -> z [N, latent, H/f, W/f]: the posterior mean when !sample, else
  // mean + std eps with eps from Philox (seed, offset): element i of the whole
  // batch's z is Backend::normal's element i, so chunking does not change it.
  // The images of this call are images first_image.. of that whole batch (a
  // caller that splits a batch over calls passes where each part starts).
  void encode(const T* images, int N, int H, int W, T* z, bool sample, uint64_t seed, uint64_t offset,
              int chunk, const VAEProgress& progress = {}, uint64_t first_image = 0);
  // z [N, latent, h, w] -> images [N, out_channels, h*f, w*f]
  void decode(const T* z, int N, int h, int w, T* images, int chunk, const VAEProgress& progress = {});

  // Bytes of the activation arena for a chunk of `chunk` images at input size
  // H x W (encode: image size; decode: latent size times f), both directions.
  size_t activation_bytes(int chunk, int H, int W) const;
  // Analytic forward FLOPs per image (2 per multiply-add; convs, Linears and
  // attention's two matrix products) at image size H x W.
  double encode_flops(int H, int W) const;
  double decode_flops(int H, int W) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class VAE<float>;
extern template class VAE<double>;

}  // namespace speed
