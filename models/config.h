// ModelConfig: the parts of a Hugging Face `config.json` a Llama-family
// forward pass needs, validated.
#ifndef KVFOLD_MODELS_CONFIG_H_
#define KVFOLD_MODELS_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/rope.h"

namespace kvfold {

enum class Architecture { kLlama, kMistral, kQwen2 };
const char* ArchitectureName(Architecture a);

inline constexpr size_t kMaxConfigBytes = 1 << 20;

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float rms_norm_eps = 1e-6f;
  RopeParams rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;  // 0 = none (Mistral v0.1 sets 4096)
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  std::string torch_dtype;

  // Parses `text`; `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& text,
                                              const std::string& source);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // Adds the eos ids of a `generation_config.json` (Hugging Face generate()
  // stops at these too, e.g. Llama 3 Instruct's end-of-turn).
  absl::Status MergeGenerationConfig(const std::string& path);

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Parameters held in the weights (embedding and head counted once if tied).
  int64_t NumParameters() const;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_CONFIG_H_
