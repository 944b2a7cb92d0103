// What the image classifiers (vit.cpp, cnn.cpp) share: argument checks, the
// host-side softmax cross-entropy of their logits, parameter lookup by name,
// the slots of their flat buffers and the AdamW step with its step counter.
// Internal to native/src/core.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/classifier.h"
#include "speed/dit.h"  // ParamInfo, Slot

namespace speed {

// N >= 1 and x non-null; `what` names the call.
void check_classifier_input(const void* x, int N, const char* what);
// y non-null, every label in [0, num_classes).
void check_classifier_labels(const int32_t* y, int N, int num_classes, const char* what);

// Softmax cross-entropy of logits [N, K] (host, float64) against labels y: sets
// r.logits, r.losses, r.loss (batch mean) and r.correct, and returns
// d(mean_n loss_n)/d(logits) [N, K] = (softmax - onehot(y)) / N.
std::vector<double> softmax_cross_entropy(std::vector<double> logits, const int32_t* y, int N, int K,
                                          ClassifierStepResult& r);

// The parameter named `name`; an unknown name is an Error listing what `model`
// ("ViT", "CNN") has.
const ParamInfo& find_classifier_param(const std::vector<ParamInfo>& params, const std::string& name,
                                       const char* model);

// The flat buffers of a classifier's trainable parameters (same layout each).
template <typename T>
struct ClassifierBuffers {
  T *params = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr;

  // n zeroed values each; on failure nothing stays allocated.
  void allocate(Backend<T>& be, size_t n) {
    try {
      for (T** p : {&params, &grads, &m, &v}) *p = static_cast<T*>(be.alloc_bytes(std::max<size_t>(n, 1) * sizeof(T)));
    } catch (...) {
      release(be);
      throw;
    }
    for (T* p : {params, grads, m, v}) be.fill(p, T(0), n);
  }
  void release(Backend<T>& be) {
    for (T** p : {&params, &grads, &m, &v}) {
      be.free_bytes(*p);
      *p = nullptr;
    }
  }

  // Where slot `s` of trainable parameter p lives; Grad is read-only and there is no EMA.
  T* slot(const ParamInfo& p, Slot s, bool writing, const char* model) const {
    switch (s) {
      case Slot::Model: return params + p.offset;
      case Slot::AdamM: return m + p.offset;
      case Slot::AdamV: return v + p.offset;
      case Slot::Grad:
        if (writing) throw Error("parameter '" + p.name + "': the grad slot is read-only");
        return grads + p.offset;
      case Slot::EMA:
        throw Error(std::string("the ") + model + " classifier keeps no EMA of its weights (slot 'ema')");
    }
    throw Error("invalid Slot value");
  }

  // Clipping + AdamW on the gradient loss_and_grad left in `grads` (no EMA);
  // `losses` is backend scratch of N values for the optimizer's finiteness check.
  // Advances `step` unless the update was skipped; fills r.grad_norm, r.skipped, r.step.
  void optimizer_step(Backend<T>& be, size_t n, T* losses, const OptimHyper& hp, int64_t& step,
                      ClassifierStepResult& r) const {
    std::vector<T> l(r.losses.begin(), r.losses.end());
    be.to_device(losses, l.data(), l.size() * sizeof(T));
    OptimHyper oh = hp;
    oh.step = step + 1;
    oh.ema_decay = -1.0;
    OptimResult o = be.optimizer_step(params, grads, m, v, nullptr, n, oh, losses, static_cast<int>(l.size()));
    if (!o.skipped) ++step;
    r.grad_norm = o.grad_norm;
    r.skipped = o.skipped;
    r.step = step;
  }
};

}  // namespace speed
