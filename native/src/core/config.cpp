// DiTConfig validation, the DiT presets and DiffusionTables validation.
// Messages name the field and the expected range so the N-API layer can pass
// them to the user unchanged.
#include <cmath>
#include <sstream>

#include "speed/dit.h"

namespace speed {

namespace {

void need(bool ok, const std::string& field, const std::string& expected, double got) {
  if (ok) return;
  std::ostringstream os;
  os << "DiTConfig." << field << ": expected " << expected << ", got " << got;
  throw Error(os.str());
}

}  // namespace

void DiTConfig::validate() const {
  need(input_size >= 1 && input_size <= 4096, "input_size", "an integer in [1, 4096]", input_size);
  need(patch_size >= 1 && patch_size <= input_size, "patch_size",
       "an integer in [1, input_size=" + std::to_string(input_size) + "]", patch_size);
  need(input_size % patch_size == 0, "input_size",
       "a multiple of patch_size=" + std::to_string(patch_size), input_size);
  need(in_channels >= 1 && in_channels <= 4096, "in_channels", "an integer in [1, 4096]", in_channels);
  need(hidden_size >= 4 && hidden_size <= 65536, "hidden_size", "an integer in [4, 65536]", hidden_size);
  // The 2D sin-cos position embedding splits D into 4 equal parts.
  need(hidden_size % 4 == 0, "hidden_size", "a multiple of 4 (2D sin-cos position embedding)", hidden_size);
  need(depth >= 1 && depth <= 1024, "depth", "an integer in [1, 1024]", depth);
  need(num_heads >= 1 && num_heads <= hidden_size, "num_heads",
       "an integer in [1, hidden_size=" + std::to_string(hidden_size) + "]", num_heads);
  need(hidden_size % num_heads == 0, "hidden_size",
       "a multiple of num_heads=" + std::to_string(num_heads), hidden_size);
  need(std::isfinite(mlp_ratio) && mlp_ratio > 0 && mlp_ratio <= 64, "mlp_ratio", "a number in (0, 64]", mlp_ratio);
  need(mlp_hidden() >= 1, "mlp_ratio", "hidden_size * mlp_ratio >= 1", mlp_ratio);
  need(num_classes >= 0 && num_classes <= 10000000, "num_classes",
       "an integer in [0, 1e7] (0 = unconditional)", num_classes);
  need(std::isfinite(class_dropout_prob) && class_dropout_prob >= 0 && class_dropout_prob < 1,
       "class_dropout_prob", "a number in [0, 1)", class_dropout_prob);
  // Token count and per-token sizes must fit the int-sized backend arguments.
  double tokens = static_cast<double>(num_tokens());
  need(tokens * hidden_size * mlp_ratio < 2147483647.0, "input_size",
       "a size whose tokens x mlp hidden fits in 2^31", input_size);
}

DiTConfig dit_preset(const std::string& name, DiTConfig base) {
  struct Size { const char* tag; int depth, hidden, heads; };
  static const Size sizes[] = {{"Ti", 12, 192, 3}, {"S", 12, 384, 6}, {"B", 12, 768, 12},
                               {"L", 24, 1024, 16}, {"XL", 28, 1152, 16}};
  static const int patches[] = {2, 4, 8};
  for (const Size& s : sizes) {
    for (int p : patches) {
      if (name == std::string("DiT-") + s.tag + "/" + std::to_string(p)) {
        base.depth = s.depth;
        base.hidden_size = s.hidden;
        base.num_heads = s.heads;
        base.patch_size = p;
        return base;
      }
    }
  }
  std::string valid;
  for (const Size& s : sizes)
    for (int p : patches)
      valid += std::string(valid.empty() ? "" : ", ") + "DiT-" + s.tag + "/" + std::to_string(p);
  throw Error("unknown DiT preset '" + name + "': expected one of " + valid);
}

void DiffusionTables::validate() const {
  const std::vector<double>* cols[] = {&sqrt_abar, &sqrt_1m_abar, &sqrt_recip_abar, &sqrt_recipm1_abar,
                                       &coef1, &coef2, &log_beta, &post_log_var};
  const char* names[] = {"sqrt_abar", "sqrt_1m_abar", "sqrt_recip_abar", "sqrt_recipm1_abar",
                         "coef1", "coef2", "log_beta", "post_log_var"};
  size_t n = sqrt_abar.size();
  if (n < 1) throw Error("DiffusionTables.sqrt_abar: expected at least 1 time step, got 0");
  for (int k = 0; k < 8; ++k) {
    if (cols[k]->size() != n)
      throw Error(std::string("DiffusionTables.") + names[k] + ": expected length " + std::to_string(n) +
                  " (as sqrt_abar), got " + std::to_string(cols[k]->size()));
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite((*cols[k])[i]))
        throw Error(std::string("DiffusionTables.") + names[k] + "[" + std::to_string(i) +
                    "]: expected a finite number, got " + std::to_string((*cols[k])[i]));
  }
}

}  // namespace speed
