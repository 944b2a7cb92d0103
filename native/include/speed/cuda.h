// The CUDA backend (float32 master data, bf16 or tf32/fp32 matrix products).
// Declared always; when the addon is built without CUDA, cuda_available()
// returns false with the reason and make_cuda_backend() throws it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "speed/backend.h"

namespace speed {

enum class CudaMath : int { BF16 = 0, TF32 = 1, FP32 = 2 };

struct CudaOptions {
  int device = 0;
  CudaMath math = CudaMath::BF16;
};

// true when built with CUDA and a driver + device are present; else false and
// *why says which of those is missing.
bool cuda_available(std::string* why);

std::shared_ptr<Backend<float>> make_cuda_backend(const CudaOptions& opts);

// Counters of a CUDA backend's bf16 weight cache (CudaMath::BF16): lookups answered
// by a current copy, conversions float32 -> bf16 of a whole weight, entries made
// stale by a write into their range, cached weights. Throws speed::Error when `be`
// is not a backend made by make_cuda_backend.
struct CudaWeightCacheStats {
  uint64_t hits = 0, conversions = 0, invalidations = 0;
  size_t entries = 0;
};
CudaWeightCacheStats cuda_weight_cache_stats(const Backend<float>& be);

}  // namespace speed
