// kvfold bench_tokenizer: encode throughput of a tokenizer.json on a text
// file (one core), median of --repeats runs; prints one JSON line.
// tools/tokenizer/bench_tokenizers.py runs it beside Hugging Face
// `tokenizers` on the same text and compares ids and MB/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/report.h"
#include "models/files.h"
#include "models/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "",
          "bench_tokenizer: directory with tokenizer.json (default: --model)");
ABSL_FLAG(std::string, ids_out, "",
          "bench_tokenizer: write the ids of the last run here, one per line");

namespace kvfold {

absl::Status RunBenchTokenizer() {
  std::string dir = absl::GetFlag(FLAGS_tokenizer);
  if (dir.empty()) dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--tokenizer (or --model) is required");
  const std::string file = absl::GetFlag(FLAGS_text_file);
  if (file.empty()) return absl::InvalidArgumentError("--text_file is required");
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (repeats < 1) return absl::InvalidArgumentError("--repeats must be >= 1");
  KVFOLD_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromDirectory(dir));
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file, size_t{4} << 30));
  std::vector<double> seconds;
  std::vector<int32_t> ids;
  for (int r = 0; r < repeats; ++r) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<std::vector<int32_t>> out = tokenizer.Encode(text, true);
    seconds.push_back(Since(start));
    if (!out.ok()) return absl::Status(out.status().code(), file + ": " + std::string(out.status().message()));
    ids = std::move(*out);
  }
  const double median = Median(seconds);
  const std::string ids_out = absl::GetFlag(FLAGS_ids_out);
  if (!ids_out.empty()) {
    std::ofstream out(ids_out);
    for (int32_t id : ids) out << id << '\n';
    if (!out.flush()) return absl::InternalError(ids_out + ": cannot write");
  }
  const nlohmann::json j = {{"tokenizer", dir},
                            {"bytes", text.size()},
                            {"tokens", ids.size()},
                            {"repeats", repeats},
                            {"seconds_median", median},
                            {"seconds_min", *std::min_element(seconds.begin(), seconds.end())},
                            {"mb_per_s", text.size() / 1e6 / median}};
  PrintJson(j);
  return absl::OkStatus();
}

}  // namespace kvfold
