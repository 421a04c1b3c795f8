#include "models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/matryoshka.h"
#include "kernels/status_macros.h"
#include "kernels/thread_pool.h"
#include "models/llama_internal.h"

namespace kvfold {

absl::Status ValidateLoadOptions(const LoadOptions& o) {
  if (o.device.kind == Device::Kind::kCpu && o.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", DTypeName(o.dtype),
        ": the CPU backend holds weights as f32; use --dtype=f32 or a CUDA device"));
  }
  if (o.dtype != DType::kF32 && o.dtype != DType::kBF16 && o.dtype != DType::kF16) {
    return absl::InvalidArgumentError("--dtype must be f32, bf16 or f16");
  }
  return absl::OkStatus();
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights,
                       LoadOptions options, TpSlice slice)
    : config_(std::move(config)),
      w_(std::move(weights)),
      options_(options),
      slice_(slice),
      inv_freq_(RopeInvFreq(config_.rope)) {
  stats_.parameters = config_.NumParameters();
  stats_.weight_bytes = w_.embed.bytes() + w_.final_norm.bytes() + w_.lm_head.bytes();
  for (const LlamaLayerWeights& l : w_.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq,
                            &l.bk, &l.bv, &l.bo, &l.mlp_norm, &l.w_gate,
                            &l.w_up, &l.w_down}) {
      stats_.weight_bytes += t->bytes();
    }
  }
}

absl::Status LlamaModel::PlaceTables() {
  if (options_.device.kind == Device::Kind::kCpu) return absl::OkStatus();
  KVFOLD_ASSIGN_OR_RETURN(
      inv_freq_device_,
      Tensor::Allocate({int64_t(inv_freq_.size())}, DType::kF32, options_.device));
  Stream s;
  s.device = options_.device;
  return CopyToDevice(s, inv_freq_device_.data(), inv_freq_.data(),
                      inv_freq_.size() * sizeof(float));
}

// ---- Forward pass ---------------------------------------------------------

using llama_internal::Ensure;
using llama_internal::Linear;


absl::Status LlamaModel::Attention(const Stream& s, int layer,
                                   const int32_t* positions, int64_t n,
                                   absl::Span<const CacheRows> runs,
                                   ForwardScratch& sc) const {
  const LlamaLayerWeights& l = w_.layers[layer];
  float* xn = sc.xn.as<float>();
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wq, l.bq, sc.q.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wk, l.bk, sc.k.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wv, l.bv, sc.v.as<float>()));
  // Rotation uses each cache's positions (they differ from the absolute ones
  // only under StreamingLLM re-indexing); the cache records absolute ones.
  sc.rope_positions.resize(n);
  for (const CacheRows& run : runs) {
    run.cache->RopePositions(layer, positions + run.begin, run.n,
                             sc.rope_positions.data() + run.begin);
  }
  KVFOLD_RETURN_IF_ERROR(
      Rotate(s, sc.rope_positions.data(), n, sc.q.as<float>(), sc.k.as<float>(), sc));
  // MatryoshkaKV: when every run's cache has the same projected layout, the
  // output projection takes the projected outputs directly (U_v folded in).
  const std::shared_ptr<const FeatureLayout>& layout = runs[0].cache->shape().features;
  bool same = layout != nullptr;
  for (const CacheRows& run : runs) same = same && run.cache->shape().features == layout;
  std::shared_ptr<const FoldedOutput> fold;
  if (same) {
    KVFOLD_ASSIGN_OR_RETURN(fold, Folded(layout));
  }
  for (const CacheRows& run : runs) {
    KVFOLD_RETURN_IF_ERROR(AttendRun(s, layer, positions, run, sc, fold.get()));
  }
  if (sp_size() > 1) KVFOLD_RETURN_IF_ERROR(MergeOverGroup(s, n, runs, sc));
  float* x = sc.x.as<float>();
  if (fold != nullptr) {
    return AddRowParallel(s, sc.attn.as<float>(), n, fold->wo[layer], fold->bias[layer], x, sc);
  }
  // x += attn . Wo^T (+ bo)
  return AddRowParallel(s, sc.attn.as<float>(), n, l.wo, l.bo, x, sc);
}

absl::Status LlamaModel::Rotate(const Stream& s, const int32_t* rope, int64_t n, float* q,
                                float* k, ForwardScratch& sc) const {
  const float* inv_freq = inv_freq_.data();
  if (s.device.kind != Device::Kind::kCpu) {
    // Layers usually share positions: upload (a synchronising copy) only
    // when they change.
    if (sc.rope_uploaded.size() != size_t(n) ||
        !std::equal(rope, rope + n, sc.rope_uploaded.begin())) {
      KVFOLD_RETURN_IF_ERROR(Ensure(sc.rope_device, {n}, s.device, DType::kI32));
      KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, sc.rope_device.data(), rope,
                                          n * sizeof(int32_t)));
      sc.rope_uploaded.assign(rope, rope + n);
    }
    rope = sc.rope_device.as<int32_t>();
    inv_freq = inv_freq_device_.as<float>();
  }
  KVFOLD_RETURN_IF_ERROR(ApplyRope(s, q, rope, inv_freq, n, slice_.q_heads, config_.head_dim));
  return ApplyRope(s, k, rope, inv_freq, n, slice_.kv_heads, config_.head_dim);
}

AttentionArgs LlamaModel::HeadArgs() const {
  AttentionArgs a;
  a.q_heads = slice_.q_heads;
  a.kv_heads = slice_.kv_heads;
  a.head_dim = config_.head_dim;
  a.scale = 1.0f / std::sqrt(float(config_.head_dim));
  return a;
}

absl::Status LlamaModel::AttendRun(const Stream& s, int layer,
                                   const int32_t* positions, const CacheRows& run,
                                   ForwardScratch& sc, const FoldedOutput* fold) const {
  const ModelConfig& c = config_;
  const int64_t n = run.n;
  const int64_t q_dim = slice_.q_heads * c.head_dim, kv_dim = slice_.kv_heads * c.head_dim;
  KvCache& cache = *run.cache;
  // Sequence parallelism: only the last rank keeps new tokens; the others
  // attend over their caches (every key: they all precede the tokens).
  const bool sp = sp_size() > 1, keep = !sp || sp_rank() == sp_size() - 1;
  if (sp && cache.shape().features != nullptr) {
    return absl::UnimplementedError(
        "sequence parallelism with MatryoshkaKV projections is not supported; use --sp=1");
  }
  if (keep) {
    KVFOLD_RETURN_IF_ERROR(cache.Append(layer, sc.k.as<float>() + run.begin * kv_dim,
                                        sc.v.as<float>() + run.begin * kv_dim,
                                        positions + run.begin, n));
  }
  const LayerView view = cache.View(layer);
  AttentionArgs a = HeadArgs();
  a.q = sc.q.as<float>() + run.begin * q_dim;
  a.k = view.keys;
  a.v = view.values;
  a.out = sc.attn.as<float>() + run.begin * q_dim;
  if (sp) a.lse = sc.lse.as<float>() + run.begin * slice_.q_heads;
  const int64_t summed = keep ? cache.ColumnSumQueries(n) : 0;
  if (summed > 0) {
    KVFOLD_RETURN_IF_ERROR(
        Ensure(sc.col_sums, {slice_.kv_heads, view.length}, s.device));
    a.col_sums = sc.col_sums.as<float>();
    a.col_sums_from_query = n - std::min(summed, n);
  }
  a.num_queries = n;
  a.num_keys = view.length;
  a.kv_stride = view.stride;
  a.causal_offset = keep ? view.length - n : view.length - 1;
  if (view.length == 0 && sp) {
    // A rank whose cache is empty contributes nothing to the merge.
    const std::vector<float> zeros(n * q_dim, 0.0f);
    const std::vector<float> none(n * slice_.q_heads, -INFINITY);
    KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, a.out, zeros.data(), zeros.size() * sizeof(float)));
    return CopyToDevice(s, a.lse, none.data(), none.size() * sizeof(float));
  }
  if (const FeatureLayout* features = cache.shape().features.get()) {
    FoldedLayout packed;
    if (fold != nullptr) {
      packed.offsets = fold->offsets[layer].data();
      packed.stride = fold->width[layer];
      a.out = sc.attn.as<float>() + run.begin * packed.stride;
    }
    KVFOLD_RETURN_IF_ERROR(
        ProjectedAttention(s, *features, layer, view, a, fold ? &packed : nullptr));
  } else {
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
  }
  if (a.col_sums != nullptr && slice_.kv_replication > 1) {
    KVFOLD_RETURN_IF_ERROR(ShareColumnSums(s, view.length, sc));
  }
  if (!keep) return absl::OkStatus();
  return cache.AfterAttention(layer, {a.col_sums, nullptr, n});
}

absl::StatusOr<TpTraffic> PlanTpTraffic(const ModelConfig& c, int tp, int64_t tokens,
                                        int64_t logit_rows) {
  KVFOLD_ASSIGN_OR_RETURN(const TpSlice t, MakeTpSlice(c, 0, tp));
  TpTraffic traffic;
  if (tp == 1) return traffic;
  // Mirrors Forward: EmbedTokens, then Attention's and the MLP's AddRowParallel.
  traffic.all_reduce_calls = 1 + 2 * c.num_layers;
  traffic.all_reduce_bytes = traffic.all_reduce_calls * tokens * c.hidden_size * 4;
  if (logit_rows > 0) {  // Logits
    traffic.all_gather_calls = 1;
    traffic.all_gather_bytes = logit_rows * t.vocab_pad * 4;
  }
  return traffic;
}

absl::Status LlamaModel::ShareColumnSums(const Stream& s, int64_t length,
                                         ForwardScratch& sc) const {
  // A replicated KV head's statistics sum over all its query heads, which
  // the ranks sharing it hold between them: gather every rank's sums and add
  // those of the sharing ranks, in rank order (so all of them agree).
  const TpSlice& t = slice_;
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.gathered, {t.size, length}, s.device));
  float* all = sc.gathered.as<float>();
  float* mine = sc.col_sums.as<float>();
  KVFOLD_RETURN_IF_ERROR(options_.tp->AllGather(
      TensorView{mine, DType::kF32, s.device, {length}},
      TensorView{all, DType::kF32, s.device, {t.size * length}}));
  const int first = t.rank / t.kv_replication * t.kv_replication;
  KVFOLD_RETURN_IF_ERROR(
      CopyOnDevice(s, mine, all + first * length, length * sizeof(float)));
  for (int r = first + 1; r < first + t.kv_replication; ++r) {
    KVFOLD_RETURN_IF_ERROR(AddInPlace(s, mine, all + r * length, length));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::AddRowParallel(const Stream& s, const float* in, int64_t n,
                                        const Tensor& w, const Tensor& bias, float* x,
                                        ForwardScratch& sc) const {
  if (options_.tp == nullptr) return Linear(s, in, n, w, bias, x, /*accumulate=*/true);
  // Each rank's output is a partial sum over its slice of the inputs.
  KVFOLD_RETURN_IF_ERROR(Linear(s, in, n, w, bias, sc.partial.as<float>()));
  const int64_t values = n * config_.hidden_size;
  KVFOLD_RETURN_IF_ERROR(options_.tp->AllReduce(
      TensorView{sc.partial.data(), DType::kF32, s.device, {values}}, ReduceOp::kSum));
  return AddInPlace(s, x, sc.partial.as<float>(), values);
}

absl::Status LlamaModel::Mlp(const Stream& s, int layer, float* x, int64_t n,
                             ForwardScratch& sc) const {
  const LlamaLayerWeights& l = w_.layers[layer];
  float* xn = sc.xn.as<float>();
  KVFOLD_RETURN_IF_ERROR(
      RmsNorm(s, x, l.mlp_norm.as<float>(), config_.rms_norm_eps, xn, n, config_.hidden_size));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.w_gate, Tensor(), sc.gate.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.w_up, Tensor(), sc.up.as<float>()));
  KVFOLD_RETURN_IF_ERROR(SiluMul(s, sc.gate.as<float>(), sc.up.as<float>(),
                                 sc.gate.as<float>(), n * slice_.inter));
  return AddRowParallel(s, sc.gate.as<float>(), n, l.w_down, Tensor(), x, sc);
}

absl::Status LlamaModel::EmbedTokens(const Stream& s, absl::Span<const int32_t> tokens,
                                     ForwardScratch& sc) const {
  const int64_t n = int64_t(tokens.size()), h = config_.hidden_size;
  const int32_t* ids = tokens.data();
  if (options_.tp != nullptr) {
    // Vocabulary-parallel: each rank looks up the tokens of its rows (zeros
    // for the others) and the sum over the group is the embedding.
    sc.local_ids.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t local = tokens[i] - slice_.vocab_begin;
      sc.local_ids[i] = local >= 0 && local < slice_.vocab_rows ? int32_t(local) : -1;
    }
    ids = sc.local_ids.data();
  }
  if (s.device.kind != Device::Kind::kCpu) {
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.ids, {n}, s.device, DType::kI32));
    KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, sc.ids.data(), ids, n * sizeof(int32_t)));
    ids = sc.ids.as<int32_t>();
  }
  float* x = sc.x.as<float>();
  KVFOLD_RETURN_IF_ERROR(Embedding(s, w_.embed.data(), w_.embed.dtype(), ids, n, h, x));
  if (options_.tp == nullptr) return absl::OkStatus();
  return options_.tp->AllReduce(TensorView{x, DType::kF32, s.device, {n * h}},
                                ReduceOp::kSum);
}

absl::Status LlamaModel::Logits(const Stream& s, int64_t rows, ForwardScratch& sc,
                                float* logits) const {
  const ModelConfig& c = config_;
  const Tensor& head = w_.lm_head.empty() ? w_.embed : w_.lm_head;
  const float* xn = sc.xn.as<float>();
  if (options_.tp == nullptr) {
    if (s.device.kind == Device::Kind::kCpu) {
      return Linear(s, xn, rows, head, Tensor(), logits);
    }
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.logits, {rows, c.vocab_size}, s.device));
    KVFOLD_RETURN_IF_ERROR(Linear(s, xn, rows, head, Tensor(), sc.logits.as<float>()));
    return CopyToHost(s, logits, sc.logits.data(), rows * c.vocab_size * sizeof(float));
  }
  // Vocabulary-parallel head: each rank computes its rows' logits (padded to
  // vocab_pad columns), the group all-gathers them, and every rank unpacks
  // the same full [rows, vocab] so all sample the same token.
  const TpSlice& t = slice_;
  const int64_t pad = t.vocab_pad, h = c.hidden_size;
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.logits, {rows, pad}, s.device));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.gathered, {t.size, rows, pad}, s.device));
  if (t.vocab_rows > 0) {
    KVFOLD_RETURN_IF_ERROR(MatMulNT(s, xn, h, head.data(), head.dtype(), h,
                                    sc.logits.as<float>(), pad, rows, t.vocab_rows, h,
                                    /*accumulate=*/false));
  }
  const int64_t block = rows * pad;
  KVFOLD_RETURN_IF_ERROR(options_.tp->AllGather(
      TensorView{sc.logits.data(), DType::kF32, s.device, {block}},
      TensorView{sc.gathered.data(), DType::kF32, s.device, {t.size * block}}));
  const float* all = sc.gathered.as<float>();
  if (s.device.kind != Device::Kind::kCpu) {
    sc.gathered_host.resize(t.size * block);
    KVFOLD_RETURN_IF_ERROR(CopyToHost(s, sc.gathered_host.data(), all,
                                      t.size * block * sizeof(float)));
    all = sc.gathered_host.data();
  }
  for (int r = 0; r < t.size; ++r) {
    const int64_t begin = std::min<int64_t>(c.vocab_size, r * pad);
    const int64_t count = std::min<int64_t>(c.vocab_size, begin + pad) - begin;
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(logits + i * c.vocab_size + begin, all + (r * rows + i) * pad,
                  count * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(const Stream& s,
                                 absl::Span<const int32_t> tokens,
                                 absl::Span<const int32_t> positions,
                                 LogitsFor which, KvCache& cache,
                                 ForwardScratch& sc, float* logits) const {
  const CacheRows run{&cache, 0, static_cast<int64_t>(tokens.size())};
  return Run(s, tokens, positions, {&run, 1}, which, sc, logits);
}

absl::Status LlamaModel::ForwardDecodeBatch(const Stream& s,
                                            absl::Span<const int32_t> tokens,
                                            absl::Span<const int32_t> positions,
                                            absl::Span<KvCache* const> caches,
                                            ForwardScratch& sc, float* logits) const {
  if (caches.size() != tokens.size()) {
    return absl::InvalidArgumentError("forward: tokens and caches differ in number");
  }
  std::vector<CacheRows> runs(caches.size());
  for (size_t b = 0; b < caches.size(); ++b) {
    if (caches[b] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("forward: cache ", b, " is null"));
    }
    runs[b] = {caches[b], int64_t(b), 1};
  }
  // Two rows in one cache would each attend without the other's key.
  std::vector<KvCache*> sorted(caches.begin(), caches.end());
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InvalidArgumentError("forward: a cache appears twice in one batch");
  }
  return Run(s, tokens, positions, runs, LogitsFor::kLast, sc, logits);
}

absl::Status LlamaModel::Run(const Stream& s, absl::Span<const int32_t> tokens,
                             absl::Span<const int32_t> positions,
                             absl::Span<const CacheRows> runs, LogitsFor which,
                             ForwardScratch& sc, float* logits) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("forward: no tokens");
  if (positions.size() != tokens.size()) {
    return absl::InvalidArgumentError("forward: tokens and positions differ in length");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", tokens[i], " at index ", i,
          " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (!(s.device == options_.device)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward: the model is on ", options_.device.ToString(),
        ", the stream on ", s.device.ToString()));
  }
  const int64_t h = c.hidden_size, inter = slice_.inter;
  const int64_t q_dim = slice_.q_heads * c.head_dim, kv_dim = slice_.kv_heads * c.head_dim;
  if (sc.rows < n) {
    const Device d = s.device;
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.x, {n, h}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.xn, {n, h}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.q, {n, q_dim}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.k, {n, kv_dim}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.v, {n, kv_dim}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.attn, {n, q_dim}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.gate, {n, inter}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.up, {n, inter}, d));
    if (options_.tp != nullptr) KVFOLD_RETURN_IF_ERROR(Ensure(sc.partial, {n, h}, d));
    if (options_.sp != nullptr) KVFOLD_RETURN_IF_ERROR(Ensure(sc.lse, {n * slice_.q_heads}, d));
    sc.rows = n;
  }
  float* x = sc.x.as<float>();
  float* xn = sc.xn.as<float>();
  KVFOLD_RETURN_IF_ERROR(EmbedTokens(s, tokens, sc));
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LlamaLayerWeights& l = w_.layers[layer];
    KVFOLD_RETURN_IF_ERROR(
        RmsNorm(s, x, l.attn_norm.as<float>(), c.rms_norm_eps, xn, n, h));
    KVFOLD_RETURN_IF_ERROR(Attention(s, layer, positions.data(), n, runs, sc));
    KVFOLD_RETURN_IF_ERROR(Mlp(s, layer, x, n, sc));
  }
  if (sp_size() > 1 && sp_rank() != sp_size() - 1) {
    for (const CacheRows& run : runs) run.cache->SkipPositions(run.n);
  }
  if (which == LogitsFor::kNone) return absl::OkStatus();
  // Only the rows whose logits are wanted go through the final norm and head.
  const int64_t first = (which == LogitsFor::kLast) ? n - int64_t(runs.size()) : 0;
  const int64_t rows = n - first;
  KVFOLD_RETURN_IF_ERROR(RmsNorm(s, x + first * h, w_.final_norm.as<float>(),
                                 c.rms_norm_eps, xn, rows, h));
  return Logits(s, rows, sc, logits);
}

absl::StatusOr<std::shared_ptr<const FoldedOutput>> LlamaModel::Folded(
    const std::shared_ptr<const FeatureLayout>& layout) const {
  std::lock_guard<std::mutex> lock(fold_mu_);
  for (auto it = folds_.begin(); it != folds_.end();) {
    const std::shared_ptr<const FeatureLayout> held = it->first.lock();
    if (held == nullptr) {  // its caches are gone
      it = folds_.erase(it);
    } else if (held == layout) {
      return it->second;
    } else {
      ++it;
    }
  }
  const ModelConfig& c = config_;
  const int64_t d = c.head_dim, hidden = c.hidden_size, q_heads = slice_.q_heads;
  const int64_t group = q_heads / slice_.kv_heads;
  if (options_.device.kind != Device::Kind::kCpu || layout->kv_heads() != slice_.kv_heads ||
      layout->head_dim() != d || layout->num_layers() != c.num_layers) {
    return absl::InternalError("MatryoshkaKV: the layout does not fit this model's slice");
  }
  auto f = std::make_shared<FoldedOutput>();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Tensor& wo = w_.layers[l].wo;  // [hidden, q_heads * d]
    std::vector<int64_t> offsets(q_heads);
    int64_t width = 0;
    for (int64_t h = 0; h < q_heads; ++h) {
      offsets[h] = width;
      width += layout->head(l, h / group).value_dim;
    }
    Tensor folded({hidden, width}, DType::kF32), bias({hidden}, DType::kF32);
    if (!w_.layers[l].bo.empty()) {
      std::copy_n(w_.layers[l].bo.as<float>(), hidden, bias.as<float>());
    }
    for (int64_t h = 0; h < q_heads; ++h) {
      const ProjectedHead& p = layout->head(l, h / group);
      for (int64_t o = 0; o < hidden; ++o) {
        const float* row = wo.as<float>() + o * q_heads * d + h * d;
        float* out = folded.as<float>() + o * width + offsets[h];
        for (int64_t j = 0; j < p.value_dim; ++j) {  // W_o,h . U_v[:, j]
          double sum = 0;
          for (int64_t t = 0; t < d; ++t) sum += double(row[t]) * p.value_rows[j * d + t];
          out[j] = static_cast<float>(sum);
        }
        double b = 0;  // W_o,h . mu_perp_v
        for (int64_t t = 0; t < d; ++t) b += double(row[t]) * p.value_offset[t];
        bias.as<float>()[o] += static_cast<float>(b);
      }
    }
    f->wo.push_back(std::move(folded));
    f->bias.push_back(std::move(bias));
    f->offsets.push_back(std::move(offsets));
    f->width.push_back(width);
  }
  folds_.emplace_back(layout, f);
  return std::shared_ptr<const FoldedOutput>(std::move(f));
}

}  // namespace kvfold
