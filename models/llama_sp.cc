// Sequence parallelism in the forward pass (ALGORITHMS.md section 5): the
// block prefill of one SP rank (Star Attention phase 1 with APB's passing
// blocks, which here are slots of each rank's compressed cache) and the
// merge of phase 2's attention over the SP group.
//
// The SP group's collectives go through host memory (MPI on the CPU
// backend); on a device the buffers are staged through the host.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/llama.h"
#include "models/llama_internal.h"
#include "models/sp_attention.h"

namespace kvfold {

using llama_internal::Ensure;
using llama_internal::Linear;

absl::Status LlamaModel::MergeOverGroup(const Stream& s, int64_t n,
                                        absl::Span<const CacheRows> runs,
                                        ForwardScratch& sc) const {
  const int64_t heads = slice_.q_heads, d = config_.head_dim, values = n * heads * d;
  // Each run's log-sum-exp is [heads, run.n]; the merge wants [heads, n].
  sc.sp_host.resize(n * heads);
  KVFOLD_RETURN_IF_ERROR(
      CopyToHost(s, sc.sp_host.data(), sc.lse.data(), n * heads * sizeof(float)));
  sc.sp_lse.resize(n * heads);
  for (const CacheRows& run : runs) {
    const float* part = sc.sp_host.data() + run.begin * heads;
    for (int64_t h = 0; h < heads; ++h) {
      std::copy_n(part + h * run.n, run.n, sc.sp_lse.data() + h * n + run.begin);
    }
  }
  float* out = sc.attn.as<float>();
  if (s.device.kind != Device::Kind::kCpu) {
    sc.sp_out.resize(values);
    KVFOLD_RETURN_IF_ERROR(CopyToHost(s, sc.sp_out.data(), out, values * sizeof(float)));
    out = sc.sp_out.data();
  }
  KVFOLD_RETURN_IF_ERROR(MergeAcrossGroup(*options_.sp, out, sc.sp_lse.data(), n, heads, d));
  sc.sp_bytes += (values + n * heads) * int64_t(sizeof(float));
  if (out == sc.attn.as<float>()) return absl::OkStatus();
  return CopyToDevice(s, sc.attn.data(), out, values * sizeof(float));
}

namespace {

// Rows [begin, end) of a block prefill cut into pieces of at most `chunk`
// rows: {first row, rows}, none straddling `split` (default: end). Pieces
// never straddle the anchor, the block and the question (a piece's
// log-sum-exp is [heads, rows]).
std::vector<std::pair<int64_t, int64_t>> Pieces(int64_t begin, int64_t end, int64_t chunk,
                                                int64_t split = -1) {
  if (split < 0) split = end;
  std::vector<std::pair<int64_t, int64_t>> pieces;
  for (const auto& [from, to] : {std::pair{begin, split}, std::pair{split, end}}) {
    for (int64_t r0 = from; r0 < to; r0 += chunk) {
      pieces.emplace_back(r0, std::min(chunk, to - r0));
    }
  }
  return pieces;
}

// `a` (HeadArgs) for rows [r0, r0 + rows) of a block prefill: their
// queries, attention output and log-sum-exp in the scratch.
AttentionArgs BlockRows(AttentionArgs a, ForwardScratch& sc, int64_t r0, int64_t rows) {
  const int64_t q_dim = a.q_heads * a.head_dim;
  a.q = sc.block_q.as<float>() + r0 * q_dim;
  a.out = sc.block_attn.as<float>() + r0 * q_dim;
  a.lse = sc.block_lse.as<float>() + r0 * a.q_heads;
  a.num_queries = rows;
  return a;
}

// `a` over keys and values [kv_heads, stride, head_dim] (the first `keys`
// of each head), query i seeing keys [0, causal_offset + i].
AttentionArgs OverKeys(AttentionArgs a, const float* k, const float* v, int64_t keys,
                       int64_t stride, int64_t causal_offset) {
  a.k = k;
  a.v = v;
  a.num_keys = keys;
  a.kv_stride = stride;
  a.causal_offset = causal_offset;
  return a;
}

AttentionArgs OverView(const AttentionArgs& a, const LayerView& view, int64_t causal_offset) {
  return OverKeys(a, view.keys, view.values, view.length, view.stride, causal_offset);
}

// The attention `a` describes, merged by log-sum-exp into `out` and `lse`
// (a's own outputs are replaced by working memory; no column sums: the
// policy's statistics come from the cache alone).
absl::Status AttendAndMerge(const Stream& s, AttentionArgs a, float* out, float* lse,
                            ForwardScratch& sc) {
  a.out = sc.part_out.as<float>();
  a.lse = sc.part_lse.as<float>();
  a.col_sums = nullptr;
  a.col_sums_from_query = 0;
  KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
  return MergeInto(s, out, lse, a.out, a.lse, a.num_queries, a.q_heads, a.head_dim,
                   &sc.sp_host);
}

}  // namespace

absl::Status LlamaModel::PrefillBlock(const Stream& s, const BlockPrefill& p, KvCache& cache,
                                      ForwardScratch& sc) const {
  const ModelConfig& c = config_;
  const int64_t na = int64_t(p.anchor.size()), nb = int64_t(p.block.size());
  const int64_t nq = int64_t(p.question.size()), n = na + nb + nq;
  if (nb == 0) return absl::InvalidArgumentError("block prefill: the block is empty");
  if (p.chunk < 1 || p.passing_slots < 0) {
    return absl::InvalidArgumentError(absl::StrCat("block prefill: chunk ", p.chunk,
                                                   " and passing slots ", p.passing_slots,
                                                   " must be >= 1 and >= 0"));
  }
  if (na > p.block_begin) {
    return absl::InvalidArgumentError(absl::StrCat("block prefill: an anchor of ", na,
                                                   " tokens overlaps the block at ",
                                                   p.block_begin));
  }
  if (nq > 0 && p.question_begin < p.block_begin + nb) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block prefill: the question at position ", p.question_begin,
        " does not follow the block, which ends at ", p.block_begin + nb));
  }
  if (cache.tokens_seen() != 0) {
    return absl::InvalidArgumentError("block prefill: the cache must be empty");
  }
  if (cache.shape().features != nullptr) {
    return absl::UnimplementedError(
        "sequence parallelism with MatryoshkaKV projections is not supported; use --sp=1");
  }
  if (!(s.device == options_.device)) {
    return absl::InvalidArgumentError("block prefill: the stream is not on the model's device");
  }
  std::vector<int32_t> tokens(p.anchor.begin(), p.anchor.end());
  tokens.insert(tokens.end(), p.block.begin(), p.block.end());
  tokens.insert(tokens.end(), p.question.begin(), p.question.end());
  std::vector<int32_t> positions(n);
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
    positions[i] = int32_t(i < na        ? i
                           : i < na + nb ? p.block_begin + (i - na)
                                         : p.question_begin + (i - na - nb));
  }
  // Passing blocks carry keys rotated at their absolute positions.
  std::vector<int32_t> rope(nb + nq);
  cache.RopePositions(0, positions.data() + na, nb + nq, rope.data());
  if (!std::equal(rope.begin(), rope.end(), positions.begin() + na)) {
    return absl::UnimplementedError(
        "sequence parallelism needs absolute positions: a policy that re-indexes them "
        "(StreamingLLM reindex_positions) cannot be used with --sp > 1");
  }
  const Device d = s.device;
  const int64_t h = c.hidden_size, m = std::min(p.chunk, n);
  const int64_t q_dim = slice_.q_heads * c.head_dim, kv_dim = slice_.kv_heads * c.head_dim;
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.x, {n * h}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.xn, {m * h}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.k, {m * kv_dim}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.v, {m * kv_dim}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.gate, {m * slice_.inter}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.up, {m * slice_.inter}, d));
  if (options_.tp != nullptr) KVFOLD_RETURN_IF_ERROR(Ensure(sc.partial, {m * h}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.block_q, {n * q_dim}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.block_attn, {n * q_dim}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.block_lse, {n * slice_.q_heads}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.part_out, {m * q_dim}, d));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.part_lse, {m * slice_.q_heads}, d));

  // The anchor's and the question's keys and values, per layer, while the
  // prefill runs.
  std::unique_ptr<FullKvCache> anchor, question;
  if (na > 0) anchor = std::make_unique<FullKvCache>(cache.shape());
  if (nq > 0) question = std::make_unique<FullKvCache>(cache.shape());
  KVFOLD_RETURN_IF_ERROR(EmbedTokens(s, tokens, sc));
  for (int layer = 0; layer < c.num_layers; ++layer) {
    KVFOLD_RETURN_IF_ERROR(BlockLocalAttention(s, layer, p, positions.data(), cache,
                                               anchor.get(), question.get(), sc));
    if (sp_size() > 1) KVFOLD_RETURN_IF_ERROR(BlockPassingAttention(s, layer, p, cache, sc));
    const LlamaLayerWeights& l = w_.layers[layer];
    // The question's rows apart, so that the document's rows go through the
    // same matrix products with or without them (the same bits).
    for (const auto& [r0, rows] : Pieces(0, n, m, /*split=*/na + nb)) {
      float* x = sc.x.as<float>() + r0 * h;
      KVFOLD_RETURN_IF_ERROR(AddRowParallel(s, sc.block_attn.as<float>() + r0 * q_dim, rows,
                                            l.wo, l.bo, x, sc));
      KVFOLD_RETURN_IF_ERROR(Mlp(s, layer, x, rows, sc));
    }
    if (p.on_layer) p.on_layer(layer + 1);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ProjectBlockRows(const Stream& s, int layer, int64_t r0, int64_t rows,
                                          const int32_t* positions, ForwardScratch& sc) const {
  const ModelConfig& c = config_;
  const LlamaLayerWeights& l = w_.layers[layer];
  float* q = sc.block_q.as<float>() + r0 * slice_.q_heads * c.head_dim;
  KVFOLD_RETURN_IF_ERROR(RmsNorm(s, sc.x.as<float>() + r0 * c.hidden_size,
                                 l.attn_norm.as<float>(), c.rms_norm_eps, sc.xn.as<float>(),
                                 rows, c.hidden_size));
  KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wq, l.bq, q));
  KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wk, l.bk, sc.k.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wv, l.bv, sc.v.as<float>()));
  return Rotate(s, positions + r0, rows, q, sc.k.as<float>(), sc);
}

absl::Status LlamaModel::BlockLocalAttention(const Stream& s, int layer, const BlockPrefill& p,
                                             const int32_t* positions, KvCache& cache,
                                             KvCache* anchor, KvCache* question,
                                             ForwardScratch& sc) const {
  const int64_t na = int64_t(p.anchor.size()), end = na + int64_t(p.block.size());
  const int64_t nq = int64_t(p.question.size());
  // The anchor's rows: causal over the anchor alone.
  for (const auto& [r0, rows] : Pieces(0, na, p.chunk)) {
    KVFOLD_RETURN_IF_ERROR(ProjectBlockRows(s, layer, r0, rows, positions, sc));
    KVFOLD_RETURN_IF_ERROR(
        anchor->Append(layer, sc.k.as<float>(), sc.v.as<float>(), positions + r0, rows));
    const LayerView view = anchor->View(layer);
    AttentionArgs a = OverView(BlockRows(HeadArgs(), sc, r0, rows), view, view.length - rows);
    a.lse = nullptr;  // the anchor's rows merge nothing
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
  }
  // The block's rows, chunk by chunk: causal over the rank's cache, which
  // the policy compresses after each chunk, and over the whole anchor.
  for (const auto& [r0, rows] : Pieces(na, end, p.chunk)) {
    const bool observed = question != nullptr && r0 + rows == end;
    KVFOLD_RETURN_IF_ERROR(ProjectBlockRows(s, layer, r0, rows, positions, sc));
    KVFOLD_RETURN_IF_ERROR(
        cache.Append(layer, sc.k.as<float>(), sc.v.as<float>(), positions + r0, rows));
    const LayerView view = cache.View(layer);
    AttentionArgs a = OverView(BlockRows(HeadArgs(), sc, r0, rows), view, view.length - rows);
    // The policy scores the block's slots by the attention of the chunk's
    // last queries over the cache; when the question observes the last
    // chunk, its rows are the last of them.
    const int64_t queries = observed ? rows + nq : rows;
    const int64_t voters = cache.ColumnSumQueries(queries);
    const int64_t question_voters = observed ? std::min(voters, nq) : 0;
    if (voters > 0) {
      KVFOLD_RETURN_IF_ERROR(Ensure(sc.col_sums, {slice_.kv_heads * view.length}, s.device));
      a.col_sums = sc.col_sums.as<float>();
      a.col_sums_from_query = rows - std::min(voters - question_voters, rows);
    }
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
    if (observed) {
      KVFOLD_RETURN_IF_ERROR(ObserveLastChunk(s, layer, p, positions, view,
                                              nq - question_voters, anchor, *question, sc));
    }
    if (a.col_sums != nullptr && slice_.kv_replication > 1) {
      KVFOLD_RETURN_IF_ERROR(ShareColumnSums(s, view.length, sc));
    }
    KVFOLD_RETURN_IF_ERROR(cache.AfterAttention(layer, {a.col_sums, nullptr, queries}));
    if (anchor != nullptr) {  // block queries see the whole anchor
      const LayerView av = anchor->View(layer);
      KVFOLD_RETURN_IF_ERROR(AttendAndMerge(s, OverView(a, av, av.length - 1), a.out, a.lse, sc));
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ObserveLastChunk(const Stream& s, int layer, const BlockPrefill& p,
                                          const int32_t* positions, const LayerView& view,
                                          int64_t first_voter, KvCache* anchor,
                                          KvCache& question, ForwardScratch& sc) const {
  const int64_t first = int64_t(p.anchor.size() + p.block.size());
  const int64_t nq = int64_t(p.question.size()), sums = slice_.kv_heads * view.length;
  for (const auto& [r0, rows] : Pieces(first, first + nq, p.chunk)) {
    KVFOLD_RETURN_IF_ERROR(ProjectBlockRows(s, layer, r0, rows, positions, sc));
    KVFOLD_RETURN_IF_ERROR(
        question.Append(layer, sc.k.as<float>(), sc.v.as<float>(), positions + r0, rows));
    // Over the cache: the question follows the whole block, so it sees
    // every slot.
    AttentionArgs a = OverView(BlockRows(HeadArgs(), sc, r0, rows), view, view.length - 1);
    const int64_t from = std::max<int64_t>(0, first_voter - (r0 - first));
    if (from < rows) {
      KVFOLD_RETURN_IF_ERROR(Ensure(sc.observer_col_sums, {sums}, s.device));
      a.col_sums = sc.observer_col_sums.as<float>();
      a.col_sums_from_query = from;
    }
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
    if (a.col_sums != nullptr) {
      KVFOLD_RETURN_IF_ERROR(AddInPlace(s, sc.col_sums.as<float>(), a.col_sums, sums));
    }
    // Over the question itself, causally, and over the whole anchor.
    const LayerView qv = question.View(layer);
    KVFOLD_RETURN_IF_ERROR(AttendAndMerge(s, OverView(a, qv, qv.length - rows), a.out, a.lse, sc));
    if (anchor != nullptr) {
      const LayerView av = anchor->View(layer);
      KVFOLD_RETURN_IF_ERROR(AttendAndMerge(s, OverView(a, av, av.length - 1), a.out, a.lse, sc));
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::BlockPassingAttention(const Stream& s, int layer,
                                               const BlockPrefill& p, const KvCache& cache,
                                               ForwardScratch& sc) const {
  Communicator& group = *options_.sp;
  const int ranks = group.size(), rank = group.rank();
  const int64_t kv_heads = slice_.kv_heads, dim = config_.head_dim;
  const LayerView view = cache.View(layer);
  int64_t slots = p.passing_slots;
  if (slots == 0) {  // whole caches: blocks as long as the longest one
    float longest = float(view.length);
    KVFOLD_RETURN_IF_ERROR(
        group.AllReduce(TensorView{&longest, DType::kF32, Device::Cpu(), {1}}, ReduceOp::kMax));
    slots = int64_t(longest);
    sc.sp_bytes += sizeof(float);
  }
  const int64_t floats = PassingBlockFloats(kv_heads, slots, dim);
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.passing, {floats}, s.device));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.gathered_passing, {ranks * floats}, s.device));
  KVFOLD_RETURN_IF_ERROR(
      PackPassingBlock(s, view, kv_heads, dim, slots, sc.passing.as<float>()));
  if (s.device.kind == Device::Kind::kCpu) {
    KVFOLD_RETURN_IF_ERROR(group.AllGather(
        TensorView{sc.passing.data(), DType::kF32, Device::Cpu(), {floats}},
        TensorView{sc.gathered_passing.data(), DType::kF32, Device::Cpu(), {ranks * floats}}));
  } else {
    std::vector<float> mine(floats), all(ranks * floats);
    KVFOLD_RETURN_IF_ERROR(CopyToHost(s, mine.data(), sc.passing.data(), floats * 4));
    KVFOLD_RETURN_IF_ERROR(
        group.AllGather(TensorView{mine.data(), DType::kF32, Device::Cpu(), {floats}},
                        TensorView{all.data(), DType::kF32, Device::Cpu(), {ranks * floats}}));
    KVFOLD_RETURN_IF_ERROR(
        CopyToDevice(s, sc.gathered_passing.data(), all.data(), all.size() * 4));
  }
  sc.sp_bytes += floats * int64_t(sizeof(float));
  if (rank == 0) return absl::OkStatus();  // the first block sees no earlier one
  const int64_t capacity = rank * slots;
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.passing_k, {kv_heads * capacity * dim}, s.device));
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.passing_v, {kv_heads * capacity * dim}, s.device));
  KVFOLD_ASSIGN_OR_RETURN(
      const int64_t used,
      UnpackPassingBlocks(s, sc.gathered_passing.as<float>(), rank, kv_heads, dim, slots,
                          capacity, sc.passing_k.as<float>(), sc.passing_v.as<float>()));
  if (used == 0) return absl::OkStatus();
  // Block and question queries (never the anchor's) attend over every
  // passing slot.
  const int64_t first = int64_t(p.anchor.size()), end = first + int64_t(p.block.size());
  for (const auto& [r0, rows] :
       Pieces(first, end + int64_t(p.question.size()), p.chunk, /*split=*/end)) {
    const AttentionArgs a = BlockRows(HeadArgs(), sc, r0, rows);
    KVFOLD_RETURN_IF_ERROR(AttendAndMerge(
        s, OverKeys(a, sc.passing_k.as<float>(), sc.passing_v.as<float>(), used, capacity,
                    used - 1),
        a.out, a.lse, sc));
  }
  return absl::OkStatus();
}

}  // namespace kvfold
