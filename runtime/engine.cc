#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "cache/policies.h"
#include "kernels/status_macros.h"
#include "runtime/sequence_parallel.h"

namespace kvfold {

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

// log softmax(row)[target], in double.
double LogProb(const float* row, int64_t vocab, int32_t target) {
  const float mx = *std::max_element(row, row + vocab);
  double sum = 0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - mx);
  return double(row[target]) - mx - std::log(sum);
}

}  // namespace

Engine::Engine(const LlamaModel& model, const EngineOptions& options)
    : model_(model), options_(options), pool_(options.threads) {
  // The engine runs where the model's weights are.
  absl::StatusOr<std::unique_ptr<DeviceStream>> ds =
      DeviceStream::Open(model.device(), &pool_, options.timers);
  if (ds.ok()) {
    device_stream_ = std::move(*ds);
    stream_ = device_stream_->stream();
  } else {
    status_ = ds.status();  // reported by NewCache, where every request starts
    stream_.pool = &pool_;
  }
  learned_ = Learned(options);
  if (const MatryoshkaParams* p = learned_.matryoshka.get(); p != nullptr && status_.ok()) {
    const TpSlice& t = model.tp_slice();
    for (size_t a = 0; a < p->budgets.size() && status_.ok(); ++a) {
      absl::StatusOr<std::shared_ptr<const FeatureLayout>> layout =
          FeatureLayout::Make(*p, static_cast<int>(a), t.kv_head_begin, t.kv_heads);
      if (layout.ok()) {
        learned_.matryoshka_layouts.push_back(*std::move(layout));
      } else {
        status_ = layout.status();
      }
    }
  }
}

absl::Status Engine::CheckWindow(int64_t tokens) const {
  // Mistral v0.1's sliding window is not implemented: past it the result
  // would silently differ from the reference, so refuse instead.
  const int64_t window = model_.config().sliding_window;
  if (window > 0 && tokens > window) {
    return absl::UnimplementedError(absl::StrCat(
        "sequence of ", tokens, " tokens exceeds the model's sliding_window (",
        window, "); sliding-window attention is not supported yet"));
  }
  return absl::OkStatus();
}

absl::Status ValidateEngineOptions(const EngineOptions& options) {
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill_chunk must be >= 1, got ", options.prefill_chunk));
  }
  if (options.threads < 0 || options.threads > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "threads must be in [0, ", kMaxThreads, "], got ", options.threads));
  }
  if (options.batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch must be >= 1, got ", options.batch));
  }
  return absl::OkStatus();
}

namespace {

// The smallest per-layer budget of a compressing policy; 0 for Full.
int64_t CacheBudget(const EngineOptions& options) {
  const CacheConfig& c = options.cache;
  if (c.has_full() || c.policy_case() == CacheConfig::POLICY_NOT_SET) return 0;
  int64_t budget = c.slots();
  if (c.layer_slots_size() > 0) {
    budget = *std::min_element(c.layer_slots().begin(), c.layer_slots().end());
  }
  if (const LearnedParams l = Learned(options); budget == 0 && l.lococo != nullptr) {
    budget = l.lococo->slots;  // the compressor's M
  }
  return budget;
}

}  // namespace

int64_t SpAnchorTokens(const EngineOptions& options, int64_t tokens, int sp) {
  if (options.sp_anchor >= 0) return options.sp_anchor;
  const int64_t anchor = DefaultAnchorTokens(tokens, sp), budget = CacheBudget(options);
  return budget > 0 ? std::min(anchor, budget) : anchor;
}

SpCostModel SpCosts(const EngineOptions& options, const ModelConfig& model, int64_t tokens,
                    int sp) {
  const double h = double(model.hidden_size), q = double(model.num_heads * model.head_dim);
  const double kv = double(model.num_kv_heads * model.head_dim);
  SpCostModel cost;
  // q, k, v and o projections, then gate, up and down.
  cost.token = 2 * (h * (2 * q + 2 * kv) + 3 * h * double(model.intermediate_size));
  cost.pair = 4 * q;  // q.k and p.v for every query head
  const int64_t budget = CacheBudget(options), block = tokens / std::max(sp, 1);
  cost.cache = budget > 0 ? budget + options.prefill_chunk / 2 : block / 2;
  cost.passing = options.sp_passing_slots > 0 ? options.sp_passing_slots
                 : budget > 0                 ? budget
                                              : block;
  return cost;
}

absl::StatusOr<SpPlan> PlanSpBlocks(const EngineOptions& options, const ModelConfig& model,
                                    int64_t tokens, int sp) {
  const int64_t anchor = SpAnchorTokens(options, tokens, sp);
  if (!options.sp_balance) return PlanBlocks(tokens, sp, anchor);
  return PlanBalancedBlocks(tokens, sp, anchor, SpCosts(options, model, tokens, sp));
}

absl::Status ValidateSpOptions(const EngineOptions& options, int sp) {
  if (sp <= 1) return absl::OkStatus();
  const CacheConfig& c = options.cache;
  if (options.sp_anchor < -1 || options.sp_passing_slots < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sp_anchor (", options.sp_anchor, ") must be >= 0 or -1 (auto) and ",
        "--sp_passing_slots (", options.sp_passing_slots, ") >= 0"));
  }
  if (options.projection != nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "--sp=", sp, " with MatryoshkaKV projections is not supported; use --sp=1"));
  }
  if (c.has_streaming() && c.streaming().reindex_positions()) {
    return absl::UnimplementedError(absl::StrCat(
        "--sp=", sp, " needs absolute positions: StreamingLLM's reindex_positions cannot "
        "be used with sequence parallelism"));
  }
  // A passing block comes out of the rank's cache: it cannot hold more.
  const int64_t budget = CacheBudget(options);
  if (budget > 0 && options.sp_passing_slots > budget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sp_passing_slots=", options.sp_passing_slots, " exceeds the cache of ", budget,
        " slots per layer (--cache_slots) that the passing blocks come from"));
  }
  return absl::OkStatus();
}

LearnedParams Learned(const EngineOptions& options) {
  LearnedParams l;
  if (options.compressor != nullptr) l.lococo = options.compressor->lococo;
  if (options.projection != nullptr) l.matryoshka = options.projection->matryoshka;
  return l;
}

absl::Status ValidateCacheOptions(const EngineOptions& options,
                                  const ModelConfig& model) {
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options));
  for (const auto* file : {&options.compressor, &options.projection}) {
    if (*file != nullptr) KVFOLD_RETURN_IF_ERROR(CheckCompressorModel(**file, model));
  }
  return ValidateCacheConfig(options.cache, model.num_layers,
                             options.prefill_chunk, Learned(options));
}

absl::Status ValidateGenerateOptions(const GenerateOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> Engine::NewCache() const {
  return NewCache(options_.cache);
}

absl::StatusOr<std::unique_ptr<KvCache>> Engine::NewCache(
    const CacheConfig& config) const {
  KVFOLD_RETURN_IF_ERROR(status_);
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options_));
  return MakeCache(config, model_.cache_shape(stream_), options_.prefill_chunk, learned_);
}

absl::Status Engine::Prefill(absl::Span<const int32_t> tokens,
                             LogitsFor which, KvCache& cache,
                             std::vector<float>* logits,
                             const std::function<void(int64_t, int64_t)>& on_chunk) {
  KVFOLD_RETURN_IF_ERROR(ValidateEngineOptions(options_));
  const int64_t n = static_cast<int64_t>(tokens.size());
  const ModelConfig& c = model_.config();
  const int64_t vocab = c.vocab_size;
  if (n == 0) return absl::InvalidArgumentError("prefill: no tokens");
  KVFOLD_RETURN_IF_ERROR(CheckWindow(cache.next_position() + n));
  if (logits != nullptr) {
    logits->assign((which == LogitsFor::kAll ? n : 1) * vocab, 0.0f);
  }
  std::vector<int32_t> positions;
  for (int64_t begin = 0; begin < n; begin += options_.prefill_chunk) {
    const int64_t len = std::min(options_.prefill_chunk, n - begin);
    const int64_t start = cache.next_position();
    positions.resize(len);
    std::iota(positions.begin(), positions.end(), static_cast<int32_t>(start));
    const bool last = begin + len == n;
    LogitsFor chunk_which = LogitsFor::kNone;
    float* out = nullptr;
    if (which == LogitsFor::kAll) {
      chunk_which = LogitsFor::kAll;
      out = logits->data() + begin * vocab;
    } else if (which == LogitsFor::kLast && last) {
      chunk_which = LogitsFor::kLast;
      out = logits->data();
    }
    KVFOLD_RETURN_IF_ERROR(model_.Forward(stream_, tokens.subspan(begin, len),
                                          positions, chunk_which, cache,
                                          scratch_, out));
    if (on_chunk) on_chunk(begin + len, n);
  }
  return absl::OkStatus();
}

absl::Status Engine::PrefillDocument(absl::Span<const int32_t> document, KvCache& cache,
                                     std::vector<float>* logits,
                                     const std::function<void(int64_t, int64_t)>& on_progress,
                                     absl::Span<const int32_t> observer) {
  const int sp = model_.sp_size();
  if (!observer.empty() && (sp == 1 || logits != nullptr)) {
    return absl::InvalidArgumentError(
        "prefill: a question observes a document only over an SP group, without its logits");
  }
  const LogitsFor which = logits != nullptr ? LogitsFor::kLast : LogitsFor::kNone;
  if (sp == 1) return Prefill(document, which, cache, logits, on_progress);
  KVFOLD_RETURN_IF_ERROR(ValidateSpOptions(options_, sp));
  if (cache.tokens_seen() != 0) {
    return absl::InvalidArgumentError("prefill: a document needs an empty cache");
  }
  // The blocks cover the document, or all of it but the last token when its
  // logits are wanted (that token goes through phase 2 on every rank).
  const int64_t n = static_cast<int64_t>(document.size());
  const int64_t split = logits != nullptr ? n - 1 : n;
  KVFOLD_RETURN_IF_ERROR(CheckWindow(n));
  if (split < sp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sp=", sp, " needs a document of at least ", sp + (split < n ? 1 : 0), " tokens (one ",
        "block per rank", split < n ? ", and the last token, which every rank feeds" : "",
        "); this one has ", n));
  }
  KVFOLD_ASSIGN_OR_RETURN(const SpPlan plan,
                          PlanSpBlocks(options_, model_.config(), split, sp));
  const int rank = model_.sp_rank();
  const SpBlock& block = plan.blocks[rank];
  BlockPrefill p;
  if (rank > 0) p.anchor = document.subspan(0, plan.anchor);
  p.block = document.subspan(block.begin, block.size());
  p.block_begin = block.begin;
  p.chunk = options_.prefill_chunk;
  p.passing_slots = options_.sp_passing_slots;
  p.question = observer;
  p.question_begin = n;
  const int layers = model_.config().num_layers;
  p.on_layer = [&](int done) {
    if (on_progress) on_progress(split * done / layers, n);
  };
  KVFOLD_RETURN_IF_ERROR(model_.PrefillBlock(stream_, p, cache, scratch_));
  cache.SkipPositions(split - block.size());
  if (logits == nullptr) return absl::OkStatus();
  return Prefill(document.subspan(split), LogitsFor::kLast, cache, logits, on_progress);
}

absl::Status Engine::PrefillQuestion(absl::Span<const int32_t> question,
                                     LogitsFor which, KvCache& cache,
                                     std::vector<float>* logits) {
  return PrefillQuestion(question, options_.cache.question_aware(), which, cache, logits);
}

absl::Status Engine::PrefillQuestion(absl::Span<const int32_t> question, bool aware,
                                     LogitsFor which, KvCache& cache,
                                     std::vector<float>* logits) {
  cache.SetPhase(aware ? CachePhase::kPrefill : CachePhase::kAppend);
  return Prefill(question, which, cache, logits);
}

absl::Status Engine::Decode(int32_t token, KvCache& cache,
                            std::vector<float>* logits) {
  KvCache* const caches[] = {&cache};
  return DecodeBatch({&token, 1}, caches, logits);
}

absl::Status Engine::DecodeBatch(absl::Span<const int32_t> tokens,
                                 absl::Span<KvCache* const> caches,
                                 std::vector<float>* logits) {
  if (caches.size() != tokens.size()) {
    return absl::InvalidArgumentError("decode: tokens and caches differ in number");
  }
  std::vector<int32_t> positions(tokens.size());
  for (size_t b = 0; b < tokens.size(); ++b) {
    if (caches[b] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("decode: cache ", b, " is null"));
    }
    positions[b] = static_cast<int32_t>(caches[b]->next_position());
    KVFOLD_RETURN_IF_ERROR(CheckWindow(positions[b] + 1));
  }
  for (KvCache* cache : caches) cache->SetPhase(CachePhase::kDecode);
  logits->resize(tokens.size() * model_.config().vocab_size);
  return model_.ForwardDecodeBatch(stream_, tokens, positions, caches, scratch_,
                                   logits->data());
}

absl::StatusOr<GenerateResult> Engine::Generate(
    absl::Span<const int32_t> prompt, const GenerateOptions& options) {
  KVFOLD_ASSIGN_OR_RETURN(std::vector<GenerateResult> r,
                          Answer(prompt, {}, options));
  return std::move(r[0]);
}

absl::StatusOr<std::vector<GenerateResult>> Engine::Answer(
    absl::Span<const int32_t> document,
    const std::vector<std::vector<int32_t>>& questions,
    const GenerateOptions& options) {
  const AnswerRequest request{document, questions, options, nullptr};
  return std::move(AnswerBatch({&request, 1})[0]);
}

struct Engine::RequestState {
  const AnswerRequest* request = nullptr;
  const CacheConfig* config = nullptr;  // the request's or the engine's
  absl::Status status;                  // its first error: it stops there
  std::vector<GenerateResult> results;  // one per answer, filled as they end
  // Question-agnostic (or no questions): the prefilled document, shared by
  // the questions until the last one has started.
  std::unique_ptr<KvCache> document;
  std::vector<float> document_logits;  // [vocab] after the document
  CacheStats document_stats;
  double document_seconds = 0;
  int64_t document_sp_bytes = 0;  // the document prefill's SP payload here
  std::vector<int64_t> sp_bytes;  // per answer: this rank's SP payload
};

struct Engine::AnswerStream {
  RequestState* request = nullptr;
  size_t answer = 0;  // the question's index
  std::unique_ptr<KvCache> cache;
  std::vector<float> logits;  // [vocab] after its prefill: its first token's
  std::mt19937_64 rng;        // seeded as every answer is, so batching
                              // does not change what is sampled
  GenerateResult result;
  int64_t sp_bytes = 0;       // this rank's SP payload for its own steps
};

absl::Status Engine::StartAnswer(RequestState& rs, AnswerStream& st) {
  const AnswerRequest& r = *rs.request;
  const int64_t n = static_cast<int64_t>(r.document.size());
  const bool aware = rs.config->question_aware();
  auto progress = [&r, n](int64_t done, int64_t) {
    if (r.options.on_prefill) r.options.on_prefill(done, n);
  };
  GenerateResult& res = st.result;
  st.rng.seed(r.options.seed);
  if (r.questions.empty() || !aware) {
    if (rs.document == nullptr) {  // the request's first answer
      KVFOLD_ASSIGN_OR_RETURN(rs.document, NewCache(*rs.config));
      const auto t0 = std::chrono::steady_clock::now();
      const int64_t sent = scratch_.sp_bytes;
      // Logits after the document are sampled only when it is the prompt.
      KVFOLD_RETURN_IF_ERROR(PrefillDocument(r.document, *rs.document,
                                             r.questions.empty() ? &rs.document_logits : nullptr,
                                             progress));
      rs.document_seconds = Seconds(t0);
      rs.document_sp_bytes = scratch_.sp_bytes - sent;
      rs.document_stats = rs.document->Stats();
    }
    res.document_cache = rs.document_stats;
  }
  if (r.questions.empty()) {
    res.prompt_tokens = n;
    res.prefill_seconds = rs.document_seconds;
    st.cache = std::move(rs.document);
    st.logits = std::move(rs.document_logits);
    return absl::OkStatus();
  }
  const std::vector<int32_t>& question = r.questions[st.answer];
  const int64_t q = static_cast<int64_t>(question.size());
  res.prompt_tokens = n + q;
  const auto t0 = std::chrono::steady_clock::now();
  if (aware && model_.sp_size() > 1) {
    // The question observes every rank's last chunk, then joins the SP
    // group's caches as a question-agnostic one does (phase 2).
    KVFOLD_ASSIGN_OR_RETURN(st.cache, NewCache(*rs.config));
    const int64_t sent = scratch_.sp_bytes;
    KVFOLD_RETURN_IF_ERROR(
        PrefillDocument(r.document, *st.cache, nullptr, progress, question));
    res.document_cache = st.cache->Stats();
    KVFOLD_RETURN_IF_ERROR(
        PrefillQuestion(question, /*aware=*/false, LogitsFor::kLast, *st.cache, &st.logits));
    st.sp_bytes += scratch_.sp_bytes - sent;
  } else if (aware) {
    // The question joins the document's last chunk, so that chunk is
    // compressed once, with the question's queries voting.
    KVFOLD_ASSIGN_OR_RETURN(st.cache, NewCache(*rs.config));
    const int64_t tail = std::min(n, std::max<int64_t>(0, options_.prefill_chunk - q));
    if (n > tail) {
      KVFOLD_RETURN_IF_ERROR(Prefill(r.document.subspan(0, n - tail), LogitsFor::kNone,
                                     *st.cache, nullptr, progress));
    }
    res.document_cache = st.cache->Stats();
    std::vector<int32_t> last(r.document.end() - tail, r.document.end());
    last.insert(last.end(), question.begin(), question.end());
    KVFOLD_RETURN_IF_ERROR(
        PrefillQuestion(last, /*aware=*/true, LogitsFor::kLast, *st.cache, &st.logits));
    progress(n, n);
  } else {
    st.cache = rs.document->Clone();
    const int64_t sent = scratch_.sp_bytes;
    KVFOLD_RETURN_IF_ERROR(
        PrefillQuestion(question, /*aware=*/false, LogitsFor::kLast, *st.cache, &st.logits));
    st.sp_bytes += scratch_.sp_bytes - sent;
    if (st.answer + 1 == r.questions.size()) {  // every question has its copy
      rs.document.reset();
      rs.document_logits = {};
    }
  }
  res.prefill_seconds = Seconds(t0) + rs.document_seconds;
  return absl::OkStatus();
}

bool Engine::NextToken(AnswerStream& st, const float* logits) const {
  const GenerateOptions& o = st.request->request->options;
  const ModelConfig& c = model_.config();
  std::vector<int32_t>& tokens = st.result.tokens;
  if (static_cast<int64_t>(tokens.size()) >= o.max_new_tokens) return false;
  if (o.on_logits) o.on_logits(st.answer, {logits, size_t(c.vocab_size)});
  const int32_t next = Sample(logits, c.vocab_size, o.sampling, st.rng);
  tokens.push_back(next);
  if (o.on_token) o.on_token(st.answer, next);
  if (o.stop_at_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(),
                                 next) != c.eos_token_ids.end()) {
    st.result.stopped_at_eos = true;
    return false;
  }
  // No step for logits nobody will sample from.
  return static_cast<int64_t>(tokens.size()) < o.max_new_tokens;
}

namespace {

// What can be refused before any work.
absl::Status CheckRequest(const AnswerRequest& r) {
  KVFOLD_RETURN_IF_ERROR(ValidateGenerateOptions(r.options));
  if (r.document.empty()) return absl::InvalidArgumentError("empty prompt");
  for (size_t i = 0; i < r.questions.size(); ++i) {
    if (r.questions[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("question ", i, " is empty"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<absl::StatusOr<std::vector<GenerateResult>>> Engine::AnswerBatch(
    absl::Span<const AnswerRequest> requests) {
  absl::Status engine_status = status_;
  if (engine_status.ok()) engine_status = ValidateEngineOptions(options_);
  std::vector<RequestState> states(requests.size());
  // Every answer stream, in order: (request, answer).
  std::vector<std::pair<size_t, size_t>> waiting;
  for (size_t i = 0; i < requests.size(); ++i) {
    RequestState& rs = states[i];
    rs.request = &requests[i];
    rs.config = requests[i].cache != nullptr ? requests[i].cache : &options_.cache;
    rs.status = engine_status.ok() ? CheckRequest(requests[i]) : engine_status;
    if (rs.status.ok() && model_.sp_size() > 1) {
      EngineOptions o = options_;
      o.cache = *rs.config;
      rs.status = ValidateSpOptions(o, model_.sp_size());
    }
    if (!rs.status.ok()) continue;
    rs.results.resize(std::max<size_t>(1, requests[i].questions.size()));
    for (size_t a = 0; a < rs.results.size(); ++a) waiting.emplace_back(i, a);
  }
  const size_t batch = std::max(1, options_.batch);
  std::vector<std::unique_ptr<AnswerStream>> rows;  // the batch, dense
  auto fail = [](RequestState& rs, const absl::Status& status) {
    if (rs.status.ok()) rs.status = status;
    rs.document.reset();
  };
  auto finish = [](AnswerStream& st) {
    st.result.cache = st.cache->Stats();
    RequestState& rs = *st.request;
    rs.sp_bytes.resize(rs.results.size());
    // The document's prefill counts in its first answer.
    rs.sp_bytes[st.answer] = (st.answer == 0 ? rs.document_sp_bytes : 0) + st.sp_bytes;
    rs.results[st.answer] = std::move(st.result);
  };
  // Rows of failed requests leave; returns whether any did.
  auto drop_failed = [&rows] {
    const size_t before = rows.size();
    rows.erase(std::remove_if(rows.begin(), rows.end(),
                              [](const auto& st) { return !st->request->status.ok(); }),
               rows.end());
    return rows.size() != before;
  };
  size_t next = 0;
  std::vector<int32_t> tokens;
  std::vector<KvCache*> caches;
  std::vector<float> logits;
  for (;;) {
    // Free rows take waiting streams: prefill, then their first token.
    do {
      while (rows.size() < batch && next < waiting.size()) {
        auto [request, answer] = waiting[next++];
        RequestState& rs = states[request];
        if (!rs.status.ok()) continue;
        auto st = std::make_unique<AnswerStream>();
        st->request = &rs;
        st->answer = answer;
        if (absl::Status s = StartAnswer(rs, *st); !s.ok()) {
          fail(rs, s);
          continue;
        }
        const auto t0 = std::chrono::steady_clock::now();
        const bool more = NextToken(*st, st->logits.data());
        st->logits = {};
        st->result.decode_seconds = Seconds(t0);
        if (more) {
          rows.push_back(std::move(st));
        } else {
          finish(*st);
        }
      }
    } while (drop_failed());
    if (rows.empty()) break;  // nothing runs, nothing waits
    for (const auto& st : rows) {
      if (absl::Status s = CheckWindow(st->cache->next_position() + 1); !s.ok()) {
        fail(*st->request, s);
      }
    }
    if (drop_failed()) continue;
    tokens.clear();
    caches.clear();
    for (const auto& st : rows) {
      tokens.push_back(st->result.tokens.back());
      caches.push_back(st->cache.get());
    }
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t sent = scratch_.sp_bytes;
    if (absl::Status s = DecodeBatch(tokens, caches, &logits); !s.ok()) {
      for (const auto& st : rows) fail(*st->request, s);
      continue;
    }
    // Every row puts the same payload into the step's merges.
    for (const auto& st : rows) st->sp_bytes += (scratch_.sp_bytes - sent) / int64_t(rows.size());
    std::vector<bool> more(rows.size());
    const int64_t vocab = model_.config().vocab_size;
    for (size_t b = 0; b < rows.size(); ++b) {
      more[b] = NextToken(*rows[b], logits.data() + b * vocab);
    }
    const double seconds = Seconds(t0);
    for (size_t b = 0; b < rows.size(); ++b) {
      rows[b]->result.decode_seconds += seconds;
      if (!more[b]) {
        finish(*rows[b]);
        rows[b] = nullptr;
      }
    }
    rows.erase(std::remove(rows.begin(), rows.end(), nullptr), rows.end());
  }
  ShareSpResults(states);
  std::vector<absl::StatusOr<std::vector<GenerateResult>>> out;
  out.reserve(states.size());
  for (RequestState& rs : states) {
    if (rs.status.ok()) {
      out.emplace_back(std::move(rs.results));
    } else {
      out.emplace_back(rs.status);
    }
  }
  return out;
}

void Engine::ShareSpResults(std::vector<RequestState>& states) {
  Communicator* group = model_.sp_group();
  if (group == nullptr || group->size() == 1) return;
  // Every rank of the group ran the same requests in step: one all-gather
  // of kFields values per answer (0 where one failed) gives each rank's
  // payload and cache stats.
  constexpr int64_t kFields = 7;
  std::vector<int64_t> mine;
  for (const RequestState& rs : states) {
    for (size_t a = 0; a < rs.results.size(); ++a) {
      const bool ok = rs.status.ok() && a < rs.sp_bytes.size();
      const GenerateResult& r = rs.results[a];
      for (int64_t v : {ok ? rs.sp_bytes[a] : 0, r.document_cache.tokens_seen,
                        r.document_cache.slots_held, r.document_cache.bytes,
                        r.cache.tokens_seen, r.cache.slots_held, r.cache.bytes}) {
        mine.push_back(ok ? v : 0);
      }
    }
  }
  const int64_t n = int64_t(mine.size()), ranks = group->size();
  if (n == 0) return;
  std::vector<int64_t> all(n * ranks);
  // An all-gather only copies: each int64 travels as two int32.
  const absl::Status s = group->AllGather(
      TensorView{mine.data(), DType::kI32, Device::Cpu(), {2 * n}},
      TensorView{all.data(), DType::kI32, Device::Cpu(), {2 * n * ranks}});
  const int layers = model_.config().num_layers;
  // The answer's fields from `at` on: tokens, slots and bytes, summed.
  auto sum = [&](CacheStats& st, int64_t at) {
    st = CacheStats();
    for (int64_t g = 0; g < ranks; ++g) {
      st.tokens_seen += all[g * n + at];
      st.slots_held += all[g * n + at + 1];
      st.bytes += all[g * n + at + 2];
    }
    st.compression_ratio = SlotCompressionRatio(st.tokens_seen, st.slots_held, layers);
  };
  int64_t k = 0;
  for (RequestState& rs : states) {
    for (GenerateResult& r : rs.results) {
      if (!s.ok()) {
        if (rs.status.ok()) rs.status = s;
      } else {
        for (int64_t g = 0; g < ranks; ++g) r.sp_bytes_per_rank.push_back(all[g * n + k]);
        sum(r.document_cache, k + 1);
        sum(r.cache, k + 4);
      }
      k += kFields;
    }
  }
}

absl::StatusOr<ScoreResult> Engine::Score(absl::Span<const int32_t> tokens) {
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError("score needs at least two tokens");
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, NewCache());
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t vocab = model_.config().vocab_size;
  ScoreResult r;
  // One chunk of logits at a time: [chunk, vocab], never [n, vocab].
  std::vector<float> logits;
  for (int64_t begin = 0; begin < n - 1; begin += options_.prefill_chunk) {
    const int64_t len = std::min(options_.prefill_chunk, n - 1 - begin);
    KVFOLD_RETURN_IF_ERROR(
        Prefill(tokens.subspan(begin, len), LogitsFor::kAll, *cache, &logits));
    for (int64_t i = 0; i < len; ++i) {
      r.logprobs.push_back(
          LogProb(&logits[i * vocab], vocab, tokens[begin + i + 1]));
      r.nll -= r.logprobs.back();
    }
  }
  r.perplexity = std::exp(r.nll / r.logprobs.size());
  r.cache = cache->Stats();
  return r;
}

}  // namespace kvfold
