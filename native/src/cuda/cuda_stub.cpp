// Built when the addon is compiled without the CUDA backend.
#include "speed/cuda.h"

namespace speed {

bool cuda_available(std::string* why) {
  if (why) *why = "speed-train was built without the CUDA backend (no CUDA toolkit with cuBLASLt was found at build time; rebuild with SPEED_CUDA=ON)";
  return false;
}

std::shared_ptr<Backend<float>> make_cuda_backend(const CudaOptions&) {
  std::string why;
  cuda_available(&why);
  throw Error("device 'cuda' is not available: " + why);
}

CudaWeightCacheStats cuda_weight_cache_stats(const Backend<float>&) {
  throw Error("cuda_weight_cache_stats: speed-train was built without the CUDA backend");
}

}  // namespace speed
