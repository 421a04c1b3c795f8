#include "cache/policies.h"

#include "gtest/gtest.h"

namespace kvfold {
namespace {

TEST(PoliciesTest, FullFromTextProto) {
  auto config = ParseCacheConfig("full {}", "cache.txtpb");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->has_full());
  auto cache = MakeCache(*config, {2, 1, 4}, 16);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->ColumnSumQueries(16), 0);
  EXPECT_EQ((*cache)->tokens_seen(), 0);
}

TEST(PoliciesTest, BadTextProtoNamesSourceAndPlace) {
  auto config = ParseCacheConfig("full {}\nsnapkv_budget: 3", "my.txtpb");
  ASSERT_FALSE(config.ok());
  const std::string msg(config.status().message());
  EXPECT_NE(msg.find("my.txtpb:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("snapkv_budget"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvfold
