#include "launch/tasks_file.h"

#include <string>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

constexpr char kHeader[] =
    R"({"kvfold_tasks": 1, "seed": 3, "tokenizer_probe": {"text": "a b", "ids": [5, 6]}})";

std::string Sample(const std::string& id, const std::string& task, int length) {
  return R"({"id": ")" + id + R"(", "task": ")" + task + R"(", "length": )" +
         std::to_string(length) +
         R"(, "tokens": 100, "document": "doc", "question": "q?", "answer": "42"})";
}

TEST(TasksFile, ParsesHeaderAndSamples) {
  const std::string text = std::string(kHeader) + "\n" + Sample("a", "passkey", 1024) +
                           "\n\n" + Sample("b", "vt", 8192) + "\n";
  absl::StatusOr<TasksFile> f = ParseTasks(text, "t.jsonl");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->seed, 3);
  EXPECT_EQ(f->probe_text, "a b");
  EXPECT_EQ(f->probe_ids, (std::vector<int32_t>{5, 6}));
  ASSERT_EQ(f->samples.size(), 2u);
  EXPECT_EQ(f->samples[1].line, 4);
  EXPECT_EQ(f->samples[1].task, "vt");
  EXPECT_EQ(f->samples[1].length, 8192);
  EXPECT_EQ(f->samples[1].answer, "42");
}

TEST(TasksFile, ErrorsNameTheLine) {
  struct Case {
    std::string text, message;
  };
  const std::string h = std::string(kHeader) + "\n";
  for (const Case& c : std::vector<Case>{
           {Sample("a", "passkey", 1024), "t.jsonl:1: not a kvfold task file"},
           {h + Sample("a", "needle", 1024), "t.jsonl:2: unknown task \"needle\""},
           {h + Sample("a", "kv", 1024) + "\n" + Sample("a", "kv", 1024),
            "t.jsonl:3: id \"a\" given twice"},
           {h + "{\"id\": \"x\"", "t.jsonl:2: not valid JSON"},
           {h + "{\"id\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
            "t.jsonl:2: nests deeper than 32 levels"},
           {h + R"({"id": "x", "task": "kv", "length": 0})", "\"length\" must be a positive"},
           {h + R"({"id": "x", "task": "kv", "length": 5, "tokens": 5, "document": "d", )"
                   R"("question": "q"})",
            "\"answer\" must be a non-empty string"},
           {R"({"kvfold_tasks": 2})", "task file version 2"},
           {R"({"kvfold_tasks": 1})", "tokenizer_probe"},
           {h, "no samples"},
           {"", "empty task file"},
       }) {
    absl::StatusOr<TasksFile> f = ParseTasks(c.text, "t.jsonl");
    ASSERT_FALSE(f.ok()) << c.text;
    EXPECT_NE(std::string(f.status().message()).find(c.message), std::string::npos)
        << f.status() << " expected: " << c.message;
  }
}

TEST(TasksFile, SelectsByTaskLengthAndCount) {
  std::string text = std::string(kHeader) + "\n";
  int n = 0;
  for (const char* task : {"passkey", "kv"}) {
    for (int length : {1024, 4096}) {
      for (int i = 0; i < 3; ++i) text += Sample(std::to_string(n++), task, length) + "\n";
    }
  }
  absl::StatusOr<TasksFile> f = ParseTasks(text, "t.jsonl");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(SelectSamples(*f, {}, {}, 0)->size(), 12u);
  absl::StatusOr<std::vector<TaskSample>> s = SelectSamples(*f, {"kv"}, {4096}, 2);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].task, "kv");
  EXPECT_EQ((*s)[0].length, 4096);
  EXPECT_FALSE(SelectSamples(*f, {"qa"}, {}, 0).ok());  // known, but none in the file
  absl::StatusOr<std::vector<TaskSample>> bad = SelectSamples(*f, {"needle"}, {}, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("unknown task \"needle\""), std::string::npos);
}

}  // namespace
}  // namespace kvfold
