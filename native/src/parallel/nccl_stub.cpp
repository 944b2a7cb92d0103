// Stand-in for nccl.cu when the CUDA backend or NCCL is not built.
#include <string>

#include "speed/backend.h"
#include "speed/collective.h"

namespace speed {

namespace {
const char* kWhy =
    "this build of speed-train has no NCCL: it needs the CUDA backend (SPEED_CUDA) and nccl.h / libnccl.so.2 "
    "(the CUDA toolkit's, pip install nvidia-nccl-cu13, or -DSPEED_NCCL_INCLUDE=dir -DSPEED_NCCL_LIB=file) at "
    "build time";
}

bool nccl_built(std::string* why) {
  if (why) *why = kWhy;
  return false;
}
std::shared_ptr<Collective> make_nccl_collective(std::shared_ptr<Collective>, int) { throw Error(kWhy); }

}  // namespace speed
