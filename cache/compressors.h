// The policies' compressors (ALGORITHMS.md sections 2 and 4) and the pieces
// they share. Parameters arrive validated (policies.cc).
#ifndef KVFOLD_CACHE_COMPRESSORS_H_
#define KVFOLD_CACHE_COMPRESSORS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "cache/compressed_cache.h"

namespace kvfold {

// StreamingLLM: keeps the first `sinks` slots and the most recent ones.
// With `reindex`, kept keys are re-rotated to their slot index.
std::shared_ptr<const Compressor> MakeStreamingCompressor(int64_t sinks,
                                                          bool reindex);

// H2O: keeps the last `window` slots and the highest accumulated scores
// (divided by the number of queries that saw each token when
// `average_over_queries`). Evicts in decode too.
std::shared_ptr<const Compressor> MakeH2OCompressor(int64_t window,
                                                    bool average_over_queries);

// SnapKV (and PyramidKV, which differs only in its layer budgets): keeps the
// last `window` slots and the prefix slots with the highest votes of the
// chunk's last `window` queries, average-pooled over `kernel` slots.
std::shared_ptr<const Compressor> MakeSnapKVCompressor(int64_t window,
                                                       int64_t kernel);

struct KVMergerParams {
  int64_t window = 0;  // recent slots protected
  int64_t heavy = 0;   // top slots by accumulated attention protected
  float sigma = 5.0f;
  bool scale_values_by_size = false;
};
std::shared_ptr<const Compressor> MakeKVMergerCompressor(
    const KVMergerParams& params);

// Indices of the `k` largest of scores[0, n), ascending; ties go to the
// earlier index.
std::vector<int64_t> TopKAscending(const float* scores, int64_t n, int64_t k);

// out[j] = (1/kernel) * sum of x[j - kernel/2 .. j + kernel/2], zeros outside
// [0, n) (PyTorch avg_pool1d with padding kernel/2, count_include_pad).
void AveragePool(const float* x, int64_t n, int64_t kernel, float* out);

// PyramidKV layer budgets (ALGORITHMS.md 4, the KVCache-Factory reading):
// prefix budgets fall linearly from max = 2(B - w) - min to min = (B - w) /
// beta (integer division), step floor((max - min) / (L - 1)); each layer
// also keeps its `window` slots. One layer gets `slots`.
std::vector<int64_t> PyramidBudgets(int64_t slots, int64_t window,
                                    int64_t beta, int64_t num_layers);

}  // namespace kvfold

#endif  // KVFOLD_CACHE_COMPRESSORS_H_
