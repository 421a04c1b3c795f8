// Sequence parallelism in the forward pass (ALGORITHMS.md section 5): the
// block prefill of one SP rank (Star Attention phase 1 with APB's passing
// blocks, which here are slots of each rank's compressed cache) and the
// merge of phase 2's attention over the SP group.
//
// The SP group's collectives go through host memory (MPI on the CPU
// backend); on a device the buffers are staged through the host.
#include <algorithm>
#include <cmath>
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

absl::Status LlamaModel::PrefillBlock(const Stream& s, const BlockPrefill& p, KvCache& cache,
                                      ForwardScratch& sc) const {
  const ModelConfig& c = config_;
  const int64_t na = int64_t(p.anchor.size()), nb = int64_t(p.block.size()), n = na + nb;
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
  std::vector<int32_t> positions(n);
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
    positions[i] = int32_t(i < na ? i : p.block_begin + (i - na));
  }
  // Passing blocks carry keys rotated at their absolute positions.
  std::vector<int32_t> rope(nb);
  cache.RopePositions(0, positions.data() + na, nb, rope.data());
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

  // The anchor's keys and values, per layer, while the prefill runs.
  std::unique_ptr<FullKvCache> anchor;
  if (na > 0) anchor = std::make_unique<FullKvCache>(cache.shape());
  KVFOLD_RETURN_IF_ERROR(EmbedTokens(s, tokens, sc));
  for (int layer = 0; layer < c.num_layers; ++layer) {
    KVFOLD_RETURN_IF_ERROR(
        BlockLocalAttention(s, layer, p, positions.data(), cache, anchor.get(), sc));
    if (sp_size() > 1) KVFOLD_RETURN_IF_ERROR(BlockPassingAttention(s, layer, p, cache, sc));
    const LlamaLayerWeights& l = w_.layers[layer];
    for (int64_t r0 = 0; r0 < n; r0 += m) {
      const int64_t rows = std::min(m, n - r0);
      float* x = sc.x.as<float>() + r0 * h;
      KVFOLD_RETURN_IF_ERROR(AddRowParallel(s, sc.block_attn.as<float>() + r0 * q_dim, rows,
                                            l.wo, l.bo, x, sc));
      KVFOLD_RETURN_IF_ERROR(Mlp(s, layer, x, rows, sc));
    }
    if (p.on_layer) p.on_layer(layer + 1);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::BlockLocalAttention(const Stream& s, int layer, const BlockPrefill& p,
                                             const int32_t* positions, KvCache& cache,
                                             KvCache* anchor, ForwardScratch& sc) const {
  const ModelConfig& c = config_;
  const LlamaLayerWeights& l = w_.layers[layer];
  const int64_t na = int64_t(p.anchor.size()), n = na + int64_t(p.block.size());
  const int64_t h = c.hidden_size, heads = slice_.q_heads;
  const int64_t q_dim = heads * c.head_dim;
  // The anchor's rows, then the block's, in chunks that never straddle them.
  for (int64_t r0 = 0; r0 < n;) {
    const bool in_block = r0 >= na;
    const int64_t rows = std::min(p.chunk, (in_block ? n : na) - r0);
    float* q = sc.block_q.as<float>() + r0 * q_dim;
    KVFOLD_RETURN_IF_ERROR(RmsNorm(s, sc.x.as<float>() + r0 * h, l.attn_norm.as<float>(),
                                   c.rms_norm_eps, sc.xn.as<float>(), rows, h));
    KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wq, l.bq, q));
    KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wk, l.bk, sc.k.as<float>()));
    KVFOLD_RETURN_IF_ERROR(Linear(s, sc.xn.as<float>(), rows, l.wv, l.bv, sc.v.as<float>()));
    KVFOLD_RETURN_IF_ERROR(Rotate(s, positions + r0, rows, q, sc.k.as<float>(), sc));
    KvCache& target = in_block ? cache : *anchor;
    KVFOLD_RETURN_IF_ERROR(
        target.Append(layer, sc.k.as<float>(), sc.v.as<float>(), positions + r0, rows));
    const LayerView view = target.View(layer);
    AttentionArgs a = HeadArgs();
    a.q = q;
    a.k = view.keys;
    a.v = view.values;
    a.out = sc.block_attn.as<float>() + r0 * q_dim;
    a.num_queries = rows;
    a.num_keys = view.length;
    a.kv_stride = view.stride;
    a.causal_offset = view.length - rows;
    const int64_t summed = in_block ? cache.ColumnSumQueries(rows) : 0;
    if (in_block) a.lse = sc.block_lse.as<float>() + r0 * heads;
    if (summed > 0) {
      KVFOLD_RETURN_IF_ERROR(Ensure(sc.col_sums, {slice_.kv_heads * view.length}, s.device));
      a.col_sums = sc.col_sums.as<float>();
      a.col_sums_from_query = rows - std::min(summed, rows);
    }
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
    if (a.col_sums != nullptr && slice_.kv_replication > 1) {
      KVFOLD_RETURN_IF_ERROR(ShareColumnSums(s, view.length, sc));
    }
    if (in_block) {
      // The policy scores the block's slots by the block's own attention.
      KVFOLD_RETURN_IF_ERROR(cache.AfterAttention(layer, {a.col_sums, nullptr, rows}));
      if (anchor != nullptr) {  // block queries see the whole anchor
        const LayerView av = anchor->View(layer);
        AttentionArgs b = HeadArgs();
        b.q = q;
        b.k = av.keys;
        b.v = av.values;
        b.out = sc.part_out.as<float>();
        b.lse = sc.part_lse.as<float>();
        b.num_queries = rows;
        b.num_keys = av.length;
        b.kv_stride = av.stride;
        b.causal_offset = av.length - 1;
        KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, b));
        KVFOLD_RETURN_IF_ERROR(MergeInto(s, a.out, a.lse, b.out, b.lse, rows, heads,
                                         c.head_dim, &sc.sp_host));
      }
    }
    r0 += rows;
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::BlockPassingAttention(const Stream& s, int layer,
                                               const BlockPrefill& p, const KvCache& cache,
                                               ForwardScratch& sc) const {
  Communicator& group = *options_.sp;
  const int ranks = group.size(), rank = group.rank();
  const int64_t kv_heads = slice_.kv_heads, dim = config_.head_dim, heads = slice_.q_heads;
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
  // Block queries (never the anchor's) attend over every passing slot.
  const int64_t na = int64_t(p.anchor.size()), n = na + int64_t(p.block.size());
  const int64_t q_dim = heads * dim;
  for (int64_t r0 = na; r0 < n; r0 += p.chunk) {
    const int64_t rows = std::min(p.chunk, n - r0);
    AttentionArgs a = HeadArgs();
    a.q = sc.block_q.as<float>() + r0 * q_dim;
    a.k = sc.passing_k.as<float>();
    a.v = sc.passing_v.as<float>();
    a.out = sc.part_out.as<float>();
    a.lse = sc.part_lse.as<float>();
    a.num_queries = rows;
    a.num_keys = used;
    a.kv_stride = capacity;
    a.causal_offset = used - 1;
    KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
    KVFOLD_RETURN_IF_ERROR(MergeInto(s, sc.block_attn.as<float>() + r0 * q_dim,
                                     sc.block_lse.as<float>() + r0 * heads, a.out, a.lse,
                                     rows, heads, dim, &sc.sp_host));
  }
  return absl::OkStatus();
}

}  // namespace kvfold
