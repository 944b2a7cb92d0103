// Collectives for data-parallel training and sampling, behind one
// small interface so that the DiT core does not know which library moves the
// bytes: MPI on host buffers (native/src/parallel/mpi.cpp), NCCL on GPU buffers
// (native/src/parallel/nccl.cu, rendezvous over MPI). Nothing home-made on the wire.
//
// Every call is collective: all ranks of the world call it in the same order
// with the same sizes. A failing call throws speed::Error naming the call,
// the rank and the library's message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace speed {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual std::string name() const = 0;  // "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes of this machine
  // true: the buffer arguments of the reductions/broadcast are GPU (backend)
  // memory; false: host memory.
  virtual bool device_buffers() const { return false; }

  virtual void allreduce_sum(float* x, size_t n) = 0;
  virtual void allreduce_sum(double* x, size_t n) = 0;
  virtual void allreduce_max(int64_t* x, size_t n) = 0;  // host memory always
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  // recv holds size() * bytes: rank r's `send` lands at recv + r * bytes.
  virtual void allgather(const void* send, size_t bytes, void* recv) = 0;
  virtual void barrier() = 0;
  // Ends every process of the world with `code` (MPI_Abort); does not return.
  [[noreturn]] virtual void abort(int code) = 0;

  // Sum, then * (1 / size()) (NCCL: ncclAvg): exact when every rank holds the
  // same values and size() is a power of two (the "same shard" bitwise test).
  virtual void allreduce_mean(float* x, size_t n) = 0;
  virtual void allreduce_mean(double* x, size_t n) = 0;
  // Starts an averaging all-reduce of x that finishes by wait_all(); x must
  // not be touched until then (buckets of the gradient while the backward
  // goes on: MPI_Iallreduce, NCCL on its stream). Default: at once.
  virtual void allreduce_mean_start(float* x, size_t n) { allreduce_mean(x, n); }
  virtual void allreduce_mean_start(double* x, size_t n) { allreduce_mean(x, n); }
  virtual void wait_all() {}
};

// The launcher's world as its environment describes it, read before any MPI
// call: OMPI_COMM_WORLD_SIZE (OpenMPI's mpirun), PMI_SIZE (MPICH/Hydra, Slurm
// PMI2), SLURM_STEP_NUM_TASKS under srun; 1 when none is set.
int launcher_world_size();

// Whether this build has MPI, and if not why (for "asking for more processes
// says why it cannot").
bool mpi_built(std::string* why);

// MPI_Init_thread (once per process; libmpi re-opened RTLD_GLOBAL first, as
// mpi4py does, because OpenMPI's plugins need its symbols globally) and the
// world communicator. Throws speed::Error when MPI is not built or fails.
std::shared_ptr<Collective> mpi_world();
// MPI_Finalize when mpi_world() initialised MPI; a no-op otherwise.
void mpi_finalize();
// Rank-ordered variable-size gather of bytes onto `root` (inference results):
// returns every rank's buffer on root, an empty vector elsewhere. MPI only.
std::vector<std::vector<uint8_t>> mpi_gather_bytes(const std::vector<uint8_t>& mine, int root);

// NCCL on GPU buffers of the current CUDA device, its ncclUniqueId broadcast
// from rank 0 over `bootstrap` (llm.c's scheme); its own communication stream.
// Throws speed::Error when NCCL or CUDA is not built.
bool nccl_built(std::string* why);
std::shared_ptr<Collective> make_nccl_collective(std::shared_ptr<Collective> bootstrap, int cuda_device);

}  // namespace speed
