// The Llama-family decoder (Llama 2/3, Mistral, Qwen2): hyperparameters from
// ModelConfig, named weights, and the forward pass over a KvCache.
//
// The model is immutable after Load() and thread-compatible; per-request
// state (cache, scratch) is passed in.
#ifndef KVFOLD_MODELS_LLAMA_H_
#define KVFOLD_MODELS_LLAMA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/kv_cache.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"
#include "models/config.h"

namespace kvfold {

struct LlamaLayerWeights {
  Tensor attn_norm;       // [hidden]
  Tensor wq, wk, wv, wo;  // [q_dim, hidden] [kv_dim, hidden] x2 [hidden, q_dim]
  Tensor bq, bk, bv, bo;  // [q_dim] [kv_dim] [kv_dim] [hidden]; empty if none
  Tensor mlp_norm;        // [hidden]
  Tensor w_gate, w_up;    // [intermediate, hidden]
  Tensor w_down;          // [hidden, intermediate]
};

struct LlamaWeights {
  Tensor embed;  // [vocab, hidden]
  std::vector<LlamaLayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; empty when tied to `embed`
};

enum class LogitsFor { kNone, kLast, kAll };

// Where the weights live and in which type. The CPU holds f32; a CUDA device
// holds the matrices (embedding, projections, head) as bf16, f16 or f32 and
// the norms and biases as f32.
struct LoadOptions {
  Device device = Device::Cpu();
  DType dtype = DType::kF32;
};

// Checks a device/dtype pair (the CLI calls it before loading).
absl::Status ValidateLoadOptions(const LoadOptions& options);

// Activations for one forward call, grown on demand and reused, on the
// model's device.
struct ForwardScratch {
  Tensor x, xn;        // [n, hidden]
  Tensor q, k, v;      // [n, q_dim], [n, kv_dim], [n, kv_dim]
  Tensor attn;         // [n, q_dim]
  Tensor gate, up;     // [n, intermediate]
  Tensor col_sums;     // [kv_heads, keys]
  Tensor logits;       // [n, vocab] (on a device; copied out to the host)
  Tensor ids;          // [n] i32 token ids (on a device)
  Tensor rope_device;  // [n] i32 RoPE positions (on a device)
  std::vector<int32_t> rope_positions;  // [n]
  std::vector<int32_t> rope_uploaded;   // what rope_device holds
  int64_t rows = 0;
};

struct ModelStats {
  int64_t parameters = 0;
  int64_t weight_bytes = 0;  // as held in memory (f32 on the CPU)
  uint64_t bytes_read = 0;   // checkpoint bytes touched while loading
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of a checkpoint directory.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const std::string& dir, const LoadOptions& options = {});
  // Random weights of a given shape (benchmarks; no files needed).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Random(
      const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelStats& stats() const { return stats_; }
  Device device() const { return options_.device; }
  DType dtype() const { return options_.dtype; }
  // The cache shape of this model; its stream says where the cache lives.
  CacheShape cache_shape(const Stream& stream) const {
    return {config_.num_layers, config_.num_kv_heads, config_.head_dim,
            inv_freq_, stream};
  }

  // Runs `tokens` at absolute `positions` through the model on the stream
  // (which must be on the model's device), appending their keys/values to
  // `cache`. Writes logits [1 or n, vocab] to host memory `logits` as
  // `which` says (kNone: `logits` may be null).
  absl::Status Forward(const Stream& s, absl::Span<const int32_t> tokens,
                       absl::Span<const int32_t> positions, LogitsFor which,
                       KvCache& cache, ForwardScratch& scratch,
                       float* logits) const;

 private:
  LlamaModel(ModelConfig config, LlamaWeights weights, LoadOptions options);
  // Copies what the forward pass reads besides the weights to the device.
  absl::Status PlaceTables();
  absl::Status Attention(const Stream& s, int layer, const int32_t* positions,
                         int64_t n, KvCache& cache,
                         ForwardScratch& scratch) const;

  ModelConfig config_;
  LlamaWeights w_;
  LoadOptions options_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  Tensor inv_freq_device_;       // the same on a device (empty on the CPU)
  ModelStats stats_;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_LLAMA_H_
