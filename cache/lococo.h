// LoCoCo (ALGORITHMS.md section 1): a fixed number of slots per layer, the
// heavy hitters kept as they are and the other tokens fused into slots by a
// learned per-layer Conv1d. The parameters come from a calibrated
// compressor file (tools/calibrate/, read by models/compressor_file.h).
#ifndef KVFOLD_CACHE_LOCOCO_H_
#define KVFOLD_CACHE_LOCOCO_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/compressed_cache.h"
#include "kernels/tensor.h"

namespace kvfold {

// One layer's module: Conv1d(2 * head_dim -> compressed_slots, kernel,
// padding kernel / 2) + ReLU, softmax over the tokens, blended with the hard
// top-k selection by alpha.
struct LoCoCoLayer {
  // [compressed_slots, 2 * head_dim, kernel] f32 (PyTorch's layout, read
  // as [compressed_slots, 2 * head_dim * kernel] by the GEMM); the input
  // channels are the key features, then the value features.
  Tensor conv_weight;
  Tensor conv_bias;  // [compressed_slots] f32
  float alpha = 1.0f;
};

struct LoCoCoParams {
  int64_t slots = 0;             // M: slots per layer and KV head
  int64_t compressed_slots = 0;  // M * (1 - hh_keep_rate), the fused slots
  int64_t kernel = 0;            // odd
  int64_t head_dim = 0;
  double hh_keep_rate = 0;
  int64_t buffer = 16;     // the buffer it was calibrated with
  std::string variant;     // "official" or "pure"
  std::vector<LoCoCoLayer> layers;

  int64_t heavy_slots() const { return slots - compressed_slots; }
  // Checks sizes and ranges, and the shape of every layer present (names
  // the field and the layer).
  absl::Status Validate() const;
};

// Seeded random parameters with the official initialisation (conv weights
// ~ N(0, 1), bias ~ U(+-1/sqrt(fan_in)), alpha 0.5, or 1 when hh_keep_rate
// is 0): what calibration starts from, and what benchmarks time.
LoCoCoParams RandomLoCoCo(int64_t num_layers, int64_t head_dim, int64_t slots,
                          double hh_keep_rate, int64_t kernel, uint64_t seed);

// Compresses a layer holding more than M + buffer slots back to M, in every
// phase (the module's output has a fixed size). `params` must be valid.
std::shared_ptr<const Compressor> MakeLoCoCoCompressor(
    std::shared_ptr<const LoCoCoParams> params, int64_t buffer);

}  // namespace kvfold

#endif  // KVFOLD_CACHE_LOCOCO_H_
