// The file a learned cache policy's parameters live in (--compressor),
// written by tools/calibrate/: a safetensors file whose __metadata__ names
// the format, the method, its sizes and the model it was calibrated for.
//
//   format=kvfold-compressor format_version=1 method=lococo variant=...
//   cache_slots compressed_slots kernel_size hh_keep_rate buffer
//   model.name model.num_hidden_layers model.hidden_size
//   model.num_attention_heads model.num_key_value_heads model.head_dim
//   model.vocab_size   (and calibration.* notes, kept as they are)
//   tensors lococo.layers.{l}.conv.weight [Mc, 2 * head_dim, kernel],
//           lococo.layers.{l}.conv.bias [Mc], lococo.layers.{l}.alpha [1]
//
// method=matryoshka (MatryoshkaKV projections):
//   rank_budgets "1,0.5,0.25" (strictly descending fractions of the
//   features kept) and ranks.{i} for each: 2 * layers * kv_heads integers,
//   layer-major, then KV head, then K, V
//   tensors matryoshka.layers.{l}.key_basis [kv_heads, d, d] (U, columns the
//           basis vectors), .value_basis, .key_mean [kv_heads, d], .value_mean
#ifndef KVFOLD_MODELS_COMPRESSOR_FILE_H_
#define KVFOLD_MODELS_COMPRESSOR_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/lococo.h"
#include "cache/matryoshka.h"
#include "models/config.h"

namespace kvfold {

// The shape of the model a compressor was calibrated for.
struct CalibratedFor {
  std::string name;
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
};

struct CompressorFile {
  std::string path;
  std::string method;  // "lococo" or "matryoshka"
  CalibratedFor model;
  std::map<std::string, std::string> metadata;  // everything, as written
  std::shared_ptr<const LoCoCoParams> lococo;          // method lococo
  std::shared_ptr<const MatryoshkaParams> matryoshka;  // method matryoshka
};

// Reads and checks a compressor file: a clear error naming the file and the
// field for a missing, corrupt or inconsistent one.
absl::StatusOr<std::shared_ptr<const CompressorFile>> LoadCompressorFile(
    const std::string& path);

// Writes MatryoshkaKV projections (validated) for `model`, with extra
// metadata `notes` (calibration.*), atomically (a temporary file renamed).
absl::Status SaveMatryoshkaFile(const std::string& path, const MatryoshkaParams& params,
                                const CalibratedFor& model,
                                const std::map<std::string, std::string>& notes);

// An error unless the file was calibrated for a model of this shape.
absl::Status CheckCompressorModel(const CompressorFile& file,
                                  const ModelConfig& config);

}  // namespace kvfold

#endif  // KVFOLD_MODELS_COMPRESSOR_FILE_H_
