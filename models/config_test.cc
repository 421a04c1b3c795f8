#include "models/config.h"

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

constexpr char kLlama3[] = R"({
  "architectures": ["LlamaForCausalLM"], "vocab_size": 256,
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
  "rope_theta": 500000.0, "max_position_embeddings": 256,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 5],
  "hidden_act": "silu", "torch_dtype": "float32"})";

TEST(ModelConfigTest, ParsesLlama3) {
  auto c = ModelConfig::FromJson(kLlama3, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kLlama3);
  EXPECT_EQ(c->rope.factor, 8.0);
  EXPECT_EQ(c->rope.original_max_position, 32.0);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(c->bos_token_ids, (std::vector<int32_t>{1}));
  EXPECT_FALSE(c->qkv_bias);
}

TEST(ModelConfigTest, Qwen2HasQkvBiasAndDefaults) {
  auto c = ModelConfig::FromJson(
      R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10,
          "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "tie_word_embeddings": true,
          "rope_scaling": {"type": "linear", "factor": 2.0}})",
      "q.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kLinear);
}

// Each bad config gives an error naming the file and the field.
TEST(ModelConfigTest, BadConfigsNameTheField) {
  struct Case {
    std::string json, expect;
  };
  const std::string base =
      R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2)";
  const Case cases[] = {
      {"{", "not valid JSON"},
      {"{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
       "nests deeper than 32 levels"},
      {"[1, 2]", "must be a JSON object"},
      {"{" + base + "}", "architectures"},
      {R"({"architectures": ["GPT2LMHeadModel"], )" + base + "}", "GPT2LMHeadModel"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10})", "hidden_size"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "8", )" +
           base.substr(base.find("\"intermediate")) + ", \"vocab_size\": 1}",
       "hidden_size"},
      {R"({"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3, )" + base + "}",
       "num_key_value_heads"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_theta": -1, )" + base + "}",
       "rope_theta"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn", "factor": 4}, )" +
           base + "}",
       "yarn"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "linear"}, )" +
           base + "}",
       "factor"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu", )" + base + "}",
       "hidden_act"},
      {R"({"architectures": ["LlamaForCausalLM"], "eos_token_id": "x", )" + base + "}",
       "eos_token_id"},
      {R"({"architectures": ["LlamaForCausalLM"], "head_dim": 3, )" + base + "}", "head_dim"},
      {R"({"architectures": ["LlamaForCausalLM"], "mlp_bias": true, )" + base + "}", "mlp_bias"},
  };
  for (const Case& c : cases) {
    auto r = ModelConfig::FromJson(c.json, "dir/config.json");
    ASSERT_FALSE(r.ok()) << c.json;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find("dir/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

TEST(ModelConfigTest, BadRopeScalingFieldNamesFileAndField) {
  std::string json = kLlama3;
  const std::string good = "\"factor\": 8.0";
  json.replace(json.find(good), good.size(), "\"factor\": -8.0");
  auto r = ModelConfig::FromJson(json, "models/x/config.json");
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("models/x/config.json: rope_scaling"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"factor\" must be positive"), std::string::npos) << msg;
}

TEST(ModelConfigTest, RejectsAbsurdSizes) {
  std::string json = kLlama3;
  const std::string good = "\"num_hidden_layers\": 2";
  json.replace(json.find(good), good.size(), "\"num_hidden_layers\": 2147483648");
  auto r = ModelConfig::FromJson(json, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("num_hidden_layers"), std::string::npos);
}

TEST(ModelConfigTest, GenerationConfigAddsEosIds) {
  auto c = ModelConfig::FromJson(kLlama3, "config.json");
  ASSERT_TRUE(c.ok());
  const std::string path = ::testing::TempDir() + "/generation_config.json";
  std::ofstream(path) << R"({"eos_token_id": [5, 9], "bos_token_id": 1})";
  ASSERT_TRUE(c->MergeGenerationConfig(path).ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{2, 5, 9}));
  std::ofstream(path) << R"({"eos_token_id": "x"})";
  EXPECT_FALSE(c->MergeGenerationConfig(path).ok());
}

TEST(ModelConfigTest, DirectoryIsNotAConfig) {
  auto r = ModelConfig::FromFile(::testing::TempDir());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a regular file"), std::string::npos);
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  auto r = ModelConfig::FromFile("/nonexistent/config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/config.json"), std::string::npos);
}

}  // namespace
}  // namespace kvfold
