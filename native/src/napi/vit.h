// The JS class ViTModel: speed::ViTClassifier<float> (a feature network of
// src/featnet) behind the shared classifier binding (classifier.h).
#pragma once
#include "classifier.h"
#include "speed/vit.h"

namespace speed_napi {

struct ViTTraits {
  using Net = speed::ViTClassifier<float>;
  using Config = speed::ViTConfig;
  static constexpr const char* kClass = "ViTModel";
  static Config config_from_js(const Napi::Value& v, const std::string& what) { return vit_config_from_js(v, what); }
  static Napi::Object config_to_js(Napi::Env env, const Config& c) { return vit_config_to_js(env, c); }
  // features(): the pooled final LayerNorm, [N, hidden_size]
  static int feature_dim(const Config& c) { return c.hidden_size; }
};

using ViTModel = ClassifierModel<ViTTraits>;
extern template class ClassifierModel<ViTTraits>;

}  // namespace speed_napi
