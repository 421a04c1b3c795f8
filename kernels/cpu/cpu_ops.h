// CPU implementations of the ops in kernels/ops.h (same contracts; the
// argument checks that kernels/ops.cc makes before dispatching are not
// repeated here).
#ifndef KVFOLD_KERNELS_CPU_CPU_OPS_H_
#define KVFOLD_KERNELS_CPU_CPU_OPS_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "kernels/ops.h"

namespace kvfold::cpu {

absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate);
absl::Status RmsNorm(const Stream& s, const float* x, const float* w,
                     float eps, float* out, int64_t rows, int64_t dim);
absl::Status ApplyRope(const Stream& s, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim);
absl::Status Softmax(const Stream& s, float* x, int64_t rows, int64_t cols);
absl::Status SiluMul(const Stream& s, const float* gate, const float* up,
                     float* out, int64_t n);
absl::Status Relu(const Stream& s, float* x, int64_t n);
absl::Status Im2Col1d(const Stream& s, const float* x, int64_t channels,
                      int64_t length, int64_t kernel, float* cols, int64_t ld);
absl::Status AddInPlace(const Stream& s, float* x, const float* y, int64_t n);
absl::Status AddBias(const Stream& s, float* y, const float* bias,
                     int64_t rows, int64_t cols);
absl::Status Embedding(const Stream& s, const void* table, DType table_type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out);
absl::Status AppendKv(const Stream& s, const float* k, const float* v,
                      int64_t n, int64_t heads, int64_t head_dim, float* keys,
                      float* values, int64_t capacity, int64_t offset);
absl::Status GatherRows(const Stream& s, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t head_dim);
absl::Status Argmax(const Stream& s, const float* x, int64_t rows,
                    int64_t cols, int32_t* out);
absl::Status Attention(const Stream& s, const AttentionArgs& a);

// Runs fn(begin, end) over [0, n) on the stream's pool (or inline).
void ParallelFor(const Stream& s, int64_t n,
                 const std::function<void(int64_t, int64_t)>& fn);

}  // namespace kvfold::cpu

#endif  // KVFOLD_KERNELS_CPU_CPU_OPS_H_
