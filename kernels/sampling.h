// Token selection from a row of logits: argmax and seeded top-k/top-p sampling.
#ifndef KVFOLD_KERNELS_SAMPLING_H_
#define KVFOLD_KERNELS_SAMPLING_H_

#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace kvfold {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  int32_t top_k = 0;         // 0 = no limit
  float top_p = 1.0f;        // nucleus mass kept, in (0, 1]
};

absl::Status ValidateSamplingParams(const SamplingParams& p);

// First index of the largest value (ties resolve to the lowest id, as torch).
int32_t Argmax(const float* logits, int64_t n);

// Greedy when temperature == 0; otherwise softmax(logits / temperature)
// restricted to the top_k largest and to the smallest set whose mass reaches
// top_p, renormalised, and sampled with `rng`.
int32_t Sample(const float* logits, int64_t n, const SamplingParams& p,
               std::mt19937_64& rng);

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_SAMPLING_H_
