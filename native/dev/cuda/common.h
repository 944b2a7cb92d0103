// Shared by the kernel-development programs in this folder (the shape of llm.c's dev/cuda):
// each <op>.cu holds the versions of one op's kernels, checks every version against the CPU
// backend (the reference, speed/cpu.h) and times it. This header gives them the CUDA backend for
// device memory and the CPU backend (cuda_test_util.h's DBuf, randn, expect_close, expect), the
// run's stream discipline, and a timer.
//
// The product's kernels (native/src/cuda) are called through their launchers (cuda_common.h) on
// the null stream; the backend's own stream is non-blocking, so every version runs between two
// full synchronisations (sync_all) and never overlaps the backend's uploads.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <vector>

#include "cuda_common.h"
#include "cuda_test_util.h"

namespace devcuda {

inline void sync_all(speed::Backend<float>& be) {
  be.synchronize();
  SPEED_CUDA_CHECK(cudaDeviceSynchronize());
}

// Median milliseconds of `iters` runs of fn after one warm-up, each between full synchronisations.
template <typename F>
double median_ms(speed::Backend<float>& be, int iters, F&& fn) {
  sync_all(be);
  fn();
  sync_all(be);
  std::vector<double> ms;
  for (int i = 0; i < std::max(1, iters); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    SPEED_CUDA_CHECK(cudaDeviceSynchronize());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// n random normals on the device (the backend's Philox stream): the timed shapes are too large
// to draw on the host
inline void fill_normal(speed::Backend<float>& be, float* p, size_t n, uint64_t seed) { be.normal(p, n, seed, 0); }

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
           return std::memcmp(&x, &y, sizeof x) == 0;
         });
}

}  // namespace devcuda
