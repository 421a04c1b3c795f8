// kvfold bench_tp: tensor-parallel communication, under mpirun -np T (all
// ranks one TP group). A random-weight model of --shape prefills
// --prefill_tokens and decodes --decode_tokens; every collective goes through
// a counting communicator, so the JSON gives per-step bytes and the share of
// the step spent communicating, next to the traffic PlanTpTraffic predicts
// (they must agree). It also prints the planned all-reduce volume per token
// of the Llama-3.1-8B and 70B shapes at T = 2/4/8, to read a cluster's cost
// off before running there.
#include <cstdio>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "models/llama.h"
#include "parallel/counting_communicator.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

nlohmann::json TrafficJson(const TpTraffic& t) {
  return {{"all_reduce_calls", t.all_reduce_calls},
          {"all_reduce_bytes", t.all_reduce_bytes},
          {"all_gather_calls", t.all_gather_calls},
          {"all_gather_bytes", t.all_gather_bytes}};
}

nlohmann::json CountJson(const CountingCommunicator* c) {
  nlohmann::json j = nlohmann::json::object();
  if (c == nullptr) return j;
  for (const auto& [op, n] : c->counts()) {
    j[op] = {{"calls", n.calls}, {"bytes", n.bytes}, {"seconds", n.seconds}};
  }
  return j;
}

bool Matches(const CountingCommunicator* c, const TpTraffic& plan) {
  auto get = [&](const char* op) {
    if (c == nullptr || !c->counts().count(op)) return OpCount{};
    return c->counts().at(op);
  };
  return get("AllReduce").calls == plan.all_reduce_calls &&
         get("AllReduce").bytes == plan.all_reduce_bytes &&
         get("AllGather").calls == plan.all_gather_calls &&
         get("AllGather").bytes == plan.all_gather_bytes;
}

// Planned per-token decode traffic of the big shapes; ring all-reduce moves
// 2 (T - 1) / T of the payload in and out of every rank.
absl::StatusOr<nlohmann::json> Expected() {
  nlohmann::json out = nlohmann::json::array();
  for (const char* shape : {"llama-3.1-8b", "llama-3.1-70b"}) {
    KVFOLD_ASSIGN_OR_RETURN(ModelConfig c, BenchShape(shape));
    for (int t : {2, 4, 8}) {
      KVFOLD_ASSIGN_OR_RETURN(TpTraffic p, PlanTpTraffic(c, t, 1, 1));
      out.push_back({{"shape", shape},
                     {"tp", t},
                     {"per_token", TrafficJson(p)},
                     {"all_reduce_mb_per_token_f32", p.all_reduce_bytes / 1e6},
                     {"all_reduce_mb_per_token_bf16", p.all_reduce_bytes / 2e6},
                     {"ring_wire_mb_per_rank_per_token_f32",
                      p.all_reduce_bytes * 2.0 * (t - 1) / t / 1e6}});
    }
  }
  return out;
}

}  // namespace

absl::Status RunBenchTp(Ranks& ranks) {
  ModelConfig c;
  const int64_t prefill = absl::GetFlag(FLAGS_prefill_tokens);
  const int64_t decode = absl::GetFlag(FLAGS_decode_tokens);
  const int t = ranks.size();
  absl::Status prepared = [&]() -> absl::Status {
    KVFOLD_ASSIGN_OR_RETURN(c, BenchShape(absl::GetFlag(FLAGS_shape)));
    if (absl::GetFlag(FLAGS_bench_layers) > 0) c.num_layers = absl::GetFlag(FLAGS_bench_layers);
    if (prefill < 1 || decode < 1) {
      return absl::InvalidArgumentError("--prefill_tokens and --decode_tokens must be >= 1");
    }
    return MakeTpSlice(c, 0, t).status();
  }();
  KVFOLD_RETURN_IF_ERROR(ranks.AgreeOnStartup(prepared));
  std::unique_ptr<CountingCommunicator> counting;
  LoadOptions load;
  if (t > 1) {
    counting = std::make_unique<CountingCommunicator>(ranks.world());
    load.tp = counting.get();
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Random(c, 7, load));
  EngineOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.prefill_chunk = prefill;
  Engine engine(*model, options);
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
  std::vector<int32_t> prompt(prefill);
  for (int64_t i = 0; i < prefill; ++i) prompt[i] = int32_t((i * 7919 + 13) % c.vocab_size);
  std::vector<float> logits;

  auto start = Clock::now();
  KVFOLD_RETURN_IF_ERROR(engine.Prefill(prompt, LogitsFor::kLast, *cache, &logits));
  const double prefill_s = Since(start);
  const OpCount prefill_comm = counting ? counting->Total() : OpCount{};
  KVFOLD_ASSIGN_OR_RETURN(TpTraffic prefill_plan, PlanTpTraffic(c, t, prefill, 1));
  const bool prefill_ok = t == 1 || Matches(counting.get(), prefill_plan);
  const nlohmann::json prefill_counts = CountJson(counting.get());

  std::vector<double> step_s, comm_s;
  bool decode_ok = true;
  KVFOLD_ASSIGN_OR_RETURN(TpTraffic step_plan, PlanTpTraffic(c, t, 1, 1));
  nlohmann::json step_counts;
  for (int64_t i = 0; i < decode; ++i) {
    if (counting) counting->Reset();
    start = Clock::now();
    KVFOLD_RETURN_IF_ERROR(engine.Decode(int32_t(i % c.vocab_size), *cache, &logits));
    step_s.push_back(Since(start));
    comm_s.push_back(counting ? counting->Total().seconds : 0.0);
    decode_ok = decode_ok && (t == 1 || Matches(counting.get(), step_plan));
    step_counts = CountJson(counting.get());
  }
  if (!ranks.writer()) return absl::OkStatus();
  KVFOLD_ASSIGN_OR_RETURN(nlohmann::json expected, Expected());
  const double step = Median(step_s), comm = Median(comm_s);
  PrintJson({{"bench", "tp"},
             {"shape", absl::GetFlag(FLAGS_shape)},
             {"layers", c.num_layers},
             {"tp", t},
             {"communicator", ranks.world().kind()},
             {"threads_per_rank", options.threads},
             {"prefill",
              {{"tokens", prefill},
               {"seconds", prefill_s},
               {"comm_seconds", prefill_comm.seconds},
               {"comm_share", prefill_comm.seconds / prefill_s},
               {"counted", prefill_counts},
               {"planned", TrafficJson(prefill_plan)},
               {"plan_matches_count", prefill_ok}}},
             {"decode_step",
              {{"steps", decode},
               {"median_seconds", step},
               {"median_comm_seconds", comm},
               {"comm_share", comm / step},
               {"counted_last_step", step_counts},
               {"planned", TrafficJson(step_plan)},
               {"plan_matches_count", decode_ok}}},
             {"expected_decode_traffic", expected}});
  return absl::OkStatus();
}

}  // namespace kvfold
