// The DiT data-parallel hook without MPI: two "ranks" are two
// threads of this process joined by an in-process speed::Collective (sum in
// rank order), so the core's gradient buckets, the NaN poisoning, the loss
// gather and broadcast_state are tested in every build. test/dist.test.ts does
// the same over MPI with mpirun.
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "speed/bench.h"
#include "speed/collective.h"
#include "test_dit_util.h"

using namespace speed;

namespace {

// Shared state of a world of W threads; every call is a rendezvous.
struct ThreadWorld {
  int size;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
  std::vector<const void*> in;
  std::vector<size_t> calls;  // reductions started per rank (a bucket count)
  explicit ThreadWorld(int w) : size(w), in(w), calls(w) {}

  void barrier() {
    std::unique_lock<std::mutex> lock(mu);
    const int64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
};

class ThreadCollective final : public Collective {
 public:
  ThreadCollective(ThreadWorld& w, int rank) : w_(w), rank_(rank) {}
  std::string name() const override { return "threads"; }
  int rank() const override { return rank_; }
  int size() const override { return w_.size; }
  int local_rank() const override { return rank_; }
  void allreduce_sum(float* x, size_t n) override { sum(x, n); }
  void allreduce_sum(double* x, size_t n) override { sum(x, n); }
  void allreduce_mean(float* x, size_t n) override { mean(x, n); }
  void allreduce_mean(double* x, size_t n) override { mean(x, n); }
  void allreduce_mean_start(float* x, size_t n) override {
    ++w_.calls[rank_];
    mean(x, n);
  }
  void allreduce_max(int64_t* x, size_t n) override {
    std::vector<int64_t> mine(x, x + n);
    publish(mine.data());
    for (int r = 0; r < w_.size; ++r)
      for (size_t i = 0; i < n; ++i) x[i] = std::max(x[i], static_cast<const int64_t*>(w_.in[r])[i]);
    w_.barrier();
  }
  void broadcast(void* buf, size_t bytes, int root) override {
    publish(buf);
    if (rank_ != root) std::memcpy(buf, w_.in[root], bytes);
    w_.barrier();
  }
  void allgather(const void* send, size_t bytes, void* recv) override {
    publish(send);
    for (int r = 0; r < w_.size; ++r) std::memcpy(static_cast<char*>(recv) + r * bytes, w_.in[r], bytes);
    w_.barrier();
  }
  void barrier() override { w_.barrier(); }
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  void publish(const void* p) {
    w_.in[rank_] = p;
    w_.barrier();
  }
  template <typename T>
  void sum(T* x, size_t n) {
    std::vector<T> mine(x, x + n);
    publish(mine.data());
    for (size_t i = 0; i < n; ++i) {
      T s = 0;
      for (int r = 0; r < w_.size; ++r) s += static_cast<const T*>(w_.in[r])[i];  // rank order
      x[i] = s;
    }
    w_.barrier();
  }
  template <typename T>
  void mean(T* x, size_t n) {
    sum(x, n);
    const T s = T(1) / T(w_.size);
    for (size_t i = 0; i < n; ++i) x[i] *= s;
  }
  ThreadWorld& w_;
  int rank_;
};

struct Global {
  std::vector<float> x0, w;
  std::vector<int32_t> t, y;
};

Global make_global(const DiTConfig& c, int G, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Global b;
  b.x0 = ditt::normal_vec<float>(rng, size_t(G) * c.in_channels * c.input_size * c.input_size, 0.5);
  std::uniform_int_distribution<int> dt(0, 999), dy(0, c.num_classes);
  for (int i = 0; i < G; ++i) {
    b.t.push_back(dt(rng));
    b.y.push_back(dy(rng));
    b.w.push_back(0.5f + 0.1f * i);
  }
  return b;
}

TrainHyper hyper() {
  TrainHyper hp;
  hp.optim.lr = 2e-3;
  hp.optim.max_grad_norm = 1.0;
  hp.optim.ema_decay = 0.9;
  return hp;
}

struct RunOut {
  std::vector<std::vector<float>> loss, grad;
  std::vector<double> grad_norm;
  std::vector<bool> skipped;
  std::vector<float> weights, ema;
  uint64_t noise_offset = 0;
};

// W ranks (threads) train `steps` steps on the global batches; rank r takes
// samples [r*G/W, (r+1)*G/W), or [0, G/W) on every rank when same_shard.
// nan_step: global sample G-1 of that step holds a NaN (the last rank's shard).
std::vector<RunOut> run(int W, int G, int steps, bool same_shard, int nan_step = -1) {
  const DiTConfig c = ditt::small_config(8);
  const size_t per = size_t(c.in_channels) * c.input_size * c.input_size;
  ThreadWorld world(W);
  std::vector<RunOut> outs(W);
  auto rank_main = [&](int r) {
    DiT<float> m(c, make_cpu_backend<float>(1));
    m.init(r == 0 ? 31 : 999);  // rank 0's weights reach the others by broadcast_state
    m.set_tables(linear_diffusion_tables(1000));
    m.set_noise_state(7, r == 0 ? 0 : 12345);
    if (W > 1) {
      m.set_collective(std::make_shared<ThreadCollective>(world, r));
      m.broadcast_state(0);
    }
    const int n = G / W;
    for (int s = 0; s < steps; ++s) {
      Global g = make_global(c, G, 500 + s);
      if (s == nan_step) g.x0[size_t(G - 1) * per + 3] = NAN;
      const int first = same_shard ? 0 : r * n;
      TrainHyper hp = hyper();
      hp.shard_offset = first;
      hp.global_batch = G;
      TrainResult res = m.train_step(g.x0.data() + first * per, g.t.data() + first, g.y.data() + first,
                                     g.w.data() + first, n, hp);
      outs[r].loss.push_back(res.loss);
      outs[r].grad.push_back(ditt::all_slot(m, Slot::Grad));
      outs[r].grad_norm.push_back(res.grad_norm);
      outs[r].skipped.push_back(res.skipped);
    }
    outs[r].weights = ditt::all_slot(m, Slot::Model);
    outs[r].ema = ditt::all_slot(m, Slot::EMA);
    outs[r].noise_offset = m.noise_offset();
  };
  std::vector<std::thread> th;
  for (int r = 0; r < W; ++r) th.emplace_back([&, r] {
    try {
      rank_main(r);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: %s\n", r, e.what());
      std::exit(1);
    }
  });
  for (auto& t : th) t.join();
  if (W > 1) CHECK(world.calls[0] > 0 && world.calls[0] == world.calls[1], "bucket calls %zu / %zu", world.calls[0], world.calls[1]);
  return outs;
}

double norm_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(a[i]) * a[i];
  }
  return std::sqrt(d / n);
}
bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void test_split_matches_one_process() {
  std::vector<RunOut> one = run(1, 8, 4, false), two = run(2, 8, 4, false);
  for (int s = 0; s < 4; ++s) {
    CHECK(two[0].loss[s].size() == 8, "step %d: %zu gathered losses", s, two[0].loss[s].size());
    double lr = norm_rel(one[0].loss[s], two[0].loss[s]), gr = norm_rel(one[0].grad[s], two[0].grad[s]);
    CHECK(lr <= 1e-6 && gr <= 1e-6, "step %d: loss %g gradient %g relative", s, lr, gr);
    CHECK(std::fabs(one[0].grad_norm[s] - two[1].grad_norm[s]) <= 1e-6 * one[0].grad_norm[s], "grad norm");
  }
  CHECK(norm_rel(one[0].weights, two[0].weights) <= 1e-6, "weights %g", norm_rel(one[0].weights, two[0].weights));
  CHECK(same(two[0].weights, two[1].weights) && same(two[0].ema, two[1].ema), "both ranks hold the same weights");
  CHECK(two[0].noise_offset == one[0].noise_offset && two[1].noise_offset == one[0].noise_offset, "noise offsets");
}

void test_same_shard_bitwise() {
  // one process on samples [0, 4) of a global batch of 8 == 2 ranks both on [0, 4)
  const int G = 8;
  std::vector<RunOut> two = run(2, G, 3, true);
  // the reference: one model, shard [0, 4), global batch 8 (no collective)
  std::vector<RunOut> ref(1);
  {
    const DiTConfig c = ditt::small_config(8);
    const size_t per = size_t(c.in_channels) * c.input_size * c.input_size;
    DiT<float> m(c, make_cpu_backend<float>(1));
    m.init(31);
    m.set_tables(linear_diffusion_tables(1000));
    m.set_noise_state(7, 0);
    for (int s = 0; s < 3; ++s) {
      Global g = make_global(c, G, 500 + s);
      TrainHyper hp = hyper();
      hp.global_batch = G;
      TrainResult r = m.train_step(g.x0.data(), g.t.data(), g.y.data(), g.w.data(), G / 2, hp);
      CHECK(same(ditt::all_slot(m, Slot::Grad), two[0].grad[s]), "step %d: gradient bitwise", s);
      (void)per;
      (void)r;
    }
    CHECK(same(ditt::all_slot(m, Slot::Model), two[0].weights), "weights bitwise");
    CHECK(same(ditt::all_slot(m, Slot::EMA), two[1].ema), "EMA bitwise");
  }
}

void test_buckets_and_nan() {
  std::vector<RunOut> big = run(2, 8, 3, false);
  setenv("SPEED_DIST_BUCKET_MB", "0.004", 1);  // ~1000 floats: a bucket per block part
  std::vector<RunOut> small = run(2, 8, 3, false);
  unsetenv("SPEED_DIST_BUCKET_MB");
  for (int s = 0; s < 3; ++s) CHECK(same(big[0].grad[s], small[0].grad[s]), "step %d: small buckets, bitwise", s);
  CHECK(same(big[0].weights, small[0].weights), "small buckets: weights bitwise");
  // a NaN in rank 1's shard: rank 0 (finite shard) must skip too
  std::vector<RunOut> one = run(1, 8, 3, false, 1), two = run(2, 8, 3, false, 1);
  CHECK(one[0].skipped[1] && !one[0].skipped[0] && !one[0].skipped[2], "one process skips step 1");
  CHECK(two[0].skipped[1] && two[1].skipped[1] && !two[0].skipped[2], "both ranks skip step 1");
  CHECK(norm_rel(one[0].weights, two[0].weights) <= 1e-6, "weights after the skip");
}

void test_errors() {
  const DiTConfig c = ditt::small_config(8);
  ThreadWorld world(1);
  DiT<float> m(c, make_cpu_backend<float>(1));
  m.init(1);
  m.set_tables(linear_diffusion_tables(1000));
  m.set_collective(std::make_shared<ThreadCollective>(world, 0), true);
  Global g = make_global(c, 4, 1);
  TrainHyper hp = hyper();
  hp.global_batch = 8;  // a world of one cannot hold 8 = W * 4
  ditt::expect_error([&] { m.train_step(g.x0.data(), g.t.data(), g.y.data(), g.w.data(), 4, hp); },
                     "is not 1 ranks x 4 samples", "global batch != W * N");
  hp.global_batch = 3;
  ditt::expect_error([&] { m.train_step(g.x0.data(), g.t.data(), g.y.data(), g.w.data(), 4, hp); },
                     "are not inside a global batch of 3", "slice outside the global batch");
}

}  // namespace

int main() {
  try {
    test_split_matches_one_process();
    test_same_shard_bitwise();
    test_buckets_and_nan();
    test_errors();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_dit_dist");
}
