#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/files.h"

namespace kvfold {
namespace {

using Json = nlohmann::json;

// Real headers nest three levels deep; anything far deeper is hostile.
constexpr int kMaxJsonDepth = 32;

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// `path: tensor "name": ` prefix. Names are escaped so a message stays on
// one line whatever bytes the file put in them.
std::string Where(const std::string& path, const std::string& name) {
  return absl::StrCat(path, ": tensor \"", absl::CHexEscape(name), "\": ");
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return absl::StrCat(dir, "/", name);
}

// A short, one-line rendering of a JSON value for messages.
std::string Dump(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Every dtype the format defines, so that a valid file holding, say, I64
// position ids opens fine; only loading it as a weight is refused.
std::optional<size_t> SafetensorsDTypeSize(std::string_view name) {
  static constexpr std::pair<std::string_view, size_t> kSizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
      {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
  };
  for (const auto& [n, size] : kSizes) {
    if (n == name) return size;
  }
  return std::nullopt;
}

// Parses without exceptions; the depth limit keeps a hostile header from
// costing more than its size.
absl::StatusOr<Json> ParseJson(const char* begin, const char* end,
                               const std::string& path, const char* what) {
  bool too_deep = false;
  Json::parser_callback_t limit_depth =
      [&too_deep](int depth, Json::parse_event_t, Json&) {
        if (depth > kMaxJsonDepth) too_deep = true;
        return !too_deep;
      };
  Json json = Json::parse(begin, end, limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return Invalid(path, ": ", what, " nests deeper than ", kMaxJsonDepth,
                   " levels");
  }
  if (json.is_discarded()) {
    return Invalid(path, ": ", what, " is not valid JSON");
  }
  if (!json.is_object()) {
    return Invalid(path, ": ", what, " is a JSON ", json.type_name(),
                   ", not an object");
  }
  return json;
}

// Validates one tensor entry of the header and fills `entry` (but not
// `data`). `data_size` is the byte size of the data section.
absl::Status ParseEntry(const std::string& path, const std::string& name,
                        const Json& value, uint64_t data_size,
                        TensorEntry* entry) {
  const std::string where = Where(path, name);
  if (!value.is_object()) {
    return Invalid(where, "entry is a JSON ", value.type_name(),
                   ", not an object");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) {
      return Invalid(where, "missing \"", field, "\"");
    }
  }
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) {
    return Invalid(where, "\"dtype\" is not a string");
  }
  entry->name = name;
  entry->dtype_name = dtype.get<std::string>();
  const std::optional<size_t> elem_size =
      SafetensorsDTypeSize(entry->dtype_name);
  if (!elem_size) {
    return Invalid(where, "unknown dtype \"",
                   absl::CHexEscape(entry->dtype_name), "\"");
  }

  const Json& shape = value["shape"];
  if (!shape.is_array()) {
    return Invalid(where, "\"shape\" is not an array");
  }
  // The product of the non-zero dims must fit in int64 (Shape's type) so
  // that every later numel / row computation is overflow-free.
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const Json& dim : shape) {
    if (dim.is_number_integer() && !dim.is_number_unsigned()) {
      return Invalid(where, "negative dimension ", dim.get<int64_t>(),
                     " in \"shape\"");
    }
    if (!dim.is_number_unsigned()) {
      return Invalid(where, "\"shape\" holds ", Dump(dim), ", not an integer");
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d == 0) {
      has_zero = true;
    } else if (nonzero_product > static_cast<uint64_t>(INT64_MAX) / d) {
      return Invalid(where, "shape ", Dump(shape), " is too large");
    } else {
      nonzero_product *= d;
    }
    entry->shape.push_back(static_cast<int64_t>(d));
  }
  const uint64_t numel = has_zero ? 0 : nonzero_product;

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 ||
      !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    return Invalid(where, "\"data_offsets\" is ", Dump(offsets),
                   ", not [begin, end] with unsigned integers");
  }
  entry->begin = offsets[0].get<uint64_t>();
  entry->end = offsets[1].get<uint64_t>();
  const std::string range =
      absl::StrCat("[", entry->begin, ", ", entry->end, "]");
  if (entry->begin > entry->end) {
    return Invalid(where, "data_offsets ", range, " begin after they end");
  }
  if (entry->end > data_size) {
    return absl::DataLossError(absl::StrCat(
        where, "data_offsets ", range,
        " extend past the end of the data section (", data_size, " bytes)"));
  }
  // numel <= INT64_MAX and size <= 8, so compare by division: no overflow.
  const uint64_t held = entry->end - entry->begin;
  if (held % *elem_size != 0 || held / *elem_size != numel) {
    return Invalid(where, "data_offsets ", range, " hold ", held,
                   " bytes but shape ", ShapeString(entry->shape), " of ",
                   entry->dtype_name, " needs ", numel, " x ", *elem_size,
                   " bytes");
  }
  return absl::OkStatus();
}

// Validates the whole file (`bytes`, `size` >= 8) and fills the tables.
absl::Status ParseFile(const std::string& path, const uint8_t* bytes,
                       uint64_t size,
                       std::map<std::string, TensorEntry>* tensors,
                       std::map<std::string, std::string>* metadata) {
  // The length is little-endian whatever the host is.
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Invalid(path, ": header length ", header_size,
                   " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                   " bytes (not a safetensors file?)");
  }
  if (8 + header_size > size) {
    return absl::DataLossError(absl::StrCat(
        path, ": header length ", header_size,
        " extends past the end of the file (", size, " bytes; truncated?)"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  KVFOLD_ASSIGN_OR_RETURN(
      const Json json, ParseJson(header, header + header_size, path, "header"));
  if (json.size() > kMaxSafetensorsTensors + 1) {
    return Invalid(path, ": header lists ", json.size(),
                   " entries, more than the limit of ", kMaxSafetensorsTensors,
                   " tensors");
  }

  const uint64_t data_size = size - 8 - header_size;
  const uint8_t* data = bytes + 8 + header_size;
  for (const auto& [key, value] : json.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return Invalid(path, ": \"__metadata__\" is not an object");
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return Invalid(path, ": \"__metadata__\" value for \"",
                         absl::CHexEscape(mkey), "\" is a JSON ",
                         mvalue.type_name(), ", not a string");
        }
        (*metadata)[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    TensorEntry entry;
    KVFOLD_RETURN_IF_ERROR(ParseEntry(path, key, value, data_size, &entry));
    entry.data = data + entry.begin;
    (*tensors)[key] = std::move(entry);
  }

  // Overlap check over non-empty ranges sorted by start: each must begin at
  // or after the furthest end seen so far.
  std::vector<const TensorEntry*> sorted;
  sorted.reserve(tensors->size());
  for (const auto& [name, entry] : *tensors) {
    if (entry.begin < entry.end) sorted.push_back(&entry);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorEntry* a, const TensorEntry* b) {
              return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
            });
  const TensorEntry* furthest = nullptr;
  for (const TensorEntry* entry : sorted) {
    if (furthest != nullptr && entry->begin < furthest->end) {
      return Invalid(Where(path, entry->name), "data_offsets [", entry->begin,
                     ", ", entry->end, "] overlap tensor \"",
                     absl::CHexEscape(furthest->name), "\" at [",
                     furthest->begin, ", ", furthest->end, "]");
    }
    if (furthest == nullptr || entry->end > furthest->end) furthest = entry;
  }
  return absl::OkStatus();
}

// Checks shared by LoadF32 and LoadRowsF32: stored shape and dtype.
absl::StatusOr<DType> CheckWeight(const std::string& path,
                                  const TensorEntry& entry,
                                  const Shape& expected) {
  if (entry.shape != expected) {
    return Invalid(Where(path, entry.name), "shape ", ShapeString(entry.shape),
                   " does not match the expected ", ShapeString(expected));
  }
  if (entry.dtype_name == "F32") return DType::kF32;
  if (entry.dtype_name == "BF16") return DType::kBF16;
  if (entry.dtype_name == "F16") return DType::kF16;
  return Invalid(Where(path, entry.name), "unsupported dtype ",
                 entry.dtype_name, " for weights (want F32, BF16 or F16)");
}

// Safetensors does not promise aligned data, and the 16-bit converters read
// through uint16_t pointers: misaligned sources go through a small buffer.
void ConvertToF32Unaligned(DType dtype, const uint8_t* src, float* dst,
                           size_t n) {
  const size_t elem = DTypeSize(dtype);
  if (reinterpret_cast<uintptr_t>(src) % elem == 0) {
    ConvertToF32(dtype, src, dst, n);
    return;
  }
  alignas(8) uint8_t buffer[4096];
  const size_t chunk = sizeof(buffer) / elem;
  for (size_t i = 0; i < n; i += chunk) {
    const size_t m = std::min(chunk, n - i);
    std::memcpy(buffer, src + i * elem, m * elem);
    ConvertToF32(dtype, buffer, dst + i, m);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  // O_NONBLOCK: a FIFO must not block the open; fstat then rejects it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot open"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Invalid(path, ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(
        path, ": file is ", size,
        " bytes, shorter than the 8-byte header length (truncated?)"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);  // The mapping keeps the file alive.
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": mmap failed"));
  }
  auto file = absl::WrapUnique(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;
  KVFOLD_RETURN_IF_ERROR(ParseFile(path, static_cast<const uint8_t*>(map), size,
                                   &file->tensors_, &file->metadata_));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(
    const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  }
  auto store = std::make_unique<WeightStore>();
  store->dir_ = dir;

  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (!IsRegularFile(index_path)) {
    const std::string path = JoinPath(dir, "model.safetensors");
    if (!IsRegularFile(path)) {
      return absl::NotFoundError(absl::StrCat(
          path, ": no such file (and no model.safetensors.index.json)"));
    }
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                            SafetensorsFile::Open(path));
    store->files_.push_back(std::move(file));
  } else {
    KVFOLD_ASSIGN_OR_RETURN(const std::string text, ReadTextFile(index_path, kMaxSafetensorsHeaderBytes));
    KVFOLD_ASSIGN_OR_RETURN(
        const Json index,
        ParseJson(text.data(), text.data() + text.size(), index_path, "index"));
    const auto weight_map = index.find("weight_map");
    if (weight_map == index.end() || !weight_map->is_object() ||
        weight_map->empty()) {
      return Invalid(index_path,
                     ": \"weight_map\" is missing, empty or not an object");
    }
    // Shard file name -> the tensor names the index puts in it.
    std::map<std::string, std::vector<std::string>> shards;
    for (const auto& [name, shard] : weight_map->items()) {
      // Shard names come from a downloaded file: keep them inside `dir`.
      const auto* file = shard.get_ptr<const std::string*>();
      if (file == nullptr || file->empty() || *file == "." || *file == ".." ||
          file->find('/') != std::string::npos) {
        return Invalid(index_path, ": tensor \"", absl::CHexEscape(name),
                       "\": shard ", Dump(shard), " is not a plain file name");
      }
      shards[*file].push_back(name);
    }
    for (const auto& [shard, names] : shards) {
      KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                              SafetensorsFile::Open(JoinPath(dir, shard)));
      for (const std::string& name : names) {
        if (file->tensors().count(name) == 0) {
          return absl::NotFoundError(absl::StrCat(
              index_path, ": tensor \"", absl::CHexEscape(name),
              "\" is mapped to ", shard, ", which does not contain it"));
        }
      }
      store->files_.push_back(std::move(file));
    }
  }

  for (const auto& file : store->files_) {
    for (const auto& [name, entry] : file->tensors()) {
      const auto [it, inserted] =
          store->index_.emplace(name, Located{file.get(), &entry});
      if (!inserted) {
        return Invalid(Where(file->path(), name), "also present in ",
                       it->second.file->path());
      }
    }
  }
  return store;
}

bool WeightStore::Has(const std::string& name) const {
  return index_.count(name) != 0;
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, located] : index_) names.push_back(name);
  return names;  // std::map keeps them sorted.
}

absl::StatusOr<WeightStore::Located> WeightStore::Find(
    const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", absl::CHexEscape(name),
                                            "\" not found in ", dir_));
  }
  return it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::LoadF32(const std::string& name,
                                                const Shape& expected) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", absl::CHexEscape(name),
                                            "\" not found in ", path_));
  }
  KVFOLD_ASSIGN_OR_RETURN(const DType dtype, CheckWeight(path_, it->second, expected));
  Tensor out(expected, DType::kF32);
  ConvertToF32Unaligned(dtype, it->second.data, out.as<float>(), out.numel());
  return out;
}

absl::StatusOr<Tensor> WeightStore::LoadF32(const std::string& name,
                                            const Shape& expected) const {
  KVFOLD_ASSIGN_OR_RETURN(const Located located, Find(name));
  KVFOLD_ASSIGN_OR_RETURN(Tensor out, located.file->LoadF32(name, expected));
  bytes_read_ += located.entry->end - located.entry->begin;
  return out;
}

absl::StatusOr<Tensor> WeightStore::LoadRowsF32(const std::string& name,
                                                const Shape& expected,
                                                int64_t row_begin,
                                                int64_t row_end) const {
  KVFOLD_ASSIGN_OR_RETURN(const Located located, Find(name));
  const TensorEntry& entry = *located.entry;
  const std::string& path = located.file->path();
  KVFOLD_ASSIGN_OR_RETURN(const DType dtype,
                          CheckWeight(path, entry, expected));
  if (expected.empty()) {
    return Invalid(Where(path, name), "a scalar has no rows to slice");
  }
  const int64_t rows = expected[0];
  if (row_begin < 0 || row_begin >= row_end || row_end > rows) {
    return Invalid(Where(path, name), "rows [", row_begin, ", ", row_end,
                   ") out of range for ", rows, " rows");
  }
  // rows >= 1 here, and the header check bounds numel, so no overflow.
  const int64_t row_elems = NumElements(expected) / rows;
  const size_t elem = DTypeSize(dtype);
  Shape shape = expected;
  shape[0] = row_end - row_begin;
  Tensor out(std::move(shape), DType::kF32);
  ConvertToF32Unaligned(dtype, entry.data + row_begin * row_elems * elem,
                        out.as<float>(), out.numel());
  bytes_read_ += out.numel() * elem;
  return out;
}

absl::StatusOr<Tensor> WeightStore::LoadColsF32(const std::string& name,
                                                const Shape& expected,
                                                int64_t col_begin,
                                                int64_t col_end) const {
  KVFOLD_ASSIGN_OR_RETURN(const Located located, Find(name));
  const TensorEntry& entry = *located.entry;
  const std::string& path = located.file->path();
  KVFOLD_ASSIGN_OR_RETURN(const DType dtype,
                          CheckWeight(path, entry, expected));
  if (expected.size() != 2) {
    return Invalid(Where(path, name), "only a matrix has columns to slice");
  }
  const int64_t rows = expected[0], cols = expected[1];
  if (col_begin < 0 || col_begin >= col_end || col_end > cols) {
    return Invalid(Where(path, name), "columns [", col_begin, ", ", col_end,
                   ") out of range for ", cols, " columns");
  }
  const int64_t width = col_end - col_begin;
  const size_t elem = DTypeSize(dtype);
  Tensor out({rows, width}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToF32Unaligned(dtype, entry.data + (r * cols + col_begin) * elem,
                          out.as<float>() + r * width, width);
  }
  bytes_read_ += out.numel() * elem;
  return out;
}

absl::Status WriteSafetensorsF32(const std::string& path,
                                 const std::vector<NamedTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    if (static_cast<int64_t>(t.values.size()) != NumElements(t.shape)) {
      return absl::InvalidArgumentError(absl::StrCat(t.name, ": ", t.values.size(),
                                                     " values for its shape"));
    }
    const uint64_t bytes = t.values.size() * sizeof(float);
    header[t.name] = {{"dtype", "F32"},
                      {"shape", std::vector<int64_t>(t.shape.begin(), t.shape.end())},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    const uint64_t n = text.size();  // little-endian u64, as the format says
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    f.write(len, 8);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const NamedTensor& t : tensors) {
      f.write(reinterpret_cast<const char*>(t.values.data()),
              static_cast<std::streamsize>(t.values.size() * sizeof(float)));
    }
    f.close();  // flushes: a full disk shows here
    if (f.fail()) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot write"));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();
    std::filesystem::remove(tmp, ec);
    return absl::PermissionDeniedError(absl::StrCat(path, ": ", why));
  }
  return absl::OkStatus();
}

}  // namespace kvfold
