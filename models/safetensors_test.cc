#include "models/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/tensor.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Values exact in f32, bf16 and f16, with their 16-bit encodings.
const std::vector<float> kValues = {1.5f, -2.0f, 0.25f, 3.0f};
const std::vector<uint16_t> kBf16 = {0x3fc0, 0xc000, 0x3e80, 0x4040};
const std::vector<uint16_t> kF16 = {0x3e00, 0xc000, 0x3400, 0x4200};

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::string LittleEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.as<float>(), t.as<float>() + t.numel());
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/safetensors_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    // Fresh each run: TEST_TMPDIR may keep files from an earlier run.
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    std::ofstream out(Path(name), std::ios::binary | std::ios::trunc);
    out << bytes;
    return Path(name);
  }

  // A safetensors file: little-endian header length, header JSON, data.
  std::string Write(const std::string& name, const std::string& header,
                    const std::string& data = "") {
    return WriteRaw(name, LittleEndian64(header.size()) + header + data);
  }

  // Opens `header` + `data` as a file and returns the (expected) error.
  absl::Status OpenError(const std::string& header,
                         const std::string& data = "") {
    auto file = SafetensorsFile::Open(Write("bad.safetensors", header, data));
    return file.ok() ? absl::OkStatus() : file.status();
  }

  std::string dir_;
};

// Expects an error whose message names `path_part` and the problem.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& path_part, const std::string& problem) {
  EXPECT_EQ(status.code(), code) << status;
  const std::string message(status.message());
  EXPECT_THAT(message, HasSubstr(path_part));
  EXPECT_THAT(message, HasSubstr(problem));
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kDataLoss = absl::StatusCode::kDataLoss;
constexpr auto kNotFound = absl::StatusCode::kNotFound;

TEST_F(SafetensorsTest, RoundTripF32Bf16F16) {
  Write("model.safetensors",
        R"({"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]},
            "c": {"dtype": "F16", "shape": [4], "data_offsets": [24, 32]},
            "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]}})",
        Bytes(kValues) + Bytes(kBf16) + Bytes(kF16));
  auto file = SafetensorsFile::Open(Path("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->tensors().at("b").dtype_name, "BF16");

  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("a", "b", "c", "e"));
  EXPECT_TRUE((*store)->Has("c"));
  EXPECT_FALSE((*store)->Has("__metadata__"));

  auto a = (*store)->LoadF32("a", {2, 2});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape(), Shape({2, 2}));
  EXPECT_EQ(Values(*a), kValues);
  for (const char* name : {"b", "c"}) {
    auto t = (*store)->LoadF32(name, {4});
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(Values(*t), kValues) << name;
  }
  auto e = (*store)->LoadF32("e", {0, 3});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ((*store)->bytes_read(), 32u);
}

TEST_F(SafetensorsTest, MisalignedDataConverts) {
  // An odd header length puts the data section at an odd address.
  std::string header =
      R"({"b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},)"
      R"( "f": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})";
  if (header.size() % 2 == 0) header += " ";
  Write("model.safetensors", header, Bytes(kBf16) + Bytes(kValues));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* name : {"b", "f"}) {
    auto t = (*store)->LoadF32(name, {4});
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(Values(*t), kValues) << name;
  }
}

TEST_F(SafetensorsTest, LoadRowsReadsOnlyThoseRows) {
  std::vector<float> m(12);
  for (int i = 0; i < 12; ++i) m[i] = static_cast<float>(i);
  Write("model.safetensors",
        R"({"m": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]},
            "v": {"dtype": "BF16", "shape": [4], "data_offsets": [48, 56]}})",
        Bytes(m) + Bytes(kBf16));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();

  auto rows = (*store)->LoadRowsF32("m", {4, 3}, 1, 3);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->shape(), Shape({2, 3}));
  EXPECT_THAT(Values(*rows), ElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_EQ((*store)->bytes_read(), 24u);

  auto v = (*store)->LoadRowsF32("v", {4}, 2, 4);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_THAT(Values(*v), ElementsAre(0.25f, 3.0f));
  EXPECT_EQ((*store)->bytes_read(), 24u + 4u);

  ASSERT_TRUE((*store)->LoadF32("m", {4, 3}).ok());
  EXPECT_EQ((*store)->bytes_read(), 24u + 4u + 48u);

  for (auto [begin, end] : {std::pair{2, 2}, {-1, 1}, {3, 5}, {3, 1}}) {
    ExpectError((*store)->LoadRowsF32("m", {4, 3}, begin, end).status(),
                kInvalid, "\"m\"", "out of range for 4 rows");
  }
  ExpectError((*store)->LoadRowsF32("m", {3, 4}, 0, 1).status(), kInvalid,
              "model.safetensors", "does not match");
  EXPECT_EQ((*store)->bytes_read(), 24u + 4u + 48u);

  // Columns [1, 3) of the 4x3 matrix 0..11: 8 values, 32 bytes.
  auto cols = (*store)->LoadColsF32("m", {4, 3}, 1, 3);
  ASSERT_TRUE(cols.ok()) << cols.status();
  EXPECT_EQ(cols->shape(), Shape({4, 2}));
  EXPECT_THAT(Values(*cols), ElementsAre(1, 2, 4, 5, 7, 8, 10, 11));
  EXPECT_EQ((*store)->bytes_read(), 24u + 4u + 48u + 32u);
  for (auto [begin, end] : {std::pair{1, 1}, {-1, 1}, {2, 4}}) {
    ExpectError((*store)->LoadColsF32("m", {4, 3}, begin, end).status(),
                kInvalid, "\"m\"", "out of range for 3 columns");
  }
  ExpectError((*store)->LoadColsF32("v", {4}, 0, 1).status(), kInvalid,
              "\"v\"", "only a matrix");
  EXPECT_EQ((*store)->bytes_read(), 24u + 4u + 48u + 32u);
}

TEST_F(SafetensorsTest, ShardedIndex) {
  Write("model-00001-of-00002.safetensors",
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}})",
        Bytes(kValues) + Bytes(kBf16));
  Write("model-00002-of-00002.safetensors",
        R"({"c": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}})",
        Bytes(kF16));
  WriteRaw("model.safetensors.index.json", R"({
      "metadata": {"total_size": 32},
      "weight_map": {"a": "model-00001-of-00002.safetensors",
                     "b": "model-00001-of-00002.safetensors",
                     "c": "model-00002-of-00002.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("a", "b", "c"));
  auto c = (*store)->LoadF32("c", {2, 2});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(Values(*c), kValues);
  auto b = (*store)->LoadF32("b", {4});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Values(*b), kValues);
}

TEST_F(SafetensorsTest, FileLevelErrors) {
  ExpectError(SafetensorsFile::Open(Path("missing.safetensors")).status(),
              kNotFound, "missing.safetensors", "no such file");
  ExpectError(
      SafetensorsFile::Open(WriteRaw("bad.safetensors", "abcd")).status(),
      kDataLoss, "bad.safetensors", "shorter than the 8-byte");
  ExpectError(SafetensorsFile::Open(
                  WriteRaw("bad.safetensors", LittleEndian64(100) + "{}"))
                  .status(),
              kDataLoss, "bad.safetensors", "extends past the end of the file");
  ExpectError(SafetensorsFile::Open(WriteRaw("bad.safetensors",
                                             LittleEndian64(1ull << 40) + "{}"))
                  .status(),
              kInvalid, "bad.safetensors", "exceeds the limit");
  ExpectError(SafetensorsFile::Open(dir_).status(), kInvalid, dir_,
              "not a regular file");
}

TEST_F(SafetensorsTest, HeaderErrors) {
  ExpectError(OpenError("{not json"), kInvalid, "bad.safetensors",
              "not valid JSON");
  ExpectError(OpenError("[1, 2]"), kInvalid, "bad.safetensors",
              "not an object");
  ExpectError(OpenError(std::string(1000, '[') + std::string(1000, ']')),
              kInvalid, "bad.safetensors", "nests deeper");
  ExpectError(OpenError(R"({"__metadata__": {"n": 1}})"), kInvalid,
              "bad.safetensors", "not a string");
  ExpectError(OpenError(R"({"__metadata__": [1]})"), kInvalid,
              "bad.safetensors", "\"__metadata__\" is not an object");
  ExpectError(OpenError(R"({"w": 7})"), kInvalid, "tensor \"w\"",
              "not an object");
}

TEST_F(SafetensorsTest, EntryErrors) {
  const std::string data(256, '\0');
  struct Case {
    std::string entry;
    absl::StatusCode code;
    std::string problem;
  };
  const Case cases[] = {
      {R"({"shape": [1], "data_offsets": [0, 4]})", kInvalid,
       "missing \"dtype\""},
      {R"({"dtype": "F32", "data_offsets": [0, 4]})", kInvalid,
       "missing \"shape\""},
      {R"({"dtype": "F32", "shape": [1]})", kInvalid,
       "missing \"data_offsets\""},
      {R"({"dtype": 5, "shape": [1], "data_offsets": [0, 4]})", kInvalid,
       "\"dtype\" is not a string"},
      {R"({"dtype": "F12", "shape": [1], "data_offsets": [0, 4]})", kInvalid,
       "unknown dtype \"F12\""},
      {R"({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 4]})",
       kInvalid, "negative dimension -1"},
      {R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]})", kInvalid,
       "not an integer"},
      {R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 16]})", kInvalid,
       "\"shape\" is not an array"},
      {R"({"dtype": "U8", "shape": [4294967296, 4294967296],
           "data_offsets": [0, 4]})",
       kInvalid, "is too large"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})", kInvalid,
       "not [begin, end]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})", kInvalid,
       "not [begin, end]"},
      {R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 4]})", kInvalid,
       "begin after they end"},
      {R"({"dtype": "F32", "shape": [128], "data_offsets": [0, 512]})",
       kDataLoss,
       "data_offsets [0, 512] extend past the end of the data section (256 "
       "bytes)"},
      {R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})", kInvalid,
       "hold 8 bytes but shape [3] of F32 needs 3 x 4 bytes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.entry);
    ExpectError(OpenError(R"({"model.norm.weight": )" + c.entry + "}", data),
                c.code, "bad.safetensors", c.problem);
    ExpectError(OpenError(R"({"model.norm.weight": )" + c.entry + "}", data),
                c.code, "tensor \"model.norm.weight\"", c.problem);
  }
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  ExpectError(
      OpenError(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                std::string(12, '\0')),
      kInvalid, "bad.safetensors",
      "tensor \"b\": data_offsets [4, 12] overlap "
      "tensor \"a\"");
  // A long tensor overlapping one that starts after a short neighbour.
  ExpectError(
      OpenError(
          R"({"a": {"dtype": "U8", "shape": [10], "data_offsets": [0, 10]},
                    "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]},
                    "c": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]}})",
          std::string(10, '\0')),
      kInvalid, "bad.safetensors", "overlap tensor \"a\"");
}

TEST_F(SafetensorsTest, DirectoryAndIndexErrors) {
  ExpectError(WeightStore::Open(Path("nowhere")).status(), kNotFound, "nowhere",
              "no such directory");
  ExpectError(WeightStore::Open(dir_).status(), kNotFound, "model.safetensors",
              "no such file");

  Write("shard1.safetensors",
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
        Bytes(kValues));
  Write("shard2.safetensors",
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
        Bytes(kValues));
  const std::string index = "model.safetensors.index.json";
  WriteRaw(index, R"({"weight_map": {"a": "shard9.safetensors"}})");
  ExpectError(WeightStore::Open(dir_).status(), kNotFound, "shard9.safetensors",
              "no such file");
  WriteRaw(index, R"({"weight_map": {"zz": "shard1.safetensors"}})");
  ExpectError(WeightStore::Open(dir_).status(), kNotFound,
              "tensor \"zz\" is mapped to shard1.safetensors",
              "does not contain it");
  WriteRaw(index, R"({"weight_map": {"a": "../shard1.safetensors"}})");
  ExpectError(WeightStore::Open(dir_).status(), kInvalid, index,
              "\"../shard1.safetensors\" is not a plain file name");
  WriteRaw(index, R"({"weight_map": {"a": "shard1.safetensors",
                                      "b": "shard2.safetensors"}})");
  ExpectError(WeightStore::Open(dir_).status(), kNotFound, index,
              "tensor \"b\" is mapped to shard2.safetensors");
  WriteRaw(index, R"({"weight_map": {"a": "shard1.safetensors",
                                      "x": "shard2.safetensors"}})");
  Write("shard2.safetensors",
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})",
        Bytes(kValues) + Bytes(kValues));
  ExpectError(WeightStore::Open(dir_).status(), kInvalid, "shard2.safetensors",
              "tensor \"a\": also present in");
  WriteRaw(index, R"({"weight_map": []})");
  ExpectError(WeightStore::Open(dir_).status(), kInvalid, index,
              "\"weight_map\" is missing");
  WriteRaw(index, "{oops");
  ExpectError(WeightStore::Open(dir_).status(), kInvalid, index,
              "not valid JSON");
}

TEST_F(SafetensorsTest, LoadErrors) {
  Write("model.safetensors",
        R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "ids": {"dtype": "I64", "shape": [2], "data_offsets": [16, 32]}})",
        Bytes(kValues) + std::string(16, '\0'));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectError((*store)->LoadF32("nope", {2}).status(), kNotFound, dir_,
              "tensor \"nope\" not found");
  ExpectError((*store)->LoadRowsF32("nope", {2}, 0, 1).status(), kNotFound,
              dir_, "tensor \"nope\" not found");
  ExpectError((*store)->LoadF32("w", {4}).status(), kInvalid,
              "model.safetensors: tensor \"w\"",
              "shape [2, 2] does not match the expected [4]");
  ExpectError((*store)->LoadF32("ids", {2}).status(), kInvalid,
              "model.safetensors: tensor \"ids\"",
              "unsupported dtype I64 for weights");
  EXPECT_EQ((*store)->bytes_read(), 0u);
}

}  // namespace
}  // namespace kvfold
