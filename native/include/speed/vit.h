// A small ViT image classifier (Dosovitskiy et al. 2021) written once against
// speed::Backend<T>, so it runs on every backend the DiT runs on. It is the
// trained feature network of the evaluation (src/featnet): metrics computed in
// its pooled final-LayerNorm features measure what a classifier of the data
// finds different, not raw pixel differences.
//
// Graph: patchify (kernel = stride = p) -> Linear patch embed -> + fixed 2D
// sin-cos pos_embed -> depth x [x += attn(LN(x)); x += mlp(LN(x))] -> LN ->
// Linear head per token, logits averaged over tokens (= mean pooling, then the
// head: the head is linear) -> softmax cross-entropy.
// LayerNorms have no affine parameters (ln_modulate with zero shift/scale): the
// next Linear absorbs a per-channel scale and shift, so nothing is lost.
//
// All pointer arguments of the public methods are HOST memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/classifier.h"
#include "speed/dit.h"  // ParamInfo, Slot

namespace speed {

struct ViTConfig {
  int input_size = 32;  // H = W
  int patch_size = 4;
  int in_channels = 3;
  int hidden_size = 128;
  int depth = 4;
  int num_heads = 4;
  double mlp_ratio = 4.0;
  int num_classes = 10;

  int grid() const { return input_size / patch_size; }
  int num_tokens() const { return grid() * grid(); }
  int mlp_hidden() const { return static_cast<int>(hidden_size * mlp_ratio); }
  int head_dim() const { return hidden_size / num_heads; }
  // Throws speed::Error naming the field and what was expected.
  void validate() const;
};

using ViTStepResult = ClassifierStepResult;

template <typename T>
class ViTClassifier {
 public:
  ViTClassifier(const ViTConfig& cfg, std::shared_ptr<Backend<T>> backend);
  ~ViTClassifier();
  ViTClassifier(const ViTClassifier&) = delete;
  ViTClassifier& operator=(const ViTClassifier&) = delete;

  const ViTConfig& config() const;
  Backend<T>& backend();
  // Parameters in order: pos_embed (fixed), patch_embed.proj.{weight,bias},
  // blocks.i.attn.{qkv,proj}.{weight,bias}, blocks.i.mlp.{fc1,fc2}.{weight,bias},
  // head.{weight,bias} (timm's VisionTransformer names).
  const std::vector<ParamInfo>& params() const;
  size_t num_trainable() const;

  // Xavier-uniform Linear weights, zero biases, fixed pos_embed; moments := 0; step := 0.
  void init(uint64_t seed);
  // Slots: Model, AdamM, AdamV, Grad (read only). There is no EMA.
  void read_param(const std::string& name, Slot slot, T* host) const;
  void write_param(const std::string& name, Slot slot, const T* host);
  int64_t step() const;
  void set_step(int64_t step);

  // Forward + cross-entropy + backward: the gradient of the batch-mean loss is
  // left in Slot::Grad. x [N, C, H, W], y [N] in [0, num_classes).
  ViTStepResult loss_and_grad(const T* x, const int32_t* y, int N);
  // loss_and_grad, then clipping + AdamW (hp.ema_decay is ignored: no EMA).
  ViTStepResult train_step(const T* x, const int32_t* y, int N, const OptimHyper& hp);
  // logits [N, num_classes]
  void logits(const T* x, int N, T* out);
  // The pooled representation: mean over tokens of the final LayerNorm output, [N, D].
  void features(const T* x, int N, T* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class ViTClassifier<float>;
extern template class ViTClassifier<double>;

}  // namespace speed
