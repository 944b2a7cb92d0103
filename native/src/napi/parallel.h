// N-API face of the collectives: the `parallel` object of the addon and
// the collective a model attaches to (Model.setCollective).
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "speed/collective.h"

namespace speed_napi {

// exports.parallel = { worldSize, info, init, allreduceMax, broadcastBytes,
//                      gatherBytes, barrier, abort, finalize, allreduceBench }
Napi::Object parallel_exports(Napi::Env env);

// "mpi": the MPI world (host buffers); "nccl": NCCL on `cuda_device`, its
// rendezvous over the MPI world. Initialises MPI on first use.
std::shared_ptr<speed::Collective> collective_for(const std::string& kind, int cuda_device);

}  // namespace speed_napi
