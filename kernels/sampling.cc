#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace kvfold {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError("temperature must be >= 0, got " +
                                      std::to_string(p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError("top_k must be >= 0, got " +
                                      std::to_string(p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError("top_p must be in (0, 1], got " +
                                      std::to_string(p.top_p));
  }
  return absl::OkStatus();
}

int32_t Argmax(const float* logits, int64_t n) {
  return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
}

int32_t Sample(const float* logits, int64_t n, const SamplingParams& p,
               std::mt19937_64& rng) {
  if (p.temperature == 0.0f) return Argmax(logits, n);
  // Candidates sorted by logit, largest first (stable: lower id wins ties).
  int64_t keep = (p.top_k > 0) ? std::min<int64_t>(p.top_k, n) : n;
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_logit);
  ids.resize(keep);

  std::vector<double> prob(keep);
  const double mx = logits[ids[0]];
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[ids[i]] - mx) / p.temperature);
    sum += prob[i];
  }
  // Nucleus: keep the smallest prefix whose mass reaches top_p.
  double mass = 0.0;
  int64_t cut = keep;
  for (int64_t i = 0; i < keep; ++i) {
    mass += prob[i] / sum;
    if (mass >= p.top_p) {
      cut = i + 1;
      break;
    }
  }
  const double total = std::accumulate(prob.begin(), prob.begin() + cut, 0.0);
  const double u = std::uniform_real_distribution<double>(0.0, total)(rng);
  double acc = 0.0;
  for (int64_t i = 0; i < cut; ++i) {
    acc += prob[i];
    if (u < acc) return ids[i];
  }
  return ids[cut - 1];
}

}  // namespace kvfold
