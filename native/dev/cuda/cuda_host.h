// Running CUDA kernel source on the host, for tests in every build (CI has no GPU).
// A kernel header without includes (native/src/cuda/*.cuh, native/dev/cuda/*.cuh) is compiled
// as plain C++ between cuda_host_begin.h and cuda_host_end.h (which map __global__, __shared__,
// ... to C++), inside namespace emu, after this header. Then
//   emu::launch(grid, threads, [&] { emu::some_kernel<...>(args...); });
// runs every block of the grid, one block at a time, with one real std::thread per
// CUDA thread (a persistent pool), a real barrier for __syncthreads, and warp
// collectives (__shfl_xor_sync, and a test's own: mma, ldmatrix) exchanged through
// memory between warp barriers. __shared__ arrays are statics: shared by the block's
// threads, and by the blocks, which run one after the other.
// What this shows: indexing, bounds, reductions and their order, missing barriers
// (when a thread gets ahead), lanes of a warp in different collectives. What it
// cannot: timing, the device's memory model, bank conflicts, register spills.
#pragma once
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace emu {

using std::min;
using std::size_t;
using std::uint16_t;
using std::uint32_t;

[[noreturn]] inline void die(const std::string& why) {
  std::fprintf(stderr, "cuda_host: %s\n", why.c_str());
  std::fflush(stdout);
  std::_Exit(2);
}

// ---- built-in types and functions -------------------------------------------------------------
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
using dim3 = uint3;
inline thread_local uint3 threadIdx;
inline uint3 blockIdx, blockDim, gridDim;  // one block at a time

struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  uint32_t x, y;
};
struct alignas(16) uint4 {
  uint32_t x, y, z, w;
};
inline float2 make_float2(float a, float b) { return float2{a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return uint2{a, b}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return uint4{a, b, c, d}; }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

// bf16: round to nearest even, NaN stays NaN
struct __nv_bfloat16 {
  uint16_t x;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;  // .x in the low 16 bits of the 32-bit word
};
inline uint16_t f2bf_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf_bits2f(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{f2bf_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return bf_bits2f(b.x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline float __low2float(__nv_bfloat162 v) { return bf_bits2f(v.x.x); }
inline float __high2float(__nv_bfloat162 v) { return bf_bits2f(v.y.x); }

// ---- threads, barriers --------------------------------------------------------------------------
// Generation-counting barrier on a futex (no mutex for the waiters to fight over on wake-up);
// a wait longer than 60 s is a deadlock (threads of a block or warp diverged).
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait(const char* what) {
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    while (gen_.load(std::memory_order_acquire) == gen) {
      timespec ts{1, 0};
      syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAIT_PRIVATE, gen, &ts, nullptr, 0);
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60))
        die(std::string("deadlock at ") + what + " (threads diverged?)");
    }
  }

 private:
  static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "futex word");
  std::atomic<unsigned> count_{0}, gen_{0};
  unsigned n_;
};

// A warp collective: each lane deposits a Slot (which collective, its operands), waits at the
// warp barrier, and reads the 32 slots. Tests add their own collectives with op >= kUserOp.
enum Op : int { kShfl = 1, kUserOp = 16 };
struct Slot {
  int op;
  float v;
  uint32_t a[4], b0, b1, addr;
};
struct Warp {
  Barrier bar{32};
  Slot slot[2][32];
};
inline Barrier* g_block = nullptr;
inline std::vector<std::unique_ptr<Warp>> g_warps;
inline thread_local int t_phase = 0;

inline void __syncthreads() { g_block->wait("__syncthreads"); }

// Deposits this lane's slot, waits for the warp, returns the 32 slots of this collective. Slot
// sets alternate per call: a lane can overwrite a set only after the next warp barrier, which
// the others pass after reading it.
inline const Slot* warp_exchange(const Slot& mine) {
  const unsigned t = threadIdx.x, lane = t & 31u;
  Warp& w = *g_warps[t / 32];
  Slot* s = w.slot[t_phase];
  t_phase ^= 1;
  s[lane] = mine;
  w.bar.wait("a warp collective");
  for (int i = 0; i < 32; ++i)
    if (s[i].op != mine.op) die("lanes of a warp in different collectives");
  return s;
}

inline float __shfl_xor_sync(unsigned mask, float v, int off) {
  if (mask != 0xffffffffu) die("__shfl_xor_sync with a partial mask");
  Slot m{};
  m.op = kShfl;
  m.v = v;
  return warp_exchange(m)[(threadIdx.x & 31u) ^ (unsigned)off].v;
}

// A pool of persistent std::threads, one per CUDA thread of the block that runs (thread t is
// threadIdx.x = t; creating them per block cost more than the kernels); start_/done_ hand a
// block to the pool and wait for all of it.
class Pool {
 public:
  static constexpr unsigned kMax = 512;
  Pool() : start_(kMax + 1), done_(kMax + 1) {
    for (unsigned t = 0; t < kMax; ++t)
      ts_.emplace_back([this, t] {
        threadIdx = uint3{t, 0, 0};
        for (;;) {
          start_.wait("pool start");
          if (quit_) return;
          if (t < active_) {
            t_phase = 0;
            (*job_)();
          }
          done_.wait("pool done");
        }
      });
  }
  ~Pool() {
    quit_ = true;
    start_.wait("pool start");
    for (auto& th : ts_) th.join();
  }
  void run_block(unsigned threads, const std::function<void()>& job) {
    active_ = threads;
    job_ = &job;
    start_.wait("pool start");
    done_.wait("pool done");
  }

 private:
  Barrier start_, done_;
  std::vector<std::thread> ts_;
  const std::function<void()>* job_ = nullptr;
  unsigned active_ = 0;
  bool quit_ = false;
};

inline Pool& pool() {
  static Pool p;
  return p;
}

// Runs kernel() on every thread of every block of `grid`, one block at a time (x fastest);
// before_block(), when given, runs on the calling thread before each block (e.g. to fill
// shared memory with garbage, as a block finds it on a GPU).
template <typename K>
void launch(dim3 grid, unsigned threads, K kernel, const std::function<void()>& before_block = nullptr) {
  if (threads == 0 || threads % 32 || threads > Pool::kMax)
    die("threads per block must be a multiple of 32 in [32, 512], got " + std::to_string(threads));
  gridDim = grid;
  blockDim = uint3{threads, 1, 1};
  const std::function<void()> job = kernel;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        Barrier block(threads);
        g_block = &block;
        g_warps.clear();
        for (unsigned w = 0; w < threads / 32; ++w) g_warps.emplace_back(new Warp());
        if (before_block) before_block();
        pool().run_block(threads, job);
      }
}

}  // namespace emu
