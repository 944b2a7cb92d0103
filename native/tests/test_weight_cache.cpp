// The CUDA backend's bf16 weight-cache bookkeeping (native/src/cuda/weight_cache.h),
// host only, so it runs in every build: a copy stays current across writes elsewhere
// (the core's activation copies), goes stale on any write that overlaps its weight
// (inside, across either end, covering it; not one that only touches its boundary), on
// an optimizer step over the parameter or EMA buffer, on write_param / to_device into
// its range; a freed buffer drops its entries; the counters count what happened. The
// "weights" are ranges of a host array standing in for the flat parameter buffer.
#include <cstdint>
#include <string>
#include <vector>

#include "../src/cuda/weight_cache.h"
#include "cpu_test_util.h"

using namespace cputest;
using speed::cuda::WeightCache;

namespace {

struct Sim {
  // A flat "parameter buffer" of 3 weights, an EMA buffer, an activation buffer.
  std::vector<float> params = std::vector<float>(1000), ema = std::vector<float>(1000), act = std::vector<float>(4096);
  const float* w0 = params.data();        // [0, 100)
  const float* w1 = params.data() + 100;  // [100, 400)
  const float* w2 = params.data() + 600;  // [600, 1000); [400, 600) holds biases
  const float* e1 = ema.data() + 100;     // EMA weights are cached too (sampling from EMA)
  WeightCache c;
  int fake = 1;
  // what the backend's weight_operand does; true on a hit
  bool use(const float* w, size_t n) {
    if (c.lookup(w, n)) return true;
    WeightCache::Entry& e = c.entry(w);
    if (e.cap < n) {
      e.buf = &fake;  // stands in for cudaMalloc
      e.cap = n;
    }
    c.converted(w, n);
    return false;
  }
  bool hit(const float* w, size_t n) { return c.lookup(w, n) != nullptr; }
  void write(const float* p, size_t elems) { c.invalidate(p, elems * sizeof(float)); }
};

}  // namespace

int main() {
  {
    Sim s;
    expect(!s.use(s.w0, 100) && !s.use(s.w1, 300) && !s.use(s.w2, 400) && !s.use(s.e1, 300),
           "first use of each weight converts");
    expect(s.use(s.w0, 100) && s.use(s.w1, 300) && s.use(s.w2, 400) && s.use(s.e1, 300), "second use hits");
    // the core's activation copies, fills and noise: far from every weight
    s.write(s.act.data(), 4096);
    s.write(s.act.data() + 10, 5);
    expect(s.hit(s.w0, 100) && s.hit(s.w1, 300) && s.hit(s.w2, 400) && s.hit(s.e1, 300),
           "hit after unrelated writes (activations)");
    // writes between weights (biases) and touching a weight's boundary only
    s.write(s.params.data() + 400, 200);
    s.write(s.params.data() + 99, 0);
    expect(s.hit(s.w1, 300) && s.hit(s.w2, 400), "hit after a write between weights ([400, 600): biases)");
    expect(s.hit(s.w0, 100), "hit after an empty write");
    const auto inv0 = s.c.stats().invalidations;
    expect(inv0 == 0, "no invalidation so far", std::to_string(inv0));
  }
  {  // partial overlaps: each invalidates exactly the weights it touches
    struct Case { const char* what; size_t at, n; bool w0, w1, w2; };
    const Case cases[] = {
        {"write inside w1", 150, 10, true, false, true},
        {"write across w1's start", 90, 20, false, false, true},
        {"write across w1's end", 390, 20, true, false, true},
        {"write covering w1 and more", 50, 600, false, false, false},
        {"write of w1's first element", 100, 1, true, false, true},
        {"write of w1's last element", 399, 1, true, false, true},
        {"write ending where w1 starts", 90, 10, false, true, true},
        {"write starting where w1 ends", 400, 5, true, true, true},
    };
    for (const Case& k : cases) {
      Sim s;
      s.use(s.w0, 100);
      s.use(s.w1, 300);
      s.use(s.w2, 400);
      s.write(s.params.data() + k.at, k.n);
      const bool ok = s.hit(s.w0, 100) == k.w0 && s.hit(s.w1, 300) == k.w1 && s.hit(s.w2, 400) == k.w2;
      expect(ok, std::string(k.what) + ": stale exactly where it overlaps",
             "w0 " + std::to_string(s.hit(s.w0, 100)) + " w1 " + std::to_string(s.hit(s.w1, 300)) + " w2 " +
                 std::to_string(s.hit(s.w2, 400)));
      // a stale copy converts once on its next use, then hits again
      if (!k.w1) expect(!s.use(s.w1, 300) && s.use(s.w1, 300), std::string(k.what) + ": reconverted once, then hit");
    }
  }
  {  // an optimizer step writes the whole parameter and EMA buffers
    Sim s;
    s.use(s.w0, 100);
    s.use(s.w2, 400);
    s.use(s.e1, 300);
    s.write(s.params.data(), 1000);
    expect(!s.hit(s.w0, 100) && !s.hit(s.w2, 400) && s.hit(s.e1, 300), "params stale after the step's write of params");
    s.write(s.ema.data(), 1000);
    expect(!s.hit(s.e1, 300), "EMA weights stale after the step's write of the EMA buffer");
    // a step's pattern: each weight used twice (forward, dx), then the optimizer
    const auto c0 = s.c.stats().conversions, h0 = s.c.stats().hits;
    for (int step = 0; step < 3; ++step) {
      for (int use = 0; use < 2; ++use) {
        s.use(s.w0, 100);
        s.use(s.w2, 400);
        s.write(s.act.data(), 4096);  // the core's two copies per block
        s.write(s.act.data() + 2048, 2048);
      }
      s.write(s.params.data(), 1000);
    }
    const auto conv = s.c.stats().conversions - c0, hits = s.c.stats().hits - h0;
    expect(conv == 6 && hits == 6, "3 steps of 2 weights used twice: 6 conversions (one per weight and step), 6 hits",
           std::to_string(conv) + " conversions, " + std::to_string(hits) + " hits");
  }
  {  // write_param / to_device of one tensor, a different size, invalidate_all, free
    Sim s;
    s.use(s.w0, 100);
    s.use(s.w1, 300);
    s.use(s.w2, 400);
    s.write(s.w1 + 0, 300);  // write_param("blocks.0.mlp.fc1.weight") -> to_device of its range
    expect(s.hit(s.w0, 100) && !s.hit(s.w1, 300) && s.hit(s.w2, 400), "write_param of w1: only w1 stale");
    expect(!s.hit(s.w0, 50), "same pointer, other size: a miss");
    s.c.invalidate_all();
    expect(!s.hit(s.w0, 100) && !s.hit(s.w2, 400), "invalidate_all: every copy stale");
    s.use(s.w0, 100);
    int freed = 0;
    s.c.erase(s.params.data(), 1000 * sizeof(float), [&](void* b) { freed += b != nullptr; });
    expect(s.c.size() == 0 && freed == 3 && !s.hit(s.w0, 100), "free of the parameter buffer drops its 3 entries");
    // a new weight at a freed address starts empty, and the hull of ranges restarts
    s.use(s.w2, 400);
    s.write(s.act.data(), 4096);
    expect(s.hit(s.w2, 400), "re-created entry hits after unrelated writes");
    s.write(s.w2 + 399, 1);
    expect(!s.hit(s.w2, 400), "and goes stale on a write of its last element");
  }
  {  // the hull bound never hides an entry: a weight far below the first one
    Sim s;
    s.use(s.w2, 400);
    s.use(s.w0, 100);
    s.write(s.w0 + 5, 1);
    expect(!s.hit(s.w0, 100) && s.hit(s.w2, 400), "entries added below the first one are still invalidated");
  }
  return finish("test_weight_cache");
}
