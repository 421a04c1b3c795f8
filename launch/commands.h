// The kvfold subcommands. Each returns a status; main() prints it as one
// line and sets the exit code.
#ifndef KVFOLD_LAUNCH_COMMANDS_H_
#define KVFOLD_LAUNCH_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "runtime/engine.h"

namespace kvfold {

// "1,2, 3" or "1 2 3" -> ids; errors name `source` and the bad item.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text,
                                              const std::string& source);

class Ranks;

// Prefixes "--" to a validation message, which names the field as its flag.
absl::Status AsFlagError(const absl::Status& s);

// The --cache* flags and --feature_budget (cache_flags.cc). A LoCoCo
// compressor file (`lococo_file`) selects --cache=lococo when no policy is
// named.
absl::StatusOr<CacheConfig> CacheConfigFromFlags(bool lococo_file);

// Engine options from --threads, --prefill_chunk and the --cache* flags,
// checked as far as possible without a model (done before a possibly large
// model is loaded).
absl::StatusOr<EngineOptions> EngineOptionsFromFlags();

// --device and --dtype, checked (a CUDA device must be usable).
absl::StatusOr<LoadOptions> LoadOptionsFromFlags();

// Random-weight model shapes for the benchmarks: llama-3.2-1b,
// tinyllama-1.1b, smollm-135m, tiny-256.
absl::StatusOr<ModelConfig> BenchShape(const std::string& name);

// JSON-ready accounting of a cache.
nlohmann::json CacheStatsJson(const CacheStats& stats);
// A result line's "sp_exchange": each SP rank's bytes and their sum.
nlohmann::json SpExchangeJson(const std::vector<int64_t>& bytes_per_rank);

struct Prompt;
class Tokenizer;

// Every id of `prompt` must be in the vocabulary: a tokenizer with more ids
// than the model is a mismatched checkpoint. `where` names the input.
absl::Status CheckIds(const Prompt& prompt, int64_t vocab, const Tokenizer* tokenizer,
                      const std::string& where);

// Writes `text` to `path` whole or not at all (a temporary file renamed over
// it), for summaries and reports.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

// --max_new_tokens, --temperature, --top_k, --top_p, --seed, --ignore_eos.
absl::StatusOr<GenerateOptions> GenerateOptionsFromFlags();

// Start-up shared by generate, score and run: `prepared` is this rank's
// verdict on its flags and inputs so far. Plans the mesh from config.json,
// agrees with every rank, forms the TP groups and loads this rank's slice of
// --model.
absl::StatusOr<std::unique_ptr<LlamaModel>> StartModel(Ranks& ranks, absl::Status prepared,
                                                      const EngineOptions& options,
                                                      const std::vector<Prompt>& prompts,
                                                      const Tokenizer* tokenizer);

// generate.cc: run on every rank of the job (launch/ranks.h).
absl::Status RunGenerate(Ranks& ranks);  // flags: --model --ids|--text..., sampling
absl::Status RunScore(Ranks& ranks);     // flags: --model --ids|--text...
// calibrate.cc: MatryoshkaKV projections by PCA (--method=pca --output ...).
absl::Status RunCalibrate(Ranks& ranks);
absl::Status RunBenchSp(Ranks& ranks);   // bench_sp.cc: --sp_doc_lengths --bench_model ...
absl::Status RunBenchTp(Ranks& ranks);   // bench_tp.cc: --shape --prefill_tokens ...
absl::Status RunBench();       // flags: --shape --prefill_tokens ...
absl::Status RunBenchCache();  // flags: --cache* --doc_lengths ...
absl::Status RunBenchGpu();    // flags: --gpu_shapes --gpu_doc_lengths ...
absl::Status RunBenchTokenizer();  // flags: --tokenizer --text_file --repeats
absl::Status RunTokenize();    // flags: --model --text|--text_file|--ids
// run.cc: the batch job over a JSONL file; demo.cc: run on the bundled demo.
absl::Status RunRun(Ranks& ranks);   // flags: --model --input --output ...
absl::Status RunDemo(Ranks& ranks);  // flags: as run, defaults to tools/demo
// eval.cc: accuracy on a task file of tools/tasks/make_tasks.py.
absl::Status RunEval(Ranks& ranks);  // flags: --model --tasks [--output --predictions]

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_COMMANDS_H_
