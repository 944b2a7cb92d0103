// The JS class CNNModel: speed::CNNClassifier<float> (a feature network of
// src/featnet) behind the shared classifier binding (classifier.h).
#pragma once
#include "classifier.h"
#include "speed/cnn.h"

namespace speed_napi {

struct CNNTraits {
  using Net = speed::CNNClassifier<float>;
  using Config = speed::CNNConfig;
  static constexpr const char* kClass = "CNNModel";
  static Config config_from_js(const Napi::Value& v, const std::string& what) { return cnn_config_from_js(v, what); }
  static Napi::Object config_to_js(Napi::Env env, const Config& c) { return cnn_config_to_js(env, c); }
  // features(): ReLU(fc1(...)), [N, fc_hidden]
  static int feature_dim(const Config& c) { return c.fc_hidden; }
};

using CNNModel = ClassifierModel<CNNTraits>;
extern template class ClassifierModel<CNNTraits>;

}  // namespace speed_napi
