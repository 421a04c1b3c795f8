// Rotary embedding frequencies, with the `rope_scaling` variants Llama-family
// checkpoints use.
#ifndef KVFOLD_KERNELS_ROPE_H_
#define KVFOLD_KERNELS_ROPE_H_

#include <cstdint>
#include <vector>

namespace kvfold {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeParams {
  double theta = 10000.0;
  int64_t rotary_dim = 0;  // = head_dim
  RopeScalingType scaling = RopeScalingType::kNone;
  double factor = 1.0;  // linear and llama3
  // llama3 only:
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192.0;
};

// inv_freq[i] for i < rotary_dim / 2, as transformers computes it.
std::vector<float> RopeInvFreq(const RopeParams& p);

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_ROPE_H_
