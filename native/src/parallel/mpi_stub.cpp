// Stand-in for mpi.cpp in a build without MPI (SPEED_MPI=OFF, or AUTO without
// an MPI found): one process works as always; asking for more says why not.
#include <climits>
#include <cstdlib>
#include <string>

#include "speed/backend.h"
#include "speed/collective.h"

namespace speed {

namespace {
const char* kWhy =
    "this build of speed-train has no MPI (built with SPEED_MPI=OFF, or no MPI library was found at build "
    "time): install an MPI (Debian: apt-get install libopenmpi-dev openmpi-bin) and rebuild "
    "(npm run build:native)";

}  // namespace

bool mpi_built(std::string* why) {
  if (why) *why = kWhy;
  return false;
}
std::shared_ptr<Collective> mpi_world() { throw Error(kWhy); }
void mpi_finalize() {}
std::vector<std::vector<uint8_t>> mpi_gather_bytes(const std::vector<uint8_t>&, int) { throw Error(kWhy); }

}  // namespace speed
