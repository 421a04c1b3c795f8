// kvfold demo: `kvfold run` end to end on the bundled demo (tools/demo: a
// small model and long documents with questions), through mpirun with
// --demo_ranks ranks, printing the answers and the summary. Started
// without mpirun, it starts mpirun on itself.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/ranks.h"
#include "launch/run.h"

ABSL_FLAG(int32_t, demo_ranks, 2,
          "demo: ranks mpirun starts (data-parallel replicas); 1 runs without mpirun");
ABSL_FLAG(std::string, demo_dir, "",
          "demo: the bundled demo (default: tools/demo of the checkout it is run in)");

namespace kvfold {
namespace {

// tools/demo of the workspace (`bazel run` says where) or of the working
// directory.
absl::StatusOr<std::string> DemoDir() {
  std::string dir = absl::GetFlag(FLAGS_demo_dir);
  if (dir.empty()) {
    const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
    dir = absl::StrCat(workspace != nullptr ? workspace : ".", "/tools/demo");
  }
  if (!std::filesystem::exists(dir + "/jobs.jsonl")) {
    return absl::NotFoundError(absl::StrCat(
        dir, "/jobs.jsonl not found: run the demo from the kvfold checkout, or give --demo_dir"));
  }
  return dir;
}

// OUTPUT in a fresh directory under the temp directory.
absl::StatusOr<std::string> FreshOutput() {
  std::string dir = (std::filesystem::temp_directory_path() / "kvfold-demo-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot make a directory for the demo's output in ",
                                            std::filesystem::temp_directory_path().string()));
  }
  return dir + "/answers.jsonl";
}

// argv of this process, from /proc (the flags travel to the ranks as given).
absl::StatusOr<std::vector<std::string>> OwnArguments() {
  // /proc files report size 0: read to the end.
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < raw.size();) {
    const size_t end = raw.find('\0', begin);
    args.push_back(raw.substr(begin, end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (args.empty()) return absl::InternalError("cannot read /proc/self/cmdline");
  return args;
}

// Replaces this process by `mpirun -np N <this binary> demo ...`, with the
// output in a fresh directory unless --output was given.
absl::Status ExecMpirun(int ranks) {
  KVFOLD_ASSIGN_OR_RETURN(std::vector<std::string> args, OwnArguments());
  std::vector<std::string> argv = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe",
                                   "--bind-to", "none", "--mca", "btl", "self,vader",
                                   "--mca", "pml", "ob1", "--mca", "oob_tcp_if_include", "lo"};
  argv.push_back(std::filesystem::read_symlink("/proc/self/exe").string());
  argv.insert(argv.end(), args.begin() + 1, args.end());
  if (absl::GetFlag(FLAGS_output).empty()) {
    KVFOLD_ASSIGN_OR_RETURN(std::string output, FreshOutput());
    argv.push_back("--output=" + output);
  }
  // The demo runs on this machine only; mpirun refuses root without these.
  if (geteuid() == 0) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  std::vector<char*> c_argv;
  for (std::string& a : argv) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::fflush(nullptr);
  execvp("mpirun", c_argv.data());
  return absl::FailedPreconditionError(absl::StrCat(
      "kvfold demo starts ", ranks, " ranks with mpirun, which could not be run (",
      std::strerror(errno), "): install openmpi-bin, or give --demo_ranks=1"));
}

// The answers of the output file, by job, with the questions from the input
// and, where `facts` (facts.json: {"expected": {job: {question: answer}}})
// knows it, the expected answer.
void PrintAnswers(const std::string& input, const std::string& output,
                  const std::string& facts) {
  nlohmann::json expected = nlohmann::json::object();
  if (std::ifstream f(facts); f) {
    nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_object() && j.contains("expected") && j["expected"].is_object()) {
      expected = j["expected"];
    }
  }
  int known = 0, right = 0;
  std::map<std::string, nlohmann::json> results;
  std::ifstream out(output);
  for (std::string line; std::getline(out, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("id")) results[j["id"].get<std::string>()] = j;
  }
  std::ifstream in(input);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json job = nlohmann::json::parse(line, nullptr, false);
    if (!job.is_object() || !job.contains("id")) continue;
    const std::string id = job["id"].is_string() ? job["id"].get<std::string>() : job["id"].dump();
    auto it = results.find(id);
    if (it == results.end()) continue;
    const nlohmann::json& r = it->second;
    if (r.contains("error")) {
      std::printf("== %s: failed: %s\n\n", id.c_str(), r["error"].get<std::string>().c_str());
      continue;
    }
    const nlohmann::json& cache = r["cache"];
    std::printf("== %s: %lld document tokens held in %lld slots per KV head over all layers (%s, %.1fx)\n",
                id.c_str(), (long long)r["document_tokens"].get<int64_t>(),
                (long long)cache["slots_held"].get<int64_t>(),
                cache["policy"].get<std::string>().c_str(),
                cache["compression_ratio"].get<double>());
    for (const nlohmann::json& a : r["answers"]) {
      if (a.contains("question")) {
        std::printf("   Q: %s\n", a["question"].is_string()
                                       ? a["question"].get<std::string>().c_str()
                                       : a["question"].dump().c_str());
      }
      const std::string text = a.value("text", a["ids"].dump());
      std::printf("   A: %s\n", text.c_str());
      if (a.contains("question") && a["question"].is_string() && expected.contains(id) &&
          expected[id].contains(a["question"].get<std::string>())) {
        const std::string want = expected[id][a["question"].get<std::string>()];
        const bool ok = std::string(absl::StripAsciiWhitespace(text)) == want;
        std::printf("      expected: %s (%s)\n", want.c_str(), ok ? "right" : "wrong");
        ++known;
        right += ok;
      }
    }
    std::printf("\n");
  }
  if (known > 0) std::printf("demo: %d of %d answers as expected\n", right, known);
  std::fflush(stdout);
}

}  // namespace

absl::Status RunDemo(Ranks& ranks) {
  const int want = absl::GetFlag(FLAGS_demo_ranks);
  if (want < 1) return absl::InvalidArgumentError("--demo_ranks must be >= 1");
  KVFOLD_ASSIGN_OR_RETURN(std::string dir, DemoDir());
  if (!ranks.mpi() && want > 1) return ExecMpirun(want);
  if (absl::GetFlag(FLAGS_model).empty()) absl::SetFlag(&FLAGS_model, dir + "/model");
  if (absl::GetFlag(FLAGS_input).empty()) absl::SetFlag(&FLAGS_input, dir + "/jobs.jsonl");
  if (absl::GetFlag(FLAGS_cache).empty() && absl::GetFlag(FLAGS_cache_config).empty() &&
      absl::GetFlag(FLAGS_compressor).empty()) {
    // A fixed 128 slots per layer and head, however long the document.
    absl::SetFlag(&FLAGS_cache, "h2o");
    if (absl::GetFlag(FLAGS_cache_slots) == 0) absl::SetFlag(&FLAGS_cache_slots, 128);
  }
  if (absl::GetFlag(FLAGS_output).empty()) {
    KVFOLD_ASSIGN_OR_RETURN(std::string output, FreshOutput());
    absl::SetFlag(&FLAGS_output, output);
  }
  KVFOLD_RETURN_IF_ERROR(RunRun(ranks));
  if (ranks.writer()) {
    PrintAnswers(absl::GetFlag(FLAGS_input), absl::GetFlag(FLAGS_output), dir + "/facts.json");
  }
  return absl::OkStatus();
}

}  // namespace kvfold
