#include "launch/results_file.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::string Read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(ResultsFileTest, AppendsWholeLinesAndResumes) {
  const std::string path = TempPath("out.jsonl");
  std::remove(path.c_str());
  {
    absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, nullptr);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE(f->done().empty());
    ASSERT_TRUE(f->Append("a", R"({"id": "a", "x": 1})").ok());
    ASSERT_TRUE(f->Append("b", R"({"id": "b", "error": "bad"})").ok());
  }
  EXPECT_EQ(Read(path), "{\"id\": \"a\", \"x\": 1}\n{\"id\": \"b\", \"error\": \"bad\"}\n");
  absl::StatusOr<ResultsFile> again = ResultsFile::Open(path, nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->done().size(), 2u);
  EXPECT_EQ(again->done().count("a"), 1u);
  EXPECT_EQ(again->lines_before(), 2);
  ASSERT_TRUE(again->Append("c", R"({"id": "c"})").ok());
  EXPECT_EQ(again->done().count("c"), 1u);
}

// A run refused at start-up removes the file it created, never one that was
// there before or that got a line.
TEST(ResultsFileTest, RemovesOnlyAFileItCreatedAndLeftEmpty) {
  const std::string path = TempPath("unused.jsonl");
  std::remove(path.c_str());
  auto exists = [&] { return std::ifstream(path).good(); };
  {
    absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, nullptr);
    ASSERT_TRUE(f.ok()) << f.status();
    f->RemoveIfUnused();
  }
  EXPECT_FALSE(exists());
  {
    absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, nullptr);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Append("a", R"({"id": "a"})").ok());
    f->RemoveIfUnused();
  }
  EXPECT_EQ(Read(path), "{\"id\": \"a\"}\n");
  std::ofstream(path, std::ios::trunc).close();  // there before, empty
  {
    absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, nullptr);
    ASSERT_TRUE(f.ok()) << f.status();
    f->RemoveIfUnused();
  }
  EXPECT_TRUE(exists());
}

TEST(ResultsFileTest, CutsAHalfWrittenLastLine) {
  const std::string path = TempPath("half.jsonl");
  {
    std::ofstream f(path, std::ios::trunc);
    f << "{\"id\": \"a\"}\n{\"id\": \"b\", \"answ";
  }
  std::vector<std::string> warnings;
  absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, &warnings);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->done().size(), 1u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("half-written"), std::string::npos);
  EXPECT_EQ(Read(path), "{\"id\": \"a\"}\n");
  ASSERT_TRUE(f->Append("b", R"({"id": "b"})").ok());
  EXPECT_EQ(Read(path), "{\"id\": \"a\"}\n{\"id\": \"b\"}\n");
}

TEST(ResultsFileTest, RefusesForeignFilesAndSecondWriters) {
  const std::string path = TempPath("foreign.jsonl");
  {
    std::ofstream f(path, std::ios::trunc);
    f << "{\"id\": \"a\"}\nnot json\n";
  }
  absl::StatusOr<ResultsFile> f = ResultsFile::Open(path, nullptr);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(path + ":2: not a kvfold result line"), std::string::npos)
      << f.status();
  // A line nested 100000 deep is refused as well (parsed with a depth limit).
  {
    std::ofstream deep(path, std::ios::trunc);
    deep << "{\"id\": \"a\", \"x\": " << std::string(100000, '[') << std::string(100000, ']')
         << "}\n";
  }
  absl::StatusOr<ResultsFile> nested = ResultsFile::Open(path, nullptr);
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find(path + ":1: not a kvfold result line"),
            std::string::npos)
      << nested.status();

  const std::string locked = TempPath("locked.jsonl");
  std::remove(locked.c_str());
  absl::StatusOr<ResultsFile> first = ResultsFile::Open(locked, nullptr);
  ASSERT_TRUE(first.ok());
  // flock is per open file: a second open (as a second run would) is refused.
  const pid_t child = fork();
  if (child == 0) _exit(ResultsFile::Open(locked, nullptr).ok() ? 1 : 0);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a second writer was allowed";

  EXPECT_FALSE(ResultsFile::Open(TempPath("no/such/dir/out.jsonl"), nullptr).ok());
  EXPECT_FALSE(ResultsFile::Open(TempPath(""), nullptr).ok());  // a directory
}

}  // namespace
}  // namespace kvfold
