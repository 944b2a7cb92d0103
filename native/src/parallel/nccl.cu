// speed::Collective over NCCL on GPU buffers. Rendezvous as llm.c
// does it: rank 0 makes the ncclUniqueId, the bootstrap collective (MPI)
// broadcasts it, every rank calls ncclCommInitRank. The collectives run on
// this object's own communication stream; each call waits for it (a watchdog
// polls ncclCommGetAsyncError and gives up after SPEED_NCCL_TIMEOUT_S, default
// 600 s, so that a peer that died or hangs ends in an error, not a hang).
// Host-side calls (allreduce_max, allgather, barrier) go to the bootstrap.
//
// Gradient buckets (allreduce_mean_start) are enqueued on the communication
// stream while the backward goes on; wait_all waits for them.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "speed/backend.h"
#include "speed/collective.h"

namespace speed {

namespace {

double timeout_s() {
  const char* v = std::getenv("SPEED_NCCL_TIMEOUT_S");
  if (!v || !*v) return 600.0;
  char* end = nullptr;
  double x = std::strtod(v, &end);
  return (end && *end == 0 && x > 0) ? x : 600.0;
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(std::shared_ptr<Collective> boot, int device) : boot_(std::move(boot)), device_(device) {
    if (!boot_) throw Error("NCCL: the bootstrap collective is null");
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (boot_->rank() == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    boot_->broadcast(&id, sizeof(id), 0);
    nccl(ncclCommInitRank(&comm_, boot_->size(), id, boot_->rank()), "ncclCommInitRank");
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclCollective() override {
    if (stream_) cudaStreamDestroy(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return boot_->rank(); }
  int size() const override { return boot_->size(); }
  int local_rank() const override { return boot_->local_rank(); }
  bool device_buffers() const override { return true; }

  void allreduce_sum(float* x, size_t n) override { reduce(x, n, ncclFloat32, ncclSum, "ncclAllReduce(sum)"); }
  void allreduce_sum(double* x, size_t n) override { reduce(x, n, ncclFloat64, ncclSum, "ncclAllReduce(sum)"); }
  void allreduce_mean(float* x, size_t n) override { reduce(x, n, ncclFloat32, ncclAvg, "ncclAllReduce(avg)"); }
  void allreduce_mean(double* x, size_t n) override { reduce(x, n, ncclFloat64, ncclAvg, "ncclAllReduce(avg)"); }
  void allreduce_mean_start(float* x, size_t n) override { enqueue(x, n, ncclFloat32, ncclAvg, "ncclAllReduce(avg)"); }
  void allreduce_mean_start(double* x, size_t n) override { enqueue(x, n, ncclFloat64, ncclAvg, "ncclAllReduce(avg)"); }
  void wait_all() override {
    if (!queued_) return;
    queued_ = false;
    wait("ncclAllReduce(avg) of the gradient buckets");
  }
  void allreduce_max(int64_t* x, size_t n) override { boot_->allreduce_max(x, n); }
  void broadcast(void* buf, size_t bytes, int root) override {
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    nccl(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    wait("ncclBroadcast");
  }
  void allgather(const void* send, size_t bytes, void* recv) override { boot_->allgather(send, bytes, recv); }
  void barrier() override { boot_->barrier(); }
  [[noreturn]] void abort(int code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    boot_->abort(code);
    std::_Exit(code);  // not reached (MPI_Abort)
  }

 private:
  void enqueue(void* x, size_t n, ncclDataType_t type, ncclRedOp_t op, const char* what) {
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    nccl(ncclAllReduce(x, x, n, type, op, comm_, stream_), what);
    queued_ = true;
  }
  void reduce(void* x, size_t n, ncclDataType_t type, ncclRedOp_t op, const char* what) {
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    nccl(ncclAllReduce(x, x, n, type, op, comm_, stream_), what);
    wait(what);
  }

  // Waits for the communication stream, watching NCCL's asynchronous errors.
  void wait(const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    const double limit = timeout_s();
    for (;;) {
      cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) cuda(q, what);
      ncclResult_t st = ncclSuccess;
      ncclCommGetAsyncError(comm_, &st);
      if (st != ncclSuccess && st != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        nccl(st, what);
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw Error(std::string(what) + " did not finish within " + std::to_string(limit) + " s on rank " +
                    std::to_string(rank()) + " of " + std::to_string(size()) +
                    " (a peer died or hangs; SPEED_NCCL_TIMEOUT_S sets the limit)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void nccl(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess && r != ncclInProgress)
      throw Error(std::string(what) + " failed on rank " + std::to_string(boot_->rank()) + " of " +
                  std::to_string(boot_->size()) + ": " + ncclGetErrorString(r));
  }
  void cuda(cudaError_t e, const char* what) const {
    if (e != cudaSuccess)
      throw Error(std::string("NCCL collective: ") + what + " failed on rank " + std::to_string(boot_->rank()) +
                  ": " + cudaGetErrorString(e));
  }

  std::shared_ptr<Collective> boot_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool queued_ = false;  // buckets enqueued since the last wait_all
};

}  // namespace

bool nccl_built(std::string* why) {
  if (why) why->clear();
  return true;
}

std::shared_ptr<Collective> make_nccl_collective(std::shared_ptr<Collective> bootstrap, int cuda_device) {
  return std::make_shared<NcclCollective>(std::move(bootstrap), cuda_device);
}

}  // namespace speed
