// ProfilingBackend: a train step through it gives the wrapped backend's results
// bit for bit, and its rows count the graph's ops (per block: two LayerNorms,
// one attention, one fc1+GELU, ...) with the analytic FLOPs of bench.h.
#include <cstring>

#include "speed/profile.h"
#include "test_dit_util.h"

using namespace speed;

static const OpProfile* find(const std::vector<OpProfile>& rows, const std::string& op) {
  for (const OpProfile& r : rows)
    if (r.op == op) return &r;
  return nullptr;
}

int main() {
  try {
    DiTConfig c = ditt::small_config(8);
    c.depth = 3;
    const int N = 2, L = c.num_tokens(), D = c.hidden_size;
    auto prof = make_profiling_backend<float>(make_cpu_backend<float>(2));
    DiT<float> plain(c, make_cpu_backend<float>(2)), wrapped(c, prof);
    std::mt19937_64 rng(3);
    auto x0 = ditt::normal_vec<float>(rng, size_t(N) * c.in_channels * 64, 0.5);
    std::vector<int32_t> t = {10, 900}, y = {1, 5};
    std::vector<float> w = {1.0f, 1.0f};
    TrainHyper hp;
    hp.optim.max_grad_norm = 1.0;
    std::vector<float> la, lb;
    for (DiT<float>* m : {&plain, &wrapped}) {
      m->init(4);
      m->set_tables(linear_diffusion_tables(1000));
      m->set_noise_state(8, 0);
    }
    CHECK(wrapped.backend().name() == "cpu", "the wrapper reports the wrapped backend's name");
    prof->record(true);
    for (int s = 0; s < 2; ++s) {
      TrainResult a = plain.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
      TrainResult b = wrapped.train_step(x0.data(), t.data(), y.data(), w.data(), N, hp);
      la.insert(la.end(), a.loss.begin(), a.loss.end());
      lb.insert(lb.end(), b.loss.begin(), b.loss.end());
      if (s == 0) prof->record(false);  // the second step is not recorded
    }
    CHECK(la.size() == lb.size() && std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) == 0,
          "profiled steps must give the same losses bit for bit");
    const std::vector<float> wa = ditt::all_slot(plain, Slot::Model), wb = ditt::all_slot(wrapped, Slot::Model);
    CHECK(std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)) == 0, "weights differ after profiled steps");
    const std::vector<OpProfile> rows = prof->rows();
    struct Want { const char* op; long calls; };
    const Want want[] = {{"attention_forward", c.depth},      {"attention_backward", c.depth},
                         {"linear_forward+gelu", c.depth},    {"linear_backward+gelu", c.depth},
                         {"ln_modulate_forward", 2 * c.depth + 1}, {"ln_modulate_backward", 2 * c.depth + 1},
                         {"gated_residual_forward", 2 * c.depth}, {"optimizer_step", 1},
                         {"iddpm_loss", 1},                   {"normal", 1}};
    for (const Want& wnt : want) {
      const OpProfile* r = find(rows, wnt.op);
      CHECK(r && r->calls == wnt.calls, "%s: %ld calls in one step, expected %ld", wnt.op, r ? r->calls : -1L,
            wnt.calls);
      CHECK(r && r->ms >= 0, "%s: time recorded", wnt.op);
    }
    const OpProfile* att = find(rows, "attention_forward");
    CHECK(att && att->shape == "2," + std::to_string(L) + ",4,16", "attention shape '%s'", att ? att->shape.c_str() : "");
    CHECK(att && att->flops == c.depth * 4.0 * N * L * double(L) * D, "attention FLOPs %g", att ? att->flops : 0);
    // every Linear shape is its own row: qkv's M x K x N is one of them
    bool qkv = false;
    for (const OpProfile& r : rows)
      qkv |= r.op == "linear_forward" && r.shape == std::to_string(N * L) + "x" + std::to_string(D) + "x" +
                                                         std::to_string(3 * D) && r.calls == c.depth;
    CHECK(qkv, "a linear_forward row for the qkv product, one call per block");
    prof->record(true);
    CHECK(prof->rows().empty(), "record(true) starts a new recording");
    ditt::expect_error([] { make_profiling_backend<float>(nullptr); }, "wrapped backend is null", "null backend");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    return 1;
  }
  return ditt::finish("test_profile");
}
