#include "threadpool.h"

namespace speed::cpu {

namespace {
// The pool and thread index whose task we are running (null/-1 outside any
// task): a nested run() on the same pool executes inline instead of deadlocking.
thread_local const ThreadPool* tl_pool = nullptr;
thread_local int tl_thread = -1;
}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) {
    unsigned hc = std::thread::hardware_concurrency();
    threads = hc == 0 ? 1 : static_cast<int>(hc);
  }
  size_ = threads;
  for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  const ThreadPool* saved_pool = tl_pool;
  int saved = tl_thread;
  tl_pool = this;
  tl_thread = thread;
  for (;;) {
    int64_t task = next_.fetch_add(1, std::memory_order_relaxed);
    if (task >= tasks_) break;
    try {
      (*fn_)(task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(tasks_, std::memory_order_relaxed);  // stop handing out tasks
    }
  }
  tl_pool = saved_pool;
  tl_thread = saved;
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    work(index);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--busy_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::run(int64_t tasks, const std::function<void(int64_t, int)>& fn) {
  if (tasks <= 0) return;
  if (tl_pool == this) {  // nested: we already are one of this pool's threads
    for (int64_t t = 0; t < tasks; ++t) fn(t, tl_thread);
    return;
  }
  std::lock_guard<std::mutex> serial(run_mu_);
  if (size_ == 1 || tasks == 1) {
    const ThreadPool* saved_pool = tl_pool;
    int saved = tl_thread;
    tl_pool = this;
    tl_thread = 0;
    try {
      for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    } catch (...) {
      tl_pool = saved_pool;
      tl_thread = saved;
      throw;
    }
    tl_pool = saved_pool;
    tl_thread = saved;
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    tasks_ = tasks;
    next_.store(0, std::memory_order_relaxed);
    fn_ = &fn;
    error_ = nullptr;
    busy_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  work(0);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return busy_ == 0; });
    err = error_;
    error_ = nullptr;
    fn_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace speed::cpu
