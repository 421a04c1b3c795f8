#include "kernels/rope.h"

#include <cmath>

namespace kvfold {

std::vector<float> RopeInvFreq(const RopeParams& p) {
  const int64_t half = p.rotary_dim / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // transformers: 1 / theta ** (2i / dim) with the exponent in f32.
    const float exponent = float(2 * i) / float(p.rotary_dim);
    inv[i] = float(1.0 / std::pow(p.theta, double(exponent)));
  }
  switch (p.scaling) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear:
      for (float& f : inv) f = float(f / p.factor);
      break;
    case RopeScalingType::kLlama3: {
      // Long wavelengths are slowed by `factor`, short ones kept, and the
      // band between is interpolated smoothly.
      const double low_wavelen = p.original_max_position / p.low_freq_factor;
      const double high_wavelen = p.original_max_position / p.high_freq_factor;
      for (float& f : inv) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > low_wavelen) {
          f = float(f / p.factor);
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (p.original_max_position / wavelen - p.low_freq_factor) /
              (p.high_freq_factor - p.low_freq_factor);
          f = float((1.0 - smooth) * f / p.factor + smooth * f);
        }
      }
      break;
    }
  }
  return inv;
}

}  // namespace kvfold
