// Bookkeeping of the CUDA backend's bf16 weight copies, host only (no CUDA types, so
// that a plain ctest checks it on any machine: native/tests/test_weight_cache.cpp).
//
// In CudaMath::BF16 a Linear weight (float32, a range inside the parameter or EMA
// buffer) is converted to bf16 on first use and the copy is reused while it is
// current. A copy goes stale only when something writes into the bytes of its weight:
// the backend reports every write that can touch a weight (to_device, copy, fill and
// normal with their destination range; optimizer_step with the parameter and EMA
// buffers; free_bytes erases) and only the entries whose range overlaps the write are
// invalidated. Before, any such call (the core's two activation copies per block
// included) invalidated every entry, so each weight was converted twice per step.
//
// The backend owns the device buffers: Entry::buf is opaque here, and erase() hands
// each dropped buffer to a callback that frees it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>

namespace speed {
namespace cuda {

class WeightCache {
 public:
  struct Entry {
    void* buf = nullptr;  // the bf16 copy (device memory, owned by the backend)
    size_t cap = 0;       // elements buf can hold
    size_t n = 0;         // elements of the weight the copy was made from
    bool valid = false;   // the copy equals the weight's current bf16 rounding
  };
  struct Stats {
    uint64_t hits = 0;           // lookups answered by a current copy
    uint64_t conversions = 0;    // copies (re)made: float32 -> bf16 of the whole weight
    uint64_t invalidations = 0;  // entries made stale by a write into their range
  };

  // The current copy of weight w (n elements), or null: the caller converts into
  // entry(w).buf (growing it to n) and calls converted(w, n).
  const Entry* lookup(const void* w, size_t n) {
    auto it = map_.find(key(w));
    if (it == map_.end() || !it->second.valid || it->second.n != n) return nullptr;
    ++stats_.hits;
    return &it->second;
  }
  // The entry of w, created empty (buf null) on first use.
  Entry& entry(const void* w) { return map_[key(w)]; }
  // w's copy now holds its n elements.
  void converted(const void* w, size_t n) {
    Entry& e = map_[key(w)];
    e.n = n;
    e.valid = true;
    ++stats_.conversions;
    const uintptr_t b = key(w), end = b + n * sizeof(float);
    if (map_.size() == 1 || b < lo_) lo_ = b;
    if (map_.size() == 1 || end > hi_) hi_ = end;
  }

  // Something wrote [p, p + bytes): the copies of weights overlapping it are stale.
  void invalidate(const void* p, size_t bytes) {
    if (!bytes || map_.empty()) return;
    const uintptr_t a = key(p), z = a + bytes;
    if (z <= lo_ || a >= hi_) return;  // the usual case: an activation buffer, no weight near it
    for (auto& kv : map_) {
      Entry& e = kv.second;
      const uintptr_t b = kv.first, end = b + e.n * sizeof(float);
      if (e.valid && a < end && b < z) {
        e.valid = false;
        ++stats_.invalidations;
      }
    }
  }
  // A write of unknown extent: every copy is stale.
  void invalidate_all() {
    for (auto& kv : map_)
      if (kv.second.valid) {
        kv.second.valid = false;
        ++stats_.invalidations;
      }
  }
  // [p, p + bytes) was freed: drop the entries of weights starting inside it, handing
  // each entry's buffer to free_buf (which may be called with null).
  template <typename Free>
  void erase(const void* p, size_t bytes, Free free_buf) {
    const uintptr_t a = key(p), z = a + bytes;
    for (auto it = map_.lower_bound(a); it != map_.end() && it->first < z;) {
      free_buf(it->second.buf);
      it = map_.erase(it);
    }
  }
  // Every buffer, for the destructor.
  template <typename Free>
  void clear(Free free_buf) {
    for (auto& kv : map_) free_buf(kv.second.buf);
    map_.clear();
  }

  const Stats& stats() const { return stats_; }
  size_t size() const { return map_.size(); }

 private:
  static uintptr_t key(const void* p) { return reinterpret_cast<uintptr_t>(p); }
  std::map<uintptr_t, Entry> map_;
  uintptr_t lo_ = 0, hi_ = 0;  // hull of the entries' ranges (a bound, never shrunk)
  Stats stats_;
};

}  // namespace cuda
}  // namespace speed
