// The DiT model (Peebles & Xie 2023, adaLN-Zero) written once against
// speed::Backend<T>: forward, backward, the IDDPM loss, AdamW, EMA and one
// sampling step (IDDPM, Nichol & Dhariwal 2021; adaLN-Zero as DiT); parameter names, shapes
// and order are those of facebookresearch/DiT's models.py state_dict().
//
// All pointer arguments of the public methods are HOST memory; the model
// uploads them to its backend. Activations, parameters, gradients, Adam moments
// and EMA stay in backend memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "speed/backend.h"

namespace speed {

class Collective;  // speed/collective.h

struct DiTConfig {
  int input_size = 32;   // H = W of the (latent) image
  int patch_size = 2;
  int in_channels = 4;
  int hidden_size = 384;
  int depth = 12;
  int num_heads = 6;
  double mlp_ratio = 4.0;
  int num_classes = 1000;           // 0 = unconditional (no y_embedder)
  double class_dropout_prob = 0.1;  // > 0 adds the null row to the class table
  bool learn_sigma = true;

  int out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  int grid() const { return input_size / patch_size; }
  int num_tokens() const { return grid() * grid(); }
  int mlp_hidden() const { return static_cast<int>(hidden_size * mlp_ratio); }
  int head_dim() const { return hidden_size / num_heads; }
  int class_rows() const { return num_classes + (class_dropout_prob > 0 ? 1 : 0); }
  // Throws speed::Error naming the field and what was expected.
  void validate() const;
};

// "DiT-Ti/2", "DiT-S/4", "DiT-B/8", "DiT-L/2", "DiT-XL/2", ...: sets depth,
// hidden_size, num_heads and patch_size of `base`, keeps the rest.
// Ti = (12, 192, 3), S = (12, 384, 6), B = (12, 768, 12), L = (24, 1024, 16),
// XL = (28, 1152, 16). Throws speed::Error listing the valid names.
DiTConfig dit_preset(const std::string& name, DiTConfig base = DiTConfig());

struct ParamInfo {
  std::string name;            // DiT state_dict name, e.g. "blocks.0.attn.qkv.weight"
  std::vector<int64_t> shape;  // DiT state_dict shape, e.g. {3D, D}
  size_t numel = 0;
  size_t offset = 0;           // element offset inside the flat buffer it lives in
  bool trainable = true;       // false only for pos_embed (fixed sin-cos)
};

// Which copy of a parameter to read or write.
enum class Slot : int { Model = 0, EMA = 1, AdamM = 2, AdamV = 3, Grad = 4 };

// Per-timestep tables in float64 as TypeScript computes them (length T each).
struct DiffusionTables {
  std::vector<double> sqrt_abar, sqrt_1m_abar, sqrt_recip_abar, sqrt_recipm1_abar,
      coef1, coef2, log_beta, post_log_var;
  int steps() const { return static_cast<int>(sqrt_abar.size()); }
  void validate() const;  // equal lengths >= 1, all finite
};

struct TrainHyper {
  OptimHyper optim;       // optim.step is ignored: the model counts its own steps
  double vb_scale = 1.0;  // "rescaled MSE": T/1000
  // Data parallelism: this call's N samples are samples
  // [shard_offset, shard_offset + N) of a global batch of global_batch
  // (0 = N) samples. Sample i of the global batch draws its noise from Philox
  // blocks [o + i*b, o + (i+1)*b), b = ceil(C*H*W / 4), o = the stream's
  // offset before the step, which then advances by global_batch * b: the
  // same noise per global sample for any world size.
  int shard_offset = 0;
  int global_batch = 0;
};

struct TrainResult {
  std::vector<float> loss, mse, vb;  // per sample [N]; [global_batch] with a collective
  double grad_norm = 0.0;
  bool skipped = false;  // non-finite loss or gradient: weights untouched
  int64_t step = 0;      // optimizer steps taken so far (not counting skipped)
};

template <typename T>
class DiT {
 public:
  DiT(const DiTConfig& cfg, std::shared_ptr<Backend<T>> backend);
  ~DiT();
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  const DiTConfig& config() const;
  Backend<T>& backend();
  // All parameters in DiT state_dict order (pos_embed first, as in models.py).
  const std::vector<ParamInfo>& params() const;
  size_t num_trainable() const;  // total elements of trainable parameters

  // DiT's initialisation from `seed` (Xavier-uniform Linear weights, N(0, 0.02)
  // class table and timestep-MLP weights, zero adaLN and final Linear, fixed
  // pos_embed); EMA := weights; Adam moments := 0; step := 0.
  void init(uint64_t seed);

  // Read / write one parameter (host buffer of numel elements). Unknown names,
  // Slot::Grad writes and non-trainable AdamM/AdamV/Grad reads throw speed::Error.
  void read_param(const std::string& name, Slot slot, T* host) const;
  void write_param(const std::string& name, Slot slot, const T* host);

  // Activation recomputation (gradient checkpointing per block) for training:
  // forward keeps only each block's input [N, L, D] and adaLN output [N, 6D];
  // backward re-runs each block's forward just before differentiating it.
  // Memory ~ depth + 18 instead of 18 * depth [N, L, D] buffers, for ~1/3
  // more compute; results are bitwise those without it (same ops, same order).
  void set_recompute(bool on);
  bool recompute() const;
  // Bytes of activation memory a call at batch N allocates (training: a
  // train_step / loss_and_grad under the current recompute setting; else a
  // forward / sample_step), not counting parameters, moments and EMA.
  size_t activation_bytes(int N, bool training) const;

  void set_tables(const DiffusionTables& tables);  // required before train/sample
  bool has_tables() const;

  // The noise stream (Philox seed and block offset) and the Adam step counter:
  // everything a checkpoint needs to resume exactly.
  uint64_t noise_seed() const;
  uint64_t noise_offset() const;
  void set_noise_state(uint64_t seed, uint64_t offset);
  int64_t step() const;
  void set_step(int64_t step);

  // Data parallelism. With a collective of size W > 1, train_step
  // averages the gradient over the ranks (one all-reduce of the flat buffer)
  // between backward and the optimizer step, so the grad norm, clipping and
  // the non-finite skip are global: a rank whose loss is not finite poisons
  // its gradient with NaN before the reduction, so every rank skips. Then the
  // per-sample loss, mse and vb of all ranks are gathered (rank order), which
  // needs global_batch = W * N. nullptr (or size 1) = one process, bitwise as
  // without it; even_alone runs the data-parallel path with a world of one
  // (tests of the NCCL path on one GPU).
  void set_collective(std::shared_ptr<Collective> c, bool even_alone = false);
  // Weights, EMA, Adam moments, the step and the noise state from `root` to
  // every rank (at start and after a resume). No-op without a collective.
  void broadcast_state(int root);

  // One training step: noise from the stream, q_sample, forward, IDDPM loss,
  // backward, clip, AdamW, EMA. x0 [N, C, H, W]; t [N] in [0, T); y [N] labels
  // after label dropout (num_classes = null row; ignored when unconditional);
  // weight [N] multiplies each sample's mse.
  TrainResult train_step(const T* x0, const int32_t* t, const int32_t* y,
                         const T* weight, int N, const TrainHyper& hp);

  // Forward + loss + backward only, with the noise given (eps [N, C, H, W]):
  // returns the batch-mean loss and leaves the gradient in Slot::Grad.
  // For gradient checks; does not touch the noise stream or the optimizer.
  double loss_and_grad(const T* x0, const T* eps, const int32_t* t, const int32_t* y,
                       const T* weight, int N, double vb_scale,
                       std::vector<T>* loss = nullptr, std::vector<T>* mse = nullptr,
                       std::vector<T>* vb = nullptr);

  // out [N, Cout, H, W] = model(x, t, y) with the weights or the EMA weights.
  void forward(const T* x, const int32_t* t, const int32_t* y, int N, T* out,
               bool use_ema);

  // One reverse-process step in place on x [N, C, H, W] at time index t (the
  // original index given to the network), labels y [N]; with coefs.cfg the model
  // runs on [x; x] with labels [y; null]. Noise comes from the stream.
  void sample_step(T* x, int t, const int32_t* y, int N, const SampleStepCoefs& coefs,
                   bool use_ema);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class DiT<float>;
extern template class DiT<double>;

}  // namespace speed
