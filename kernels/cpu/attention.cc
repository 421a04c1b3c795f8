// Causal GQA attention over [cached keys ; chunk keys], blocked over queries:
// S = Q K^T and O = P V are sgemm calls, the softmax is done per row between.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvfold::cpu {

namespace {

constexpr int64_t kQueryBlock = 32;

}  // namespace

absl::Status Attention(const Stream& s, const AttentionArgs& a) {
  const int64_t d = a.head_dim, group = a.q_heads / a.kv_heads;
  const int64_t dv = a.value_dim > 0 ? a.value_dim : d;
  const int64_t q_row = a.q_heads * d;     // stride between queries
  const int64_t out_row = a.q_heads * dv;  // and between outputs
  // Per query head column sums, reduced over each group at the end so that
  // threads never write the same memory.
  std::vector<float> head_cols;
  if (a.col_sums != nullptr) head_cols.assign(a.q_heads * a.num_keys, 0.0f);

  ParallelFor(s, a.q_heads, [&](int64_t h0, int64_t h1) {
    std::vector<float> scores(kQueryBlock * a.num_keys);
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t g = h / group;
      const float* kg = a.k + g * a.kv_stride * d;
      const float* vg = a.v + g * a.kv_stride * dv;
      for (int64_t i0 = 0; i0 < a.num_queries; i0 += kQueryBlock) {
        const int64_t bq = std::min(kQueryBlock, a.num_queries - i0);
        // Keys any query of this block may see.
        const int64_t span =
            std::min(a.num_keys, a.causal_offset + i0 + bq);
        const float* qb = a.q + i0 * q_row + h * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, span, d,
                    a.scale, qb, q_row, kg, d, 0.0f, scores.data(), span);
        for (int64_t r = 0; r < bq; ++r) {
          float* row = scores.data() + r * span;
          const int64_t seen = std::min(span, a.causal_offset + i0 + r + 1);
          const float mx = *std::max_element(row, row + seen);
          float sum = 0.0f;
          for (int64_t j = 0; j < seen; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j < seen; ++j) row[j] *= inv;
          std::fill(row + seen, row + span, 0.0f);
          if (a.lse != nullptr) a.lse[h * a.num_queries + i0 + r] = mx + std::log(sum);
          if (a.col_sums != nullptr && i0 + r >= a.col_sums_from_query) {
            float* cols = head_cols.data() + h * a.num_keys;
            for (int64_t j = 0; j < seen; ++j) cols[j] += row[j];
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, dv, span,
                    1.0f, scores.data(), span, vg, dv, 0.0f,
                    a.out + i0 * out_row + h * dv, out_row);
      }
    }
  });

  if (a.col_sums != nullptr) {
    for (int64_t g = 0; g < a.kv_heads; ++g) {
      float* dst = a.col_sums + g * a.num_keys;
      std::fill(dst, dst + a.num_keys, 0.0f);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const float* src = head_cols.data() + h * a.num_keys;
        for (int64_t j = 0; j < a.num_keys; ++j) dst[j] += src[j];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvfold::cpu
