// The native benchmark: large-GEMM rate, DiT forward pass, full train step and
// each kernel alone at a model's shapes, on one backend. The GEMM reference row
// is named after the GEMM that ran it: "gemm 2048^3 builtin (avx512)" (or avx2,
// portable, "blas (libopenblas.so)") on the CPU, "gemm 2048^3 cuBLASLt (bf16)".
// Used by native/bench/bench_native.cpp and by the N-API runBench().
//
// FLOPs are counted analytically (multiply-add = 2):
//   gemm M×K×N            2·M·K·N
//   forward per image     2·(matmul weights)·L + 2·(per-image weights) + depth·4·L²·D
//   backward              2 × forward; train step = 3 × forward (loss/optimizer ignored)
//   linear fwd / bwd      2·M·K·N / 4·M·K·N
//   attention fwd / bwd   4·N·L²·D / 8·N·L²·D
// Bytes (memory-bound kernels) count each tensor read or written once.
// The kernel rows are the perf cases of the op table (native/src/core/op_table.h, perf_cases):
// a new op gets a row by a line there.
// With `profile`, one more train step per (model, batch) runs under a
// ProfilingBackend (speed/profile.h): a row per op (and shape, for matrix
// products and attention) with its calls, total ms, GFLOP/s and share.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "speed/cuda.h"
#include "speed/dit.h"

namespace speed {

struct BenchOptions {
  std::vector<std::string> models{"DiT-S/2@32x4", "DiT-Ti/4@32x3"};  // preset@size x channels
  std::vector<int> batches{8, 32};
  std::string device = "cpu";  // "cpu" | "cuda"
  int threads = 0;             // CPU threads; 0 = all cores
  int iters = 3;               // timed repetitions (median); one warm-up before
  bool kernels = true;         // time each kernel alone
  CudaMath cuda_math = CudaMath::BF16;
  int gemm_size = 2048;        // the large-GEMM reference: gemm_size^3, float32
  bool recompute = false;      // train step with activation recomputation (DiT::set_recompute)
  bool profile = false;        // after each train step timing, one step timed op by op
};

struct BenchRow {
  std::string model;  // "DiT-S/2@32x4", or "-" for the GEMM reference
  std::string device;
  int batch = 0;
  std::string what;   // "gemm", "forward", "train_step", or a kernel name
  double ms = 0;      // median over iters
  double images_per_sec = 0;  // 0 for kernels
  double gflops = 0;          // 0 when not meaningful
  double gbps = 0;            // 0 when not meaningful
  double ratio_to_gemm = 0;   // gflops / the GEMM rate of the same run
  double activation_mb = 0;   // forward / train_step: activation memory of the call (MiB), else 0
  // profile rows ("step <op> [<shape>]", and "step total (profiled)"): calls in one
  // train step and the row's share of the profiled step's time; else 0
  long calls = 0;
  double share = 0;
};

// "DiT-S/2@32x4" -> preset DiT-S/2, input 32, 4 channels, 1000 classes,
// dropout 0.1, learn_sigma. Throws speed::Error naming the expected form.
DiTConfig parse_bench_model(const std::string& spec);

// VAE models in BenchOptions::models: "VAE-f8@SIZE" (SD's kl-f8 AutoencoderKL) or
// "VAE-tiny@SIZE" (block_out_channels [8, 16], 1 layer per block, 4 groups: for
// tests), random weights, images SIZE x SIZE x 3. Each batch gets rows "vae encode"
// and "vae decode" (images/s, GFLOP/s by VAE::encode_flops / decode_flops, ratio
// to the GEMM rate, activation MiB of the chunk = the batch); with `profile`, one
// more encode and decode timed op by op ("encode <op> <shape>", "decode ...").
bool is_vae_bench_model(const std::string& spec);
// Throws speed::Error naming the expected form; returns the image size.
struct VAEConfig;
int parse_vae_bench_model(const std::string& spec, VAEConfig* cfg = nullptr);

// Runs the benchmark; on_row (optional) sees each row as soon as it is measured.
std::vector<BenchRow> run_bench(const BenchOptions& opts,
                                const std::function<void(const BenchRow&)>& on_row = nullptr);

// IDDPM tables of the linear schedule for `steps` > 20 time steps;
// for the native bench, dump_case and native tests (TypeScript computes the
// tables used for training).
DiffusionTables linear_diffusion_tables(int steps);

}  // namespace speed
