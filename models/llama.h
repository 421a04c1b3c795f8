// The Llama-family decoder (Llama 2/3, Mistral, Qwen2): hyperparameters from
// ModelConfig, named weights, and the forward pass over a KvCache.
//
// The model is immutable after Load() and thread-compatible; per-request
// state (cache, scratch) is passed in.
#ifndef KVFOLD_MODELS_LLAMA_H_
#define KVFOLD_MODELS_LLAMA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/kv_cache.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"
#include "models/config.h"
#include "parallel/communicator.h"

namespace kvfold {

struct LlamaLayerWeights {
  Tensor attn_norm;       // [hidden]
  Tensor wq, wk, wv, wo;  // [q_dim, hidden] [kv_dim, hidden] x2 [hidden, q_dim]
  Tensor bq, bk, bv, bo;  // [q_dim] [kv_dim] [kv_dim] [hidden]; empty if none
  Tensor mlp_norm;        // [hidden]
  Tensor w_gate, w_up;    // [intermediate, hidden]
  Tensor w_down;          // [hidden, intermediate]
};

struct LlamaWeights {
  Tensor embed;  // [vocab, hidden]
  std::vector<LlamaLayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; empty when tied to `embed`
};

enum class LogitsFor { kNone, kLast, kAll };

class WeightSource;

// What one of `size` tensor-parallel ranks holds (everything when size is
// 1): a contiguous run of query heads with their KV heads (one replicated KV
// head when the model has fewer KV heads than ranks), a run of MLP columns,
// and a run of vocabulary rows of the embedding and LM head (ceil(vocab /
// size) per rank, the last ones shorter).
struct TpSlice {
  int rank = 0, size = 1;
  int q_heads = 0, q_head_begin = 0;
  int kv_heads = 0, kv_head_begin = 0;
  int kv_replication = 1;  // ranks sharing each KV head
  int64_t inter = 0, inter_begin = 0;
  int64_t vocab_rows = 0, vocab_begin = 0, vocab_pad = 0;
};

absl::StatusOr<TpSlice> MakeTpSlice(const ModelConfig& config, int rank, int size);

// The collectives one Forward of `tokens` tokens (`logit_rows` rows of
// logits) issues on each of `tp` ranks: all-reduces of the embedding and of
// the two row-parallel outputs per layer ([tokens, hidden] f32 each) and one
// all-gather of the vocabulary-parallel logits. Replicated KV heads add a
// small all-gather of attention statistics per layer for score-based
// policies, not counted here. Bytes are this rank's payload.
struct TpTraffic {
  int64_t all_reduce_calls = 0, all_reduce_bytes = 0;
  int64_t all_gather_calls = 0, all_gather_bytes = 0;
};
absl::StatusOr<TpTraffic> PlanTpTraffic(const ModelConfig& config, int tp,
                                        int64_t tokens, int64_t logit_rows);

// Where the weights live and in which type. The CPU holds f32; a CUDA device
// holds the matrices (embedding, projections, head) as bf16, f16 or f32 and
// the norms and biases as f32.
struct LoadOptions {
  Device device = Device::Cpu();
  DType dtype = DType::kF32;
  // Tensor parallelism: the TP group (null = one rank holds everything).
  // Each rank loads and reads only its slice; Forward runs the collectives
  // on it, so it must outlive the model.
  Communicator* tp = nullptr;
  // Sequence parallelism: the SP group (the ranks holding the other blocks
  // of each document, at this rank's TP position; null = no SP). Forward
  // and ForwardDecodeBatch then run Star Attention's phase 2: every rank
  // attends over its own cache, the group merges the attention exactly, and
  // only the last SP rank keeps the new tokens (the others skip their
  // positions). PrefillBlock runs the block prefill. Must outlive the model.
  Communicator* sp = nullptr;
};

// Checks a device/dtype pair (the CLI calls it before loading).
absl::Status ValidateLoadOptions(const LoadOptions& options);

// Activations for one forward call, grown on demand and reused, on the
// model's device.
struct ForwardScratch {
  Tensor x, xn;        // [n, hidden]
  Tensor q, k, v;      // [n, q_dim], [n, kv_dim], [n, kv_dim]
  Tensor attn;         // [n, q_dim]
  Tensor gate, up;     // [n, intermediate]
  Tensor col_sums;     // [kv_heads, keys]
  Tensor partial;      // [n, hidden] row-parallel output before its all-reduce
  Tensor logits;       // [n, vocab] (on a device; copied out to the host)
                       // TP: [n, vocab_pad] this rank's slice
  Tensor gathered;     // TP: [tp, n, vocab_pad] every rank's logits slice, or
                       // [tp, keys] every rank's column sums
  std::vector<float> gathered_host;  // the same, on the host
  std::vector<int32_t> local_ids;    // TP: ids in this rank's vocab slice, else -1
  Tensor ids;          // [n] i32 token ids (on a device)
  Tensor rope_device;  // [n] i32 RoPE positions (on a device)
  std::vector<int32_t> rope_positions;  // [n]
  std::vector<int32_t> rope_uploaded;   // what rope_device holds
  int64_t rows = 0;
  // Sequence parallelism:
  Tensor lse;                    // [n * q_heads] each run's [q_heads, run.n]
  std::vector<float> sp_out;     // [n, q_dim] attention merged on the host
  std::vector<float> sp_lse;     // [q_heads, n] likewise
  std::vector<float> sp_host;    // working memory of merges on a device
  Tensor block_q, block_attn;    // PrefillBlock: [rows, q_dim] every row's
  Tensor block_lse;              // [rows * q_heads] per chunk [q_heads, chunk]
  Tensor part_out, part_lse;     // [chunk, q_dim], [q_heads * chunk]
  Tensor observer_col_sums;      // [kv_heads, keys] the question's votes
  Tensor passing, gathered_passing;  // one packed passing block, every rank's
  Tensor passing_k, passing_v;   // [kv_heads, slots, head_dim] earlier ranks'
  int64_t sp_bytes = 0;  // payload this rank has put into SP collectives (grows)
};

// One rank's share of a sequence-parallel document prefill (Star Attention
// phase 1 with APB's passing blocks, ALGORITHMS.md section 5).
struct BlockPrefill {
  // The document's first tokens, at positions 0.., prefixed to the block;
  // empty for the first rank or without an anchor.
  absl::Span<const int32_t> anchor;
  absl::Span<const int32_t> block;  // this rank's block
  int64_t block_begin = 0;          // the position of its first token
  int64_t chunk = 512;              // rows per step (the cache compresses after each)
  // Slots per KV head and layer each rank passes to the later ranks: the
  // most recent ones of its compressed cache, at most this many; 0 = its
  // whole cache.
  int64_t passing_slots = 0;
  // Question-aware compression: the question, at positions question_begin..
  // (its place after the whole document). Its rows run after the block's at
  // every layer and observe the block's last chunk: they attend over the
  // rank's cache with that chunk appended (and over the anchor, the passing
  // blocks and themselves, causally), and the policy's column sums count
  // them as the last queries of the chunk before it compresses. Their keys
  // and values never enter the cache. Empty: question-agnostic.
  absl::Span<const int32_t> question;
  int64_t question_begin = 0;
  // Called after each layer with the layers done (progress; may be empty).
  std::function<void(int)> on_layer;
};

// MatryoshkaKV, when every cache of a forward call has one projected
// layout: per layer, W_o with U_v folded in ([hidden, the local query
// heads' r_v summed], query head h's block from column offsets[l][h]) and a
// bias with W_o mu_perp_v (+ o_proj's own bias on the rank that holds it),
// so the projected attention outputs skip their reconstruction. Exact: o_h =
// o~_h U_v^T + mu_perp_v, and W_o is linear.
struct FoldedOutput {
  std::vector<Tensor> wo, bias;                // per layer
  std::vector<std::vector<int64_t>> offsets;   // [layer][local query head]
  std::vector<int64_t> width;                  // [layer]
};

struct ModelStats {
  int64_t parameters = 0;
  int64_t weight_bytes = 0;  // as held in memory (f32 on the CPU)
  uint64_t bytes_read = 0;   // checkpoint bytes touched while loading (this rank)
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of a checkpoint directory.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const std::string& dir, const LoadOptions& options = {});
  // Random weights of a given shape (benchmarks; no files needed).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Random(
      const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelStats& stats() const { return stats_; }
  Device device() const { return options_.device; }
  DType dtype() const { return options_.dtype; }
  const TpSlice& tp_slice() const { return slice_; }
  // The cache shape of this rank (its KV heads); the stream says where the
  // cache lives.
  CacheShape cache_shape(const Stream& stream) const {
    CacheShape shape{config_.num_layers, slice_.kv_heads, config_.head_dim, inv_freq_,
                     stream};
    shape.kv_head_begin = slice_.kv_head_begin;
    return shape;
  }

  // Runs `tokens` at absolute `positions` through the model on the stream
  // (which must be on the model's device), appending their keys/values to
  // `cache`. Writes logits [1 or n, vocab] to host memory `logits` as
  // `which` says (kNone: `logits` may be null). With tensor parallelism every
  // rank of the group calls it with the same tokens and gets the full logits.
  absl::Status Forward(const Stream& s, absl::Span<const int32_t> tokens,
                       absl::Span<const int32_t> positions, LogitsFor which,
                       KvCache& cache, ForwardScratch& scratch,
                       float* logits) const;

  // One decode step of B sequences together: tokens[b] at positions[b] goes
  // to caches[b] (B distinct caches), exactly as Forward of that one token
  // would, but the matrices run over all B rows at once (one GEMM per
  // weight instead of B GEMVs). Writes logits [B, vocab] to host memory.
  // Tensor parallelism as in Forward.
  absl::Status ForwardDecodeBatch(const Stream& s, absl::Span<const int32_t> tokens,
                                  absl::Span<const int32_t> positions,
                                  absl::Span<KvCache* const> caches,
                                  ForwardScratch& scratch, float* logits) const;

  // This rank's share of a document prefilled over the SP group (collective
  // over LoadOptions::sp; every rank calls it with its own block), layer
  // after layer: each layer runs over the anchor and the whole block, chunk
  // by chunk (the anchor's queries see the anchor, causally; the block's see
  // the anchor and, causally, the block as the cache keeps it), then the
  // ranks all-gather their passing blocks and each block query also attends
  // over those of the earlier ranks. The attention parts merge exactly by
  // log-sum-exp. `cache` (empty) ends holding the block only, as the policy
  // compressed it; the anchor and the passing blocks are dropped. With one
  // rank (no SP group) it equals Forward of the block in chunks.
  absl::Status PrefillBlock(const Stream& s, const BlockPrefill& prefill, KvCache& cache,
                            ForwardScratch& scratch) const;
  Communicator* sp_group() const { return options_.sp; }
  int sp_size() const { return options_.sp ? options_.sp->size() : 1; }
  int sp_rank() const { return options_.sp ? options_.sp->rank() : 0; }

 private:
  LlamaModel(ModelConfig config, LlamaWeights weights, LoadOptions options,
             TpSlice slice);
  // Loads this rank's slice of every weight from `src` (llama_weights.cc).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Build(
      ModelConfig config, WeightSource& src, const LoadOptions& options);
  // Copies what the forward pass reads besides the weights to the device.
  absl::Status PlaceTables();
  // Rows [begin, begin + n) of a forward call: one sequence's tokens and the
  // cache they go to.
  struct CacheRows {
    KvCache* cache = nullptr;
    int64_t begin = 0, n = 0;
  };
  // The forward pass of Forward and ForwardDecodeBatch: every row through
  // the matrices together, each run of rows through its own cache. kLast
  // gives the logits of each run's last row; those rows must be contiguous
  // (one run, or runs of one row each).
  absl::Status Run(const Stream& s, absl::Span<const int32_t> tokens,
                   absl::Span<const int32_t> positions,
                   absl::Span<const CacheRows> runs, LogitsFor which,
                   ForwardScratch& scratch, float* logits) const;
  absl::Status Attention(const Stream& s, int layer, const int32_t* positions,
                         int64_t n, absl::Span<const CacheRows> runs,
                         ForwardScratch& scratch) const;
  // Appends one run's keys/values to its cache and attends its queries over
  // that cache (sc.q, sc.k, sc.v rotated; writes its rows of sc.attn).
  // With `fold`, projected outputs go to sc.attn in its packed layout.
  absl::Status AttendRun(const Stream& s, int layer, const int32_t* positions,
                         const CacheRows& run, ForwardScratch& scratch,
                         const FoldedOutput* fold) const;
  // x[n, hidden] += in . w^T (+ bias): a row-parallel projection (o,
  // down), whose per-rank partial outputs are summed over the TP group.
  absl::Status AddRowParallel(const Stream& s, const float* in, int64_t n,
                              const Tensor& w, const Tensor& bias, float* x,
                              ForwardScratch& sc) const;
  // The MLP block of rows x[n, hidden] (sc.xn, gate, up hold n rows).
  absl::Status Mlp(const Stream& s, int layer, float* x, int64_t n, ForwardScratch& sc) const;
  // Rotates q [n, q_heads, head_dim] and k [n, kv_heads, head_dim] to the
  // RoPE positions `rope` (host).
  absl::Status Rotate(const Stream& s, const int32_t* rope, int64_t n, float* q, float* k,
                      ForwardScratch& sc) const;
  // The attention arguments every call shares (heads, width, scale).
  AttentionArgs HeadArgs() const;
  // Phase 2 of sequence parallelism: merges the attention of rows sc.attn
  // [n, q_dim] (each run's log-sum-exp in sc.lse) over the SP group.
  absl::Status MergeOverGroup(const Stream& s, int64_t n, absl::Span<const CacheRows> runs,
                              ForwardScratch& sc) const;
  // PrefillBlock's steps for one layer (llama_sp.cc).
  absl::Status BlockLocalAttention(const Stream& s, int layer, const BlockPrefill& p,
                                   const int32_t* positions, KvCache& cache,
                                   KvCache* anchor, KvCache* question,
                                   ForwardScratch& sc) const;
  // The question's rows of BlockLocalAttention, observing the last chunk
  // (`view`, before the policy compresses): their attention over the cache
  // (voting queries from `first_voter` of the question summed into
  // sc.observer_col_sums and added to sc.col_sums), over themselves and over
  // the anchor.
  absl::Status ObserveLastChunk(const Stream& s, int layer, const BlockPrefill& p,
                                const int32_t* positions, const LayerView& view,
                                int64_t first_voter, KvCache* anchor, KvCache& question,
                                ForwardScratch& sc) const;
  // Projects rows [r0, r0 + rows) of a block prefill (sc.x) to queries
  // (sc.block_q), keys and values (sc.k, sc.v), rotated at `positions`.
  absl::Status ProjectBlockRows(const Stream& s, int layer, int64_t r0, int64_t rows,
                                const int32_t* positions, ForwardScratch& sc) const;
  absl::Status BlockPassingAttention(const Stream& s, int layer, const BlockPrefill& p,
                                     const KvCache& cache, ForwardScratch& sc) const;
  // Replicated KV heads (kv_heads < TP ranks): sums sc.col_sums [1, length]
  // over the ranks sharing this rank's KV head.
  absl::Status ShareColumnSums(const Stream& s, int64_t length,
                               ForwardScratch& sc) const;
  absl::Status EmbedTokens(const Stream& s, absl::Span<const int32_t> tokens,
                           ForwardScratch& sc) const;
  absl::Status Logits(const Stream& s, int64_t rows, ForwardScratch& sc,
                      float* logits) const;

  // The folded output projection for `layout` (CPU, f32), made on first
  // use and kept while the layout lives.
  absl::StatusOr<std::shared_ptr<const FoldedOutput>> Folded(
      const std::shared_ptr<const FeatureLayout>& layout) const;

  ModelConfig config_;
  LlamaWeights w_;
  LoadOptions options_;
  TpSlice slice_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  Tensor inv_freq_device_;       // the same on a device (empty on the CPU)
  ModelStats stats_;
  mutable std::mutex fold_mu_;
  mutable std::vector<std::pair<std::weak_ptr<const FeatureLayout>,
                                std::shared_ptr<const FoldedOutput>>>
      folds_;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_LLAMA_H_
