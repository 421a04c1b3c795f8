// Helpers shared by the op tests (CPU against double-precision references,
// CUDA against the CPU ops).
#ifndef KVFOLD_KERNELS_TEST_UTIL_H_
#define KVFOLD_KERNELS_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace kvfold {

// n normal samples with standard deviation `scale`, reproducible by seed.
inline std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// max |got - want| / max |want|; infinite if `got` has a NaN.
template <typename T>
double RelErr(const std::vector<float>& got, const std::vector<T>& want) {
  double err = 0, mx = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    err = std::max(err, std::abs(double(got[i]) - double(want[i])));
    mx = std::max(mx, std::abs(double(want[i])));
  }
  return err / mx;
}

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_TEST_UTIL_H_
