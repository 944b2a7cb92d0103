// A small convolutional image classifier written once against speed::Backend<T>:
// the second architecture of the trained feature network (src/featnet), beside
// the ViT (vit.h). Metrics computed in its penultimate activations measure what
// a classifier of the data finds different, not raw pixel differences.
//
// Graph (NCHW), one stage per entry of `channels`:
//   stage s: conv3x3 pad 1 (-> channels[s]) -> ReLU -> conv3x3 stride 2 pad 1 -> ReLU
//   flatten -> Linear(-> fc_hidden) -> ReLU [= features] -> Linear(-> num_classes)
//   -> softmax cross-entropy.
// Each stage halves the resolution (ceil) with a stride-2 convolution instead of
// a max-pool (an all-convolutional net, Springenberg et al. 2015): it needs no
// pooling op with a backward, and the stage's second conv computes at a quarter
// of the pixels.
//
// Parameter names are those of the equivalent PyTorch module
//   features = nn.Sequential(Conv2d, ReLU, Conv2d, ReLU, ...)   (2 convs per stage)
//   fc1 = nn.Linear(C_last * S_last^2, fc_hidden), fc2 = nn.Linear(fc_hidden, num_classes)
// i.e. features.{4s}.{weight,bias} and features.{4s+2}.{weight,bias} for stage s,
// then fc1.{weight,bias}, fc2.{weight,bias} (tools/torch_cnn.py builds it).
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

struct CNNConfig {
  int input_size = 28;  // H = W
  int in_channels = 1;
  std::vector<int> channels = {32, 64};  // output channels of each stage
  int fc_hidden = 128;                   // width of the features
  int num_classes = 10;

  int stages() const { return static_cast<int>(channels.size()); }
  // Spatial size after `s` stages (each stride-2 conv with pad 1 maps S to ceil(S / 2)).
  int size_after(int s) const;
  // Length of the flattened last stage: channels.back() * size_after(stages())^2.
  int flat_size() const;
  // Throws speed::Error naming the field and what was expected.
  void validate() const;
};

template <typename T>
class CNNClassifier {
 public:
  CNNClassifier(const CNNConfig& cfg, std::shared_ptr<Backend<T>> backend);
  ~CNNClassifier();
  CNNClassifier(const CNNClassifier&) = delete;
  CNNClassifier& operator=(const CNNClassifier&) = delete;

  const CNNConfig& config() const;
  Backend<T>& backend();
  // features.{4s,4s+2}.{weight,bias} per stage s, fc1.{weight,bias}, fc2.{weight,bias}.
  const std::vector<ParamInfo>& params() const;
  size_t num_trainable() const;

  // torch's default initialisation of Conv2d and Linear: weights and biases
  // uniform in +-1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5));
  // moments := 0; step := 0.
  void init(uint64_t seed);
  // Slots: Model, AdamM, AdamV, Grad (read only). There is no EMA.
  void read_param(const std::string& name, Slot slot, T* host) const;
  void write_param(const std::string& name, Slot slot, const T* host);
  int64_t step() const;
  void set_step(int64_t step);

  // Forward + cross-entropy + backward: the gradient of the batch-mean loss is
  // left in Slot::Grad. x [N, C, H, W], y [N] in [0, num_classes).
  ClassifierStepResult loss_and_grad(const T* x, const int32_t* y, int N);
  // loss_and_grad, then clipping + AdamW (hp.ema_decay is ignored: no EMA).
  ClassifierStepResult train_step(const T* x, const int32_t* y, int N, const OptimHyper& hp);
  // logits [N, num_classes]
  void logits(const T* x, int N, T* out);
  // The penultimate activations ReLU(fc1(flatten)), [N, fc_hidden].
  void features(const T* x, int N, T* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class CNNClassifier<float>;
extern template class CNNClassifier<double>;

}  // namespace speed
