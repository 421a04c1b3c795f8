// kvfold bench_cache: memory and speed of a KV cache policy against the
// document length, next to the full cache, on a random-weight model.
//
// Each (policy, length) runs in a forked child so that its peak memory is
// its own: the child resets the kernel's high-water mark (clear_refs 5),
// prefills the document, decodes, and reports VmHWM minus its RSS at the
// start (the model, shared with the parent, is counted in both).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "kernels/sampling.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/report.h"
#include "launch/flags.h"
#include "models/compressor_file.h"
#include "models/llama.h"
#include "runtime/engine.h"

ABSL_FLAG(std::string, doc_lengths, "4096,8192,16384,32768,65536,131072",
          "bench_cache: document lengths in tokens");
ABSL_FLAG(int64_t, full_max_length, 16384,
          "bench_cache: longest document also run with the full cache "
          "(its attention is quadratic)");
ABSL_FLAG(std::string, bench_model, "tiny-256",
          "bench_cache: random-weight model shape");
ABSL_FLAG(int32_t, lococo_kernel, 21,
          "bench_cache --cache=lococo without --compressor: the random "
          "module's kernel size");
ABSL_FLAG(std::string, feature_budgets, "",
          "bench_cache: MatryoshkaKV feature budgets to run the policy at too "
          "(e.g. 1,0.6,0.4,0.25; random projections, uniform ranks), each "
          "next to the policy alone and the full cache");
ABSL_FLAG(double, lococo_hh_keep_rate, 0.5,
          "bench_cache --cache=lococo without --compressor: the random "
          "module's heavy-hitter share (0 = the pure variant)");

namespace kvfold {
namespace {

// A "VmRSS:" style field of /proc/self/status, in bytes (-1 if absent).
int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      int64_t kb = 0;
      std::sscanf(line.c_str() + field.size() + 1, "%ld", &kb);
      return kb * 1024;
    }
  }
  return -1;
}

// One run: prefill `length` tokens, decode `decode` more. Returns its row.
absl::StatusOr<nlohmann::json> RunOne(const LlamaModel& model,
                                      const EngineOptions& options,
                                      int64_t length, int64_t decode) {
  // The document's token ids are the input (4 bytes a token, reported
  // apart); what is measured is the memory used to process them.
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> tokens(length);
  for (int64_t i = 0; i < length; ++i) {
    tokens[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);
  }
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";  // resets VmHWM to the current RSS
  }
  const int64_t rss0 = ProcStatusBytes("VmRSS");
  Engine engine(model, options);
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
  std::vector<float> logits;
  auto t0 = Clock::now();
  KVFOLD_RETURN_IF_ERROR(engine.Prefill(tokens, LogitsFor::kLast, *cache, &logits));
  const double prefill = Since(t0);
  const CacheStats after_prefill = cache->Stats();
  // Decode steps that compressed the cache (it shrank) apart from the others.
  std::vector<double> steps, plain, compressing;
  for (int64_t i = 0; i < decode; ++i) {
    const int32_t tok = Argmax(logits.data(), vocab);
    const int64_t before = cache->View(0).length;
    t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(engine.Decode(tok, *cache, &logits));
    steps.push_back(Since(t0));
    (cache->View(0).length <= before ? compressing : plain).push_back(steps.back());
  }
  const double mean = std::accumulate(steps.begin(), steps.end(), 0.0) / steps.size();
  const int64_t hwm = ProcStatusBytes("VmHWM");
  nlohmann::json row{
      {"policy", PolicyName(options.cache)},
      {"doc_tokens", length},
      {"prefill_seconds", prefill},
      {"prefill_us_per_token", prefill / length * 1e6},
      {"decode_ms_per_token_median", Median(steps) * 1e3},
      {"decode_ms_per_token_mean", mean * 1e3},
      {"cache_after_prefill", CacheStatsJson(after_prefill)},
      {"cache_bytes_end", cache->bytes()},
      {"peak_memory_bytes", hwm - rss0},
      {"input_ids_bytes", length * int64_t(sizeof(int32_t))},
  };
  if (!compressing.empty() && !plain.empty()) {
    // What one compression adds to a decode step, and its share of decode
    // time amortised over every step.
    const double p = Median(plain), c = Median(compressing);
    row["decode_steps_compressing"] = compressing.size();
    row["decode_ms_plain_median"] = p * 1e3;
    row["decode_ms_compressing_median"] = c * 1e3;
    row["compression_ms"] = (c - p) * 1e3;
    row["compression_over_decode_step"] = (c - p) / p;
    row["compression_share_of_decode_time"] =
        (c - p) * compressing.size() / (p * steps.size() + (c - p) * compressing.size());
  }
  return row;
}

// Runs RunOne in a child; its JSON comes back through a pipe.
absl::StatusOr<nlohmann::json> RunForked(const LlamaModel& model,
                                         const EngineOptions& options,
                                         int64_t length, int64_t decode) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("bench_cache: pipe failed");
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError("bench_cache: fork failed");
  }
  if (pid == 0) {
    close(fds[0]);
    absl::StatusOr<nlohmann::json> row = RunOne(model, options, length, decode);
    const std::string out =
        row.ok() ? row->dump() : nlohmann::json{{"error", row.status().ToString()}}.dump();
    const ssize_t written = write(fds[1], out.data(), out.size());
    _exit(written == static_cast<ssize_t>(out.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      text.append(buf, n);
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || text.empty()) {
    return absl::InternalError(absl::StrCat(
        "bench_cache: the run of ", length, " tokens died (status ", wstatus, ")"));
  }
  nlohmann::json row = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (row.is_discarded()) {
    return absl::InternalError("bench_cache: unreadable result from the run of " +
                               std::to_string(length) + " tokens");
  }
  if (row.contains("error")) {
    return absl::InternalError(row["error"].get<std::string>());
  }
  return row;
}

// max/min of a column over rows.
double Spread(const std::vector<nlohmann::json>& rows, const char* key) {
  double lo = 1e300, hi = 0;
  for (const auto& r : rows) {
    lo = std::min(lo, r[key].get<double>());
    hi = std::max(hi, r[key].get<double>());
  }
  return lo > 0 ? hi / lo : 0;
}

absl::StatusOr<std::vector<double>> FeatureBudgets() {
  std::vector<double> budgets;
  for (absl::string_view item :
       absl::StrSplit(absl::GetFlag(FLAGS_feature_budgets), ',', absl::SkipEmpty())) {
    double b;
    if (!absl::SimpleAtod(item, &b) || !(b > 0 && b <= 1) ||
        (!budgets.empty() && !(b < budgets.back()))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--feature_budgets: \"", item, "\" must be a fraction in (0, 1], descending"));
    }
    budgets.push_back(b);
  }
  return budgets;
}

// MatryoshkaKV: the policy alone, at each feature budget, and the full
// cache, per length; then bytes and decode time relative to the full cache
// and to the policy alone, measured in the same run.
absl::Status BenchFeatureBudgets(const LlamaModel& model, const EngineOptions& options,
                                 const std::vector<double>& budgets,
                                 const std::vector<int64_t>& lengths, int64_t decode,
                                 const std::string& shape) {
  const ModelConfig& c = model.config();
  auto file = std::make_shared<CompressorFile>();
  file->path = "(random)";
  file->method = "matryoshka";
  file->model = {shape, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
                 c.vocab_size};
  file->matryoshka = std::make_shared<MatryoshkaParams>(
      RandomMatryoshka(c.num_layers, c.num_kv_heads, c.head_dim, budgets, 0.1f, 77));
  nlohmann::json table = nlohmann::json::array();
  for (int64_t length : lengths) {
    std::vector<std::pair<std::string, EngineOptions>> runs;
    EngineOptions alone = options;  // the policy without projections
    alone.projection = nullptr;
    alone.cache.clear_feature_budget();
    EngineOptions full = alone;
    full.compressor = nullptr;
    full.cache = CacheConfig();
    full.cache.mutable_full();
    if (length <= absl::GetFlag(FLAGS_full_max_length)) runs.emplace_back("full", full);
    runs.emplace_back(PolicyName(options.cache), alone);
    for (double b : budgets) {
      EngineOptions o = options;
      o.projection = file;
      o.cache.set_feature_budget(b);
      runs.emplace_back(absl::StrCat(PolicyName(options.cache), " + matryoshka ", b), o);
    }
    std::vector<nlohmann::json> rows;
    for (auto& [name, o] : runs) {
      std::fprintf(stderr, "bench_cache: %s, %ld tokens...\n", name.c_str(), length);
      KVFOLD_ASSIGN_OR_RETURN(nlohmann::json row, RunForked(model, o, length, decode));
      row["run"] = name;
      row["feature_budget"] = o.projection ? o.cache.feature_budget() : 1.0;
      PrintJson(row);
      std::fflush(stdout);
      rows.push_back(std::move(row));
    }
    // Ratios to the full cache when it ran (--full_max_length).
    const bool has_full = rows[0]["run"] == "full";
    const nlohmann::json& alone_row = rows[has_full ? 1 : 0];
    const double alone_ms = alone_row["decode_ms_per_token_median"].get<double>();
    for (const nlohmann::json& r : rows) {
      const double bytes = r["cache_bytes_end"].get<double>();
      const double ms = r["decode_ms_per_token_median"].get<double>();
      nlohmann::json t{{"doc_tokens", length},
                       {"run", r["run"]},
                       {"cache_bytes", r["cache_bytes_end"]},
                       {"decode_ms_median", ms},
                       {"decode_over_policy_alone", ms / alone_ms}};
      if (has_full) {
        t["bytes_over_full"] = bytes / rows[0]["cache_bytes_end"].get<double>();
        t["decode_over_full"] = ms / rows[0]["decode_ms_per_token_median"].get<double>();
      }
      table.push_back(std::move(t));
    }
  }
  PrintJson({{"summary", "matryoshka"}, {"model", shape}, {"table", table}});
  return absl::OkStatus();
}

}  // namespace

absl::Status RunBenchCache() {
  KVFOLD_ASSIGN_OR_RETURN(EngineOptions options, EngineOptionsFromFlags());
  if (PolicyName(options.cache) == "full") {
    return absl::InvalidArgumentError(
        "bench_cache compares a compressed policy with the full cache: give "
        "--cache=<policy> --cache_slots=N");
  }
  KVFOLD_ASSIGN_OR_RETURN(ModelConfig config,
                          BenchShape(absl::GetFlag(FLAGS_bench_model)));
  const int64_t layers = absl::GetFlag(FLAGS_bench_layers);
  if (layers < 0) return absl::InvalidArgumentError("--bench_layers must be >= 0");
  if (layers > 0) config.num_layers = layers;
  if (options.cache.has_lococo() && options.compressor == nullptr) {
    // Timing only: a random module of the shape calibration would give.
    auto file = std::make_shared<CompressorFile>();
    file->path = "(random)";
    file->method = "lococo";
    file->model = {absl::GetFlag(FLAGS_bench_model), config.num_layers, config.hidden_size,
                   config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size};
    const double rate = absl::GetFlag(FLAGS_lococo_hh_keep_rate);
    const int64_t kernel = absl::GetFlag(FLAGS_lococo_kernel);
    const int64_t slots = options.cache.slots() > 0 ? options.cache.slots() : 512;
    if (!(rate >= 0 && rate < 1) || kernel < 1 || kernel % 2 == 0) {
      return absl::InvalidArgumentError(
          "--lococo_hh_keep_rate must be in [0, 1) and --lococo_kernel odd and >= 1");
    }
    file->lococo = std::make_shared<LoCoCoParams>(
        RandomLoCoCo(config.num_layers, config.head_dim, slots, rate, kernel, 99));
    options.compressor = std::move(file);
  }
  KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(options, config));
  std::vector<int64_t> lengths;
  for (absl::string_view item :
       absl::StrSplit(absl::GetFlag(FLAGS_doc_lengths), ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v) || v < 2 || v > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--doc_lengths: \"", item, "\" must be an integer in [2, ",
          config.max_position_embeddings, "]"));
    }
    lengths.push_back(v);
  }
  if (lengths.empty()) return absl::InvalidArgumentError("--doc_lengths is empty");
  const int64_t decode = absl::GetFlag(FLAGS_decode_tokens);
  if (decode < 1) return absl::InvalidArgumentError("--decode_tokens must be >= 1");
  const int64_t full_max = absl::GetFlag(FLAGS_full_max_length);

  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Random(config, 1234));
  KVFOLD_ASSIGN_OR_RETURN(std::vector<double> budgets, FeatureBudgets());
  if (!budgets.empty()) {
    return BenchFeatureBudgets(*model, options, budgets, lengths, decode,
                               absl::GetFlag(FLAGS_bench_model));
  }
  EngineOptions full = options;
  full.compressor = nullptr;
  full.projection = nullptr;
  full.cache = CacheConfig();
  full.cache.mutable_full();
  std::vector<nlohmann::json> policy_rows, full_rows;
  for (int64_t length : lengths) {
    for (bool is_full : {false, true}) {
      if (is_full && length > full_max) continue;
      std::fprintf(stderr, "bench_cache: %s, %ld tokens...\n",
                   is_full ? "full" : PolicyName(options.cache).c_str(), length);
      KVFOLD_ASSIGN_OR_RETURN(
          nlohmann::json row,
          RunForked(*model, is_full ? full : options, length, decode));
      PrintJson(row);
      std::fflush(stdout);
      (is_full ? full_rows : policy_rows).push_back(std::move(row));
    }
  }
  // Per-token prefill cost from the shortest to the longest document: 1 for
  // linear prefill, length ratio for quadratic.
  const auto& first = policy_rows.front();
  const auto& last = policy_rows.back();
  nlohmann::json summary = {
      {"summary", PolicyName(options.cache)},
      {"model", absl::GetFlag(FLAGS_bench_model)},
      {"slots", LayerBudgets(options.cache, config.num_layers, options.prefill_chunk,
                             Learned(options))->front()},
      {"layers", config.num_layers},
      {"prefill_chunk", options.prefill_chunk},
      {"doc_tokens", {first["doc_tokens"], last["doc_tokens"]}},
      {"peak_memory_max_over_min", Spread(policy_rows, "peak_memory_bytes")},
      {"decode_ms_max_over_min", Spread(policy_rows, "decode_ms_per_token_median")},
      {"prefill_us_per_token_last_over_first",
       last["prefill_us_per_token"].get<double>() /
           first["prefill_us_per_token"].get<double>()},
  };
  if (full_rows.size() >= 2) {
    summary["full_peak_memory_last_over_first"] =
        full_rows.back()["peak_memory_bytes"].get<double>() /
        full_rows.front()["peak_memory_bytes"].get<double>();
    summary["full_doc_tokens"] = {full_rows.front()["doc_tokens"],
                                  full_rows.back()["doc_tokens"]};
  }
  PrintJson(summary);
  return absl::OkStatus();
}

}  // namespace kvfold
