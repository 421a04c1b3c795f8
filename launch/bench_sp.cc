// kvfold bench_sp: sequence-parallel prefill, under mpirun -np S (all ranks
// one SP group; S = 1 is the plain chunked prefill). A random-weight model
// of --bench_model prefills documents of --sp_doc_lengths with the cache
// policy of the flags (H2O with 512 slots when none is given); every SP
// collective goes through a counting communicator. One JSON line per
// length: each rank's block, wall and CPU seconds, bytes it put into the
// group's collectives and time spent in them. On a shared CPU the ranks
// compete for cores, so per-rank CPU seconds (the work) and bytes are what
// show the scaling; on a GPU per rank, wall seconds.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "models/llama.h"
#include "parallel/counting_communicator.h"
#include "runtime/engine.h"
#include "runtime/sequence_parallel.h"

ABSL_FLAG(std::string, sp_doc_lengths, "32768,65536,131072,262144",
          "bench_sp: document lengths in tokens");
ABSL_DECLARE_FLAG(std::string, bench_model);

namespace kvfold {
namespace {

double CpuSeconds() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Setup {
  ModelConfig config;
  EngineOptions options;
  std::vector<int64_t> lengths;
};

absl::StatusOr<Setup> Prepare(int sp) {
  Setup s;
  KVFOLD_ASSIGN_OR_RETURN(s.config, BenchShape(absl::GetFlag(FLAGS_bench_model)));
  const int64_t layers = absl::GetFlag(FLAGS_bench_layers);
  if (layers < 0) return absl::InvalidArgumentError("--bench_layers must be >= 0");
  if (layers > 0) s.config.num_layers = layers;
  KVFOLD_ASSIGN_OR_RETURN(s.options, EngineOptionsFromFlags());
  KVFOLD_ASSIGN_OR_RETURN(s.options.cache, CacheConfigFromFlags(s.options.compressor != nullptr));
  if (s.options.cache.policy_case() == CacheConfig::POLICY_NOT_SET) {
    s.options.cache.mutable_h2o();
    s.options.cache.set_slots(512);
  }
  KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(s.options, s.config));
  KVFOLD_RETURN_IF_ERROR(ValidateSpOptions(s.options, sp));
  constexpr int64_t kLongest = int64_t{1} << 22;
  for (absl::string_view item :
       absl::StrSplit(absl::GetFlag(FLAGS_sp_doc_lengths), ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v) || v < sp + 1 || v > kLongest) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--sp_doc_lengths: \"", item, "\" must be an integer in [", sp + 1, ", ", kLongest,
          "]"));
    }
    s.lengths.push_back(v);
  }
  if (s.lengths.empty()) return absl::InvalidArgumentError("--sp_doc_lengths is empty");
  // Random weights: any position is as good as another.
  for (int64_t v : s.lengths) {
    s.config.max_position_embeddings = std::max(s.config.max_position_embeddings, v);
  }
  return s;
}

}  // namespace

absl::Status RunBenchSp(Ranks& ranks) {
  const int sp = ranks.size();
  absl::StatusOr<Setup> setup = Prepare(sp);
  KVFOLD_RETURN_IF_ERROR(ranks.AgreeOnStartup(setup.status()));
  const Setup& s = *setup;
  CountingCommunicator counting(ranks.world());
  LoadOptions load;
  if (sp > 1) load.sp = &counting;
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Random(s.config, 1234, load));
  Engine engine(*model, s.options);
  for (int64_t length : s.lengths) {
    std::vector<int32_t> doc(length);
    for (int64_t i = 0; i < length; ++i) doc[i] = int32_t((i * 7919 + 13) % s.config.vocab_size);
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
    KVFOLD_ASSIGN_OR_RETURN(const SpPlan plan, PlanSpBlocks(s.options, s.config, length, sp));
    const SpCostModel costs = SpCosts(s.options, s.config, length, sp);
    KVFOLD_RETURN_IF_ERROR(ranks.world().Barrier());
    counting.Reset();
    const double cpu0 = CpuSeconds();
    const auto t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(engine.PrefillDocument(doc, *cache, nullptr));
    const double wall = Since(t0), cpu = CpuSeconds() - cpu0;
    const OpCount comm = counting.Total();
    const int rank = ranks.rank();
    const int64_t block = plan.blocks[rank].size();
    const nlohmann::json mine = {{"rank", rank},
                                 {"block_tokens", block},
                                 {"rows", block + (rank > 0 ? plan.anchor : 0)},
                                 {"model_gflop_per_layer",
                                  BlockCost(costs, rank, block, plan.anchor) * 1e-9},
                                 {"wall_seconds", wall},
                                 {"cpu_seconds", cpu},
                                 {"comm_seconds", comm.seconds},
                                 {"bytes", comm.bytes},
                                 {"slots_held", cache->Stats().slots_held}};
    KVFOLD_ASSIGN_OR_RETURN(std::vector<std::string> all, AllGatherText(ranks.world(), mine.dump()));
    if (!ranks.writer()) continue;
    nlohmann::json per_rank = nlohmann::json::array();
    double max_cpu = 0, max_wall = 0;
    int64_t bytes = 0;
    for (const std::string& text : all) {
      nlohmann::json r = nlohmann::json::parse(text);
      max_cpu = std::max(max_cpu, r["cpu_seconds"].get<double>());
      max_wall = std::max(max_wall, r["wall_seconds"].get<double>());
      bytes += r["bytes"].get<int64_t>();
      per_rank.push_back(std::move(r));
    }
    PrintJson({{"bench", "sp"},
               {"model", absl::GetFlag(FLAGS_bench_model)},
               {"layers", s.config.num_layers},
               {"cache_policy", PolicyName(s.options.cache)},
               {"cache_slots", s.options.cache.slots()},
               {"prefill_chunk", s.options.prefill_chunk},
               {"threads_per_rank", s.options.threads},
               {"sp", sp},
               {"doc_tokens", length},
               {"anchor_tokens", plan.anchor},
               {"blocks", s.options.sp_balance ? "balanced" : "equal"},
               {"max_rank_cpu_seconds", max_cpu},
               {"max_rank_wall_seconds", max_wall},
               {"tokens_per_cpu_second_slowest_rank", double(length) / max_cpu},
               {"bytes_exchanged", bytes},
               {"ranks", per_rank}});
  }
  return absl::OkStatus();
}

}  // namespace kvfold
