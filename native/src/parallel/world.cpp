// The launcher's world size from its environment (compiled with or without MPI:
// a build without MPI uses it to refuse a multi-process launch with the reason).
#include <climits>
#include <cstdlib>

#include "speed/collective.h"

namespace speed {

namespace {
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (end && *end == 0 && x > 0 && x < INT_MAX) ? static_cast<int>(x) : 0;
}
}  // namespace

int launcher_world_size() {
  // OpenMPI's mpirun, MPICH/Hydra and Slurm's PMI2, srun's job step.
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (int n = env_int(k)) return n;
  return 1;
}

}  // namespace speed
