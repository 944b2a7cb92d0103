// speed::Collective over MPI on host buffers, plus the process-wide
// MPI lifetime. Built when CMake finds MPI (SPEED_MPI=AUTO|ON); mpi_stub.cpp
// stands in otherwise.
//
// Loading: Node opens the addon (and so libmpi, its dependency) RTLD_LOCAL,
// but OpenMPI's components (mca_*.so, dlopen'ed by MPI_Init) resolve opal_* /
// ompi_* symbols from the global scope and fail with "undefined symbol"
// otherwise. As mpi4py does, libmpi is re-opened RTLD_GLOBAL | RTLD_NOLOAD
// (promoting the already loaded copy) before MPI_Init.
#include <dlfcn.h>
// the C API only: OpenMPI's and MPICH's mpi.h pull in the deprecated C++
// bindings (libmpi_cxx) otherwise
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "speed/backend.h"
#include "speed/collective.h"

#ifndef SPEED_MPI_LIBRARY
#define SPEED_MPI_LIBRARY "libmpi.so"
#endif

namespace speed {

namespace {

std::mutex g_mu;
bool g_inited = false;     // we called MPI_Init_thread
bool g_finalized = false;  // we called MPI_Finalize
std::shared_ptr<Collective> g_world;

std::string mpi_message(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

class MpiCollective final : public Collective {
 public:
  MpiCollective() {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes (turned into speed::Error) instead of the
    // default handler's abort, so that the caller's message names the call.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_free(&local);
  }
  ~MpiCollective() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm_);
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void allreduce_sum(float* x, size_t n) override { allreduce(x, n, MPI_FLOAT, MPI_SUM, "allreduce_sum"); }
  void allreduce_sum(double* x, size_t n) override { allreduce(x, n, MPI_DOUBLE, MPI_SUM, "allreduce_sum"); }
  void allreduce_max(int64_t* x, size_t n) override { allreduce(x, n, MPI_INT64_T, MPI_MAX, "allreduce_max"); }
  void allreduce_mean(float* x, size_t n) override { mean(x, n, MPI_FLOAT); }
  void allreduce_mean(double* x, size_t n) override { mean(x, n, MPI_DOUBLE); }

  void allreduce_mean_start(float* x, size_t n) override { start(x, n, MPI_FLOAT); }
  void allreduce_mean_start(double* x, size_t n) override { start(x, n, MPI_DOUBLE); }
  void wait_all() override {
    if (pending_.empty()) return;
    std::vector<MPI_Request> reqs;
    for (const Pending& p : pending_) reqs.push_back(p.req);
    int rc = MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
    std::vector<Pending> done;
    done.swap(pending_);
    check(rc, "MPI_Iallreduce (wait)");
    if (size_ == 1) return;
    for (const Pending& p : done) {
      if (p.type == MPI_FLOAT) scale(static_cast<float*>(p.x), p.n);
      else scale(static_cast<double*>(p.x), p.n);
    }
  }

  void broadcast(void* buf, size_t bytes, int root) override {
    char* p = static_cast<char*>(buf);
    for (size_t done = 0; done < bytes;) {
      const size_t k = std::min(bytes - done, kChunk);
      check(MPI_Bcast(p + done, static_cast<int>(k), MPI_BYTE, root, comm_), "MPI_Bcast");
      done += k;
    }
  }
  void allgather(const void* send, size_t bytes, void* recv) override {
    if (bytes > kChunk) throw Error("allgather: " + std::to_string(bytes) + " bytes per rank is more than one call moves");
    check(MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE, comm_),
          "MPI_Allgather");
  }
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; keep [[noreturn]] honest
  }

  MPI_Comm comm() const { return comm_; }
  void check(int rc, const char* what) const {
    if (rc != MPI_SUCCESS)
      throw Error(std::string(what) + " failed on rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                  ": " + mpi_message(rc));
  }

 private:
  // MPI counts are int: move big buffers in pieces of at most 1 GiB.
  static constexpr size_t kChunk = size_t(1) << 30;

  template <typename T>
  void allreduce(T* x, size_t n, MPI_Datatype type, MPI_Op op, const char* what) {
    const size_t per = kChunk / sizeof(T);
    for (size_t done = 0; done < n;) {
      const size_t k = std::min(n - done, per);
      check(MPI_Allreduce(MPI_IN_PLACE, x + done, static_cast<int>(k), type, op, comm_), what);
      done += k;
    }
  }
  template <typename T>
  void mean(T* x, size_t n, MPI_Datatype type) {
    allreduce(x, n, type, MPI_SUM, "allreduce_mean");
    if (size_ > 1) scale(x, n);
  }
  template <typename T>
  void scale(T* x, size_t n) const {
    const T s = T(1) / T(size_);
    for (size_t i = 0; i < n; ++i) x[i] *= s;
  }
  template <typename T>
  void start(T* x, size_t n, MPI_Datatype type) {
    const size_t per = kChunk / sizeof(T);
    for (size_t done = 0; done < n;) {
      const size_t k = std::min(n - done, per);
      Pending p{MPI_REQUEST_NULL, x + done, k, type};
      check(MPI_Iallreduce(MPI_IN_PLACE, x + done, static_cast<int>(k), type, MPI_SUM, comm_, &p.req), "MPI_Iallreduce");
      pending_.push_back(p);
      done += k;
    }
    // OpenMPI progresses non-blocking collectives inside MPI calls: poke them
    int flag = 0;
    std::vector<MPI_Request> reqs;
    for (const Pending& q : pending_) reqs.push_back(q.req);
    MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE);
    for (size_t i = 0; i < reqs.size(); ++i) pending_[i].req = reqs[i];
  }
  struct Pending {
    MPI_Request req;
    void* x;
    size_t n;
    MPI_Datatype type;
  };
  std::vector<Pending> pending_;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};


}  // namespace

bool mpi_built(std::string* why) {
  if (why) why->clear();
  return true;
}

std::shared_ptr<Collective> mpi_world() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_world) return g_world;
  if (g_finalized) throw Error("MPI: already finalized in this process; it cannot be initialised again");
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    // Promote the libmpi this library was linked against to the global scope
    // (see the top of this file). RTLD_NOLOAD: never load a second copy.
    if (!dlopen(SPEED_MPI_LIBRARY, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD))
      if (!dlopen(SPEED_MPI_LIBRARY, RTLD_NOW | RTLD_GLOBAL))
        throw Error(std::string("MPI: could not re-open ") + SPEED_MPI_LIBRARY + " with RTLD_GLOBAL: " +
                    (dlerror() ? dlerror() : "unknown error"));
    int provided = 0;
    // SERIALIZED: collectives run on Node's main thread and on the worker
    // thread of a long call, never at the same time (a model is busy-guarded).
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) throw Error("MPI_Init_thread failed: " + mpi_message(rc));
    if (provided < MPI_THREAD_SERIALIZED)
      throw Error("MPI: this MPI library provides thread level " + std::to_string(provided) +
                  ", speed-train needs MPI_THREAD_SERIALIZED (calls from Node's worker threads)");
    g_inited = true;
  }
  g_world = std::make_shared<MpiCollective>();
  return g_world;
}

void mpi_finalize() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_inited || g_finalized) return;
  g_world.reset();
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
  g_finalized = true;
}

std::vector<std::vector<uint8_t>> mpi_gather_bytes(const std::vector<uint8_t>& mine, int root) {
  std::shared_ptr<Collective> w = mpi_world();
  auto& m = static_cast<MpiCollective&>(*w);
  if (mine.size() > size_t(INT_MAX)) throw Error("gather: " + std::to_string(mine.size()) + " bytes on rank " +
                                                 std::to_string(m.rank()) + " is more than 2 GiB");
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(m.size()), displs(m.size());
  m.check(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, root, m.comm()), "MPI_Gather");
  std::vector<uint8_t> all;
  std::vector<std::vector<uint8_t>> out;
  if (m.rank() == root) {
    int64_t total = 0;
    for (int r = 0; r < m.size(); ++r) {
      displs[r] = static_cast<int>(total);
      total += counts[r];
      if (total > INT_MAX) throw Error("gather: more than 2 GiB in all; gather in smaller pieces");
    }
    all.resize(static_cast<size_t>(total));
  }
  m.check(MPI_Gatherv(mine.data(), n, MPI_BYTE, all.data(), counts.data(), displs.data(), MPI_BYTE, root, m.comm()),
          "MPI_Gatherv");
  if (m.rank() == root)
    for (int r = 0; r < m.size(); ++r)
      out.emplace_back(all.begin() + displs[r], all.begin() + displs[r] + counts[r]);
  return out;
}

}  // namespace speed
