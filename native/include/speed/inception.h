// Inception-v3 as pytorch-fid defines its FID variant (torchvision's Inception3 with
// the blocks FIDInceptionA, FIDInceptionC, FIDInceptionE_1 and FIDInceptionE_2, a
// 1008-way fc, no auxiliary head), forward only, written once against
// speed::Backend<T>'s ops (conv2d, pool2d, global_avg_pool, resize_bilinear,
// channel_copy, linear).
//
// Input: uint8 images [N, H, W, C] (C = 1: grey, replicated to RGB; 3; 4: alpha
// dropped), scaled to [0, 1], resized to 299x299 (bilinear, align_corners=False; an
// image already 299x299 is used as is, which is what that resize gives), then 2x - 1.
// Outputs per image: pool3 [2048] (the global average pool after Mixed_7c: FID, KID,
// precision/recall), logits [1008] (fc(pool3): Inception Score) and spatial [2023]:
// the first 7 channels of Mixed_6d.branch1x1 after its BN and ReLU (TF's
// `mixed_6/conv:0`, the tensor ADM's evaluator reads for sFID), 17x17, flattened in
// (h, w, c) order as TF's NHWC `[..., :7].reshape(N, -1)` gives.
//
// Every BasicConv2d is conv (no bias) -> BatchNorm (eps 1e-3, running statistics) ->
// ReLU. The BatchNorm is folded into the conv at prepare(): w' = w g / sqrt(v + eps),
// b' = beta - mean g / sqrt(v + eps). The input's 2x - 1 is folded into the first conv
// (which has no padding, so this is exact): w'' = 2 w', b'' = b' - sum(w').
//
// Parameters are pytorch-fid's state dict names and shapes (Conv2d_1a_3x3.conv.weight,
// Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}, Mixed_5b.branch1x1.conv.weight,
// ..., fc.weight [1008, 2048], fc.bias); num_batches_tracked is not a parameter here.
// All pointer arguments of the public methods are HOST memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/dit.h"  // ParamInfo

namespace speed {

template <typename T>
class InceptionV3 {
 public:
  static constexpr int kSize = 299;                       // the network's input side
  static constexpr int kPool3 = 2048, kLogits = 1008;     // output lengths per image
  static constexpr int kSpatialC = 7, kSpatialHW = 17;    // mixed_6/conv[..., :7] at 17x17
  static constexpr int kSpatial = kSpatialC * kSpatialHW * kSpatialHW;  // 2023

  // Any backend with the Inception ops (CPU, CUDA); one without them throws speed::Error
  // naming the op at the first run().
  explicit InceptionV3(std::shared_ptr<Backend<T>> backend);
  ~InceptionV3();
  InceptionV3(const InceptionV3&) = delete;
  InceptionV3& operator=(const InceptionV3&) = delete;

  Backend<T>& backend();
  // Every parameter (pytorch-fid's names and shapes, state dict order), all required.
  const std::vector<ParamInfo>& params() const;
  // Stores a host copy of one parameter (numel elements, all finite; running_var >= 0).
  void write_param(const std::string& name, const T* host);
  std::vector<std::string> unwritten() const;
  // Folds the BatchNorms and the input scaling into the convs and uploads the result;
  // the host copies are released. Throws naming the parameters never written.
  void prepare();
  bool prepared() const;

  // images uint8 [N, H, W, C] -> pool3 [N, 2048], logits [N, 1008], spatial [N, 2023]
  // (any of the three may be null: not wanted). Runs `chunk` images at a time.
  void run(const uint8_t* images, int N, int H, int W, int C, T* pool3, T* logits, T* spatial, int chunk);

  // Analytic FLOPs per image at 299x299 (2 per multiply-add; convs and the fc).
  double flops() const;
  // Bytes of the activation arena for `chunk` images of H x W.
  size_t activation_bytes(int chunk, int H, int W) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class InceptionV3<float>;
extern template class InceptionV3<double>;

}  // namespace speed
