// What the core's image classifiers (ViTClassifier, CNNClassifier: the feature
// networks of src/featnet) return from a forward + cross-entropy + backward.
#pragma once
#include <cstdint>
#include <vector>

namespace speed {

struct ClassifierStepResult {
  double loss = 0.0;            // batch-mean cross-entropy
  std::vector<double> losses;   // per sample [N]
  std::vector<double> logits;   // [N, num_classes]
  int correct = 0;              // argmax(logits) == label
  double grad_norm = 0.0;
  bool skipped = false;         // non-finite loss or gradient: weights untouched
  int64_t step = 0;             // optimizer steps taken so far
};

}  // namespace speed
