// Hugging Face safetensors checkpoints: mmap'd files, single or sharded, with
// the header fully validated before any tensor is touched.
#ifndef KVFOLD_MODELS_SAFETENSORS_H_
#define KVFOLD_MODELS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace kvfold {

// Limits on what a (possibly hostile) file may ask of us.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;
inline constexpr size_t kMaxSafetensorsTensors = 1 << 20;

struct TensorEntry {
  std::string name;
  std::string dtype_name;  // as written: "F32", "BF16", "I64", ...
  Shape shape;
  uint64_t begin = 0;      // byte range inside the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // points into the mapping
};

// One mmap'd .safetensors file. Open() validates: file size, header length,
// JSON syntax, entry fields, known dtypes, shapes, data_offsets inside the
// file and matching numel * dtype size, no two tensors overlapping.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Loads `name` as f32, converting from F32/BF16/F16; the stored shape must
  // equal `expected` (errors name the tensor, the file and both shapes).
  absl::StatusOr<Tensor> LoadF32(const std::string& name,
                                 const Shape& expected) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One f32 tensor to write.
struct NamedTensor {
  std::string name;
  Shape shape;
  std::vector<float> values;  // NumElements(shape) of them
};

// Writes an F32 safetensors file with `metadata` (__metadata__), whole or
// not at all (a temporary file renamed over `path`).
absl::Status WriteSafetensorsF32(const std::string& path,
                                 const std::vector<NamedTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata);

// All weights of a checkpoint directory: `model.safetensors`, or the shards
// listed in `model.safetensors.index.json` (every shard validated, every
// tensor of the index found in the shard it names, no name in two shards).
class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(
      const std::string& dir);

  bool Has(const std::string& name) const;
  // Loads `name` as f32, converting from F32/BF16/F16. The stored shape must
  // equal `expected`; errors name the tensor, its file and both shapes.
  absl::StatusOr<Tensor> LoadF32(const std::string& name,
                                 const Shape& expected) const;
  // Loads rows [row_begin, row_end) of a 2-D (or 1-D) tensor: a shard of a
  // weight for tensor parallelism, touching only those bytes.
  absl::StatusOr<Tensor> LoadRowsF32(const std::string& name,
                                     const Shape& expected, int64_t row_begin,
                                     int64_t row_end) const;
  // Loads columns [col_begin, col_end) of a 2-D tensor (a row-parallel
  // shard), touching only those bytes of every row.
  absl::StatusOr<Tensor> LoadColsF32(const std::string& name,
                                     const Shape& expected, int64_t col_begin,
                                     int64_t col_end) const;
  // Bytes of tensor data converted so far (what loading really touched).
  uint64_t bytes_read() const { return bytes_read_; }
  std::vector<std::string> Names() const;

 private:
  struct Located {
    const SafetensorsFile* file;
    const TensorEntry* entry;
  };
  absl::StatusOr<Located> Find(const std::string& name) const;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> index_;
  mutable uint64_t bytes_read_ = 0;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_SAFETENSORS_H_
