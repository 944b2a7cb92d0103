// A small fork-join thread pool for the CPU backend.
//
// Determinism rule (the model test checks identical losses for 1 and 2 threads):
// callers split work into tasks whose results do not depend on which thread runs
// them or how many threads there are. The pool only decides who runs a task.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace speed::cpu {

class ThreadPool {
 public:
  // threads <= 0: std::thread::hardware_concurrency().
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Runs fn(task, thread) for every task in [0, tasks) and returns when all are
  // done. thread in [0, size()) indexes per-thread scratch. The calling thread
  // works too. A call made from inside a task runs its tasks inline (thread
  // index of the caller) when that task belongs to this same pool. The first
  // exception thrown by a task is rethrown here.
  void run(int64_t tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void worker(int index);
  void work(int thread);

  int size_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  int busy_ = 0;  // workers still inside the current generation
  bool stop_ = false;
  int64_t tasks_ = 0;
  std::atomic<int64_t> next_{0};
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  std::exception_ptr error_;
  std::mutex run_mu_;  // one run() at a time per pool
};

// Splits [0, n) into chunks of `grain` (a fixed size, never derived from the
// thread count) and runs fn(begin, end, thread) for each chunk.
inline void parallel_for(ThreadPool& pool, int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t chunks = (n + grain - 1) / grain;
  pool.run(chunks, [&](int64_t c, int thread) {
    int64_t b = c * grain, e = b + grain < n ? b + grain : n;
    fn(b, e, thread);
  });
}

}  // namespace speed::cpu
