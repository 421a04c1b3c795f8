// Broken checkpoints made from a good one: every problem is an error that
// names the file or tensor and says what is wrong; nothing crashes.
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

namespace fs = std::filesystem;

class BadCheckpointTest : public ::testing::Test {
 protected:
  // A private copy of a good checkpoint to break.
  std::string Copy(const std::string& name) {
    const fs::path dst = fs::path(::testing::TempDir()) /
                         (name + "_" + std::to_string(counter_++));
    fs::remove_all(dst);
    fs::create_directories(dst);
    for (const auto& e : fs::directory_iterator("tests/golden/" + name)) {
      fs::copy_file(e.path(), dst / e.path().filename());
    }
    return dst.string();
  }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void Write(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
  }
  static void Replace(const std::string& path, const std::string& from,
                      const std::string& to) {
    std::string s = Read(path);
    const size_t at = s.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
    Write(path, s);
  }

  // Load must fail with a message holding every `parts` string.
  static void ExpectError(const std::string& dir,
                          std::initializer_list<std::string> parts) {
    auto m = LlamaModel::Load(dir);
    ASSERT_FALSE(m.ok()) << dir;
    const std::string msg(m.status().message());
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& p : parts) {
      EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
    }
  }

  int counter_ = 0;
};

TEST_F(BadCheckpointTest, MissingDirectoryAndFiles) {
  ExpectError("/nonexistent/model", {"/nonexistent/model/config.json"});
  const std::string dir = Copy("llama3_f32");
  fs::remove(dir + "/model.safetensors");
  ExpectError(dir, {"model.safetensors"});
}

TEST_F(BadCheckpointTest, TruncatedAndCorruptHeaders) {
  std::string dir = Copy("llama3_f32");
  const std::string file = dir + "/model.safetensors";
  const std::string good = Read(file);
  Write(file, good.substr(0, 5));  // shorter than the length prefix
  ExpectError(dir, {"model.safetensors"});
  Write(file, good.substr(0, 100));  // header cut off
  ExpectError(dir, {"model.safetensors", "header"});
  std::string corrupt = good;
  corrupt[8] = '#';  // header no longer JSON
  Write(file, corrupt);
  ExpectError(dir, {"model.safetensors", "JSON"});
}

TEST_F(BadCheckpointTest, DataTruncatedPastOffsets) {
  const std::string dir = Copy("llama3_f32");
  const std::string file = dir + "/model.safetensors";
  const std::string good = Read(file);
  Write(file, good.substr(0, good.size() - 1000));
  ExpectError(dir, {"model.safetensors", "data_offsets"});
}

TEST_F(BadCheckpointTest, UnknownDtype) {
  const std::string dir = Copy("llama3_f32");
  // Same length keeps the header size valid.
  Replace(dir + "/model.safetensors", "\"F32\"", "\"Q32\"");
  ExpectError(dir, {"model.safetensors", "Q32"});
}

TEST_F(BadCheckpointTest, MissingTensorAndWrongShape) {
  std::string dir = Copy("llama3_f32");
  Replace(dir + "/config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  ExpectError(dir, {"model.layers.2."});
  dir = Copy("llama3_f32");
  Replace(dir + "/config.json", "\"intermediate_size\": 160", "\"intermediate_size\": 128");
  ExpectError(dir, {"mlp.gate_proj.weight", "[160, 64]", "[128, 64]"});
  // Sharded: a shard listed in the index is gone.
  dir = Copy("mistral_gqa_f32");
  fs::remove(dir + "/model-00002-of-00003.safetensors");
  ExpectError(dir, {"model-00002-of-00003.safetensors"});
}

TEST_F(BadCheckpointTest, ConfigProblems) {
  std::string dir = Copy("llama3_f32");
  Replace(dir + "/config.json", "LlamaForCausalLM", "BertForMaskedLM");
  ExpectError(dir, {"config.json", "BertForMaskedLM", "not supported"});
  dir = Copy("llama3_f32");
  Replace(dir + "/config.json", "\"vocab_size\": 256", "\"vocab_sizes\": 256");
  ExpectError(dir, {"config.json", "vocab_size", "missing"});
  dir = Copy("llama3_f32");
  Write(dir + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"],");
  ExpectError(dir, {"config.json", "JSON"});
}

TEST_F(BadCheckpointTest, SequencePastSlidingWindowIsRefused) {
  // Sliding-window attention is not implemented: refusing beats a silently
  // different answer.
  const std::string dir = Copy("mistral_gqa_f32");
  Replace(dir + "/config.json", "\"sliding_window\": null", "\"sliding_window\": 8");
  auto m = LlamaModel::Load(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  Engine engine(**m, {});
  const std::vector<int32_t> eight = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_TRUE(engine.Score(eight).ok());
  auto r = engine.Generate(eight, {.max_new_tokens = 3});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sliding_window"), std::string::npos);
}

TEST_F(BadCheckpointTest, GoodCopyStillLoads) {
  // The copies above fail because of what was broken, not the copying.
  auto m = LlamaModel::Load(Copy("mistral_gqa_f32"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->stats().bytes_read, 0u);
}

}  // namespace
}  // namespace kvfold
