// A step profile: a Backend<T> that forwards every op to another backend and,
// while recording, times each call (synchronize before and after, wall clock),
// grouped by op and, for matrix products and attention, by shape. It answers
// "where does a train step's time go" on any backend (bench_native --profile).
//
// Synchronizing around every op costs a little per call (a few µs on a GPU), so
// the sum of the rows exceeds an unprofiled step slightly; the bench prints both.
// Results are those of the wrapped backend, bit for bit (tested).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "speed/backend.h"

namespace speed {

struct OpProfile {
  std::string op;      // "linear_forward", "attention_backward", ...
  std::string shape;   // linear: "MxKxN"; attention: "N,L,heads,hd"; else ""
  long calls = 0;
  double ms = 0;       // total over the calls
  double flops = 0;    // total analytic FLOPs (linear, attention), else 0
};

template <typename T>
class ProfilingBackend;

template <typename T>
std::shared_ptr<ProfilingBackend<T>> make_profiling_backend(std::shared_ptr<Backend<T>> inner);

template <typename T>
class ProfilingBackend : public Backend<T> {
 public:
  // Starts a new recording (clears the rows) or stops it; off at construction.
  virtual void record(bool on) = 0;
  // Rows in first-call order.
  virtual std::vector<OpProfile> rows() const = 0;
};

}  // namespace speed
