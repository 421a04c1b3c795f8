#include "launch/jobs.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

std::string TempPath(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/" +
         name;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

JobLine Parse(const std::string& text, std::vector<std::string>* warnings = nullptr) {
  absl::StatusOr<JobLine> j = ParseJobLine(text, 3, "in:3", warnings);
  EXPECT_TRUE(j.ok()) << j.status();
  return j.ok() ? *j : JobLine();
}

TEST(JobsTest, ParsesEveryField) {
  const JobLine j = Parse(
      R"({"id": "a", "document": "text", "question": ["q1", "q2"], "max_new_tokens": 5,
          "temperature": 0.5, "top_k": 3, "top_p": 0.9, "seed": 7, "ignore_eos": true,
          "system": "be brief", "cache": {"slots": 64, "snapkv": {"window": 8}}})");
  ASSERT_TRUE(j.status.ok()) << j.status;
  EXPECT_EQ(j.id, "a");
  EXPECT_EQ(j.line, 3);
  EXPECT_EQ(j.job.document(), "text");
  ASSERT_EQ(j.job.question_size(), 2);
  EXPECT_EQ(j.job.question(1), "q2");
  EXPECT_EQ(j.job.system(), "be brief");
  EXPECT_EQ(j.job.cache().slots(), 64);
  EXPECT_EQ(j.job.cache().snapkv().window(), 8);

  GenerateOptions run;
  run.max_new_tokens = 32;
  absl::StatusOr<GenerateOptions> g = JobGenerateOptions(j.job, run);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->max_new_tokens, 5);
  EXPECT_FLOAT_EQ(g->sampling.temperature, 0.5f);
  EXPECT_EQ(g->sampling.top_k, 3);
  EXPECT_FLOAT_EQ(g->sampling.top_p, 0.9f);
  EXPECT_EQ(g->seed, 7u);
  EXPECT_FALSE(g->stop_at_eos);
}

TEST(JobsTest, OneQuestionAsAStringAndIdsAsLists) {
  JobLine j = Parse(R"({"id": 12, "document": "d", "question": "only one"})");
  EXPECT_EQ(j.id, "12");  // a number id is its decimal text
  ASSERT_EQ(j.job.question_size(), 1);
  EXPECT_EQ(j.job.question(0), "only one");

  j = Parse(R"({"id": "b", "document_ids": [1, 2, 3], "question_ids": [[4, 5], [6]]})");
  ASSERT_TRUE(j.status.ok()) << j.status;
  ASSERT_EQ(j.job.question_ids_size(), 2);
  EXPECT_EQ(j.job.question_ids(0).ids_size(), 2);
  EXPECT_EQ(j.job.question_ids(1).ids(0), 6);
}

TEST(JobsTest, UnsetFieldsKeepTheRunsSettings) {
  const JobLine j = Parse(R"({"id": "a", "document": "d"})");
  GenerateOptions run;
  run.max_new_tokens = 9;
  run.sampling.temperature = 0.25f;
  run.seed = 3;
  absl::StatusOr<GenerateOptions> g = JobGenerateOptions(j.job, run);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->max_new_tokens, 9);
  EXPECT_FLOAT_EQ(g->sampling.temperature, 0.25f);
  EXPECT_EQ(g->seed, 3u);
  EXPECT_TRUE(g->stop_at_eos);
}

TEST(JobsTest, BadValuesFailTheJobNotTheLine) {
  const JobLine j = Parse(R"({"id": "a", "document": "d", "max_new_tokens": -1})");
  ASSERT_TRUE(j.status.ok());
  absl::StatusOr<GenerateOptions> g = JobGenerateOptions(j.job, GenerateOptions());
  EXPECT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("max_new_tokens"), std::string::npos);

  for (const char* text : {
           R"({"id": "a", "document": "d", "max_new_tokens": "many"})",
           R"({"id": "a"})",
           R"({"id": "a", "document": "d", "document_file": "f"})",
           R"({"id": "a", "document": ""})",
           R"({"id": "a", "document": "d", "question": [""]})",
           R"({"id": "a", "document_ids": [1], "question": ["text"]})",
           R"({"id": "a", "document": "d", "question_ids": [[1]]})",
           R"({"id": "a", "document": "d", "cache": {"slot": 3}})",
       }) {
    const JobLine bad = Parse(text);
    EXPECT_FALSE(bad.status.ok()) << text;
    EXPECT_NE(bad.status.message().find("in:3: job \"a\""), std::string::npos) << bad.status;
  }
}

TEST(JobsTest, LinesWithoutAnIdOrNotJsonAreErrors) {
  for (const char* text : {R"({"document": "d"})", R"({"id": "", "document": "d"})",
                           R"({"id": [1], "document": "d"})", R"([1, 2])",
                           R"({"id": "a", "document": )"}) {
    absl::StatusOr<JobLine> j = ParseJobLine(text, 3, "in:3", nullptr);
    EXPECT_FALSE(j.ok()) << text;
    if (!j.ok()) {
      EXPECT_NE(j.status().message().find("in:3"), std::string::npos);
    }
  }
}

TEST(JobsTest, UnknownFieldsWarn) {
  std::vector<std::string> warnings;
  const JobLine j = Parse(R"({"id": "a", "document": "d", "colour": "red"})", &warnings);
  EXPECT_TRUE(j.status.ok()) << j.status;
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("unknown field \"colour\""), std::string::npos);
  EXPECT_NE(warnings[0].find("in:3"), std::string::npos);
}

TEST(JobsTest, CacheOverridesMergeOverTheRun) {
  CacheConfig run;
  run.set_slots(128);
  run.mutable_h2o()->set_window(16);
  // Same policy: fields merge; slots replaced.
  JobLine j = Parse(R"({"id": "a", "document": "d", "cache": {"slots": 64}})");
  CacheConfig c = JobCacheConfig(j, run);
  EXPECT_EQ(c.slots(), 64);
  EXPECT_EQ(c.h2o().window(), 16);
  // Another policy replaces the run's.
  j = Parse(R"({"id": "a", "document": "d", "cache": {"streaming": {"sinks": 2}}})");
  c = JobCacheConfig(j, run);
  EXPECT_EQ(c.slots(), 128);
  ASSERT_EQ(c.policy_case(), CacheConfig::kStreaming);
  EXPECT_EQ(c.streaming().sinks(), 2);
  // question_aware both ways, and layer budgets replacing slots.
  run.set_question_aware(true);
  j = Parse(R"({"id": "a", "document": "d", "cache": {"question_aware": false,
                "layer_slots": [8, 16]}})");
  c = JobCacheConfig(j, run);
  EXPECT_FALSE(c.question_aware());
  EXPECT_EQ(c.slots(), 0);
  EXPECT_EQ(c.layer_slots_size(), 2);
  j = Parse(R"({"id": "a", "document": "d"})");
  EXPECT_TRUE(JobCacheConfig(j, run).question_aware());
}

TEST(JobsTest, ReadJobsNamesEveryBadLineAndRunsNothing) {
  const std::string path = TempPath("bad.jsonl");
  WriteFile(path,
            "{\"id\": \"a\", \"document\": \"d\"}\n"
            "{not json\n"
            "\n"
            "{\"id\": \"a\", \"document\": \"again\"}\n"
            "{\"document\": \"no id\"}\n");
  absl::StatusOr<JobsFile> f = ReadJobs(path);
  ASSERT_FALSE(f.ok());
  const std::string m(f.status().message());
  EXPECT_NE(m.find("3 bad lines"), std::string::npos) << m;
  EXPECT_NE(m.find(path + ":2: not valid JSON"), std::string::npos) << m;
  EXPECT_NE(m.find(path + ":4: id \"a\" is already used on line 1"), std::string::npos) << m;
  EXPECT_NE(m.find(path + ":5: no \"id\""), std::string::npos) << m;

  EXPECT_FALSE(ReadJobs(TempPath("missing.jsonl")).ok());
  WriteFile(path, "\n \n");
  f = ReadJobs(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("no jobs"), std::string::npos);
}

TEST(JobsTest, DocumentFilesAreRelativeToTheInputAndChecked) {
  const std::string dir = TempPath("jobsdir");
  std::filesystem::create_directories(dir + "/docs");
  WriteFile(dir + "/docs/one.txt", "hello");
  WriteFile(dir + "/in.jsonl",
            "{\"id\": \"ok\", \"document_file\": \"docs/one.txt\"}\n"
            "{\"id\": \"missing\", \"document_file\": \"docs/two.txt\"}\n");
  absl::StatusOr<JobsFile> f = ReadJobs(dir + "/in.jsonl");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->jobs.size(), 2u);
  EXPECT_TRUE(f->jobs[0].status.ok());
  EXPECT_EQ(f->jobs[0].job.document_file(), dir + "/docs/one.txt");
  EXPECT_FALSE(f->jobs[1].status.ok());
  EXPECT_NE(f->jobs[1].status.message().find("docs/two.txt is not a readable file"),
            std::string::npos)
      << f->jobs[1].status;
}

}  // namespace
}  // namespace kvfold
