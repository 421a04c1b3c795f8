// Op entry points. Each takes an explicit Stream (the device and its execution
// context) and typed raw pointers with sizes, all on the stream's device;
// dispatch is one switch on the device (kernels/cpu/, kernels/cuda/). All
// activations are f32; weights may be f32, bf16 or f16 (CUDA); accumulation
// is f32.
#ifndef KVFOLD_KERNELS_OPS_H_
#define KVFOLD_KERNELS_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

namespace kvfold {

namespace cuda {
class Context;
}  // namespace cuda

// Optional accounting of where time goes (benchmarks); null = none kept.
struct OpTimers {
  double matmul_seconds = 0;
  double matmul_flops = 0;
};

struct Stream {
  Device device;
  ThreadPool* pool = nullptr;    // CPU: worker threads (null = caller only)
  cuda::Context* cuda = nullptr;  // CUDA: stream, cuBLAS handle, workspace
  OpTimers* timers = nullptr;
};

// c[m, n] (+)= a[m, k] . b[n, k]^T   (b is a weight in Hugging Face [out, in]
// layout). lda/ldb/ldc are row strides in elements.
absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate);

// The same with b of type `b_type`: f32 everywhere; bf16 and f16 on CUDA
// (a is rounded to b's type, accumulation stays f32).
absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const void* b, DType b_type, int64_t ldb, float* c,
                      int64_t ldc, int64_t m, int64_t n, int64_t k,
                      bool accumulate);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w.  x may alias out.
absl::Status RmsNorm(const Stream& s, const float* x, const float* w,
                     float eps, float* out, int64_t rows, int64_t dim);

// Rotates x[n, heads, head_dim] in place, half-split ("rotate_half") layout:
// pairs (i, i + head_dim/2) rotate by positions[t] * inv_freq[i].
absl::Status ApplyRope(const Stream& s, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim);

// In-place softmax over each row of x[rows, cols].
absl::Status Softmax(const Stream& s, float* x, int64_t rows, int64_t cols);

// x = max(x, 0) over n values.
absl::Status Relu(const Stream& s, float* x, int64_t n);

// The columns of a 1-D convolution with zero "same" padding, so that the
// convolution is one GEMM: for x [channels, length] and an odd `kernel`,
// cols[t, c * kernel + j] = x[c, t + j - kernel / 2] (0 outside [0, length)).
// cols has `length` rows of stride ld >= channels * kernel.
absl::Status Im2Col1d(const Stream& s, const float* x, int64_t channels,
                      int64_t length, int64_t kernel, float* cols, int64_t ld);

// out = silu(gate) * up, elementwise over n values.
absl::Status SiluMul(const Stream& s, const float* gate, const float* up,
                     float* out, int64_t n);

// x += y over n values.
absl::Status AddInPlace(const Stream& s, float* x, const float* y, int64_t n);

// y[r, :] += bias over rows r.
absl::Status AddBias(const Stream& s, float* y, const float* bias,
                     int64_t rows, int64_t cols);

// out[i, :] = table[ids[i], :] as f32; ids must be < vocab (checked by the
// caller). A negative id gives a row of zeros: a token another tensor-parallel
// rank's slice of the vocabulary holds. Tables of f32 (any device), bf16 or f16 (CUDA).
absl::Status Embedding(const Stream& s, const void* table, DType table_type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out);

// k, v [n, heads, head_dim] copied into keys/values [heads, capacity,
// head_dim] at slots [offset, offset + n).
absl::Status AppendKv(const Stream& s, const float* k, const float* v,
                      int64_t n, int64_t heads, int64_t head_dim, float* keys,
                      float* values, int64_t capacity, int64_t offset);

// For each head h, row keep[h * count + i] of data [heads, capacity,
// head_dim] moves to row i (keep ascending per head; on the device).
absl::Status GatherRows(const Stream& s, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t head_dim);

// out[r] = the first index of the maximum of x[r, :] (out on the device).
absl::Status Argmax(const Stream& s, const float* x, int64_t rows,
                    int64_t cols, int32_t* out);

// Copies between host memory and the stream's device (memcpy on the CPU).
// Ordered with the stream's queued work; the host side is done on return.
absl::Status CopyToDevice(const Stream& s, void* dst, const void* src,
                          size_t bytes);
absl::Status CopyToHost(const Stream& s, void* dst, const void* src,
                        size_t bytes);
absl::Status CopyOnDevice(const Stream& s, void* dst, const void* src,
                          size_t bytes);
// `rows` rows of `width` bytes between pitched buffers on the device.
absl::Status CopyRowsOnDevice(const Stream& s, void* dst, size_t dst_pitch,
                              const void* src, size_t src_pitch, size_t width,
                              size_t rows);

// Causal attention of a chunk of queries over keys/values of one layer with
// grouped query heads (query head h uses KV head h / (q_heads / kv_heads)).
//
// Query i sees keys [0, causal_offset + i]; with the cache holding the chunk's
// own keys at its end, causal_offset = num_keys - num_queries.
struct AttentionArgs {
  const float* q = nullptr;   // [num_queries, q_heads, head_dim]
  const float* k = nullptr;   // [kv_heads, kv_stride, head_dim]
  const float* v = nullptr;   // [kv_heads, kv_stride, head_dim]
  float* out = nullptr;       // [num_queries, q_heads, head_dim]
  // Optional outputs (null = not computed):
  float* col_sums = nullptr;  // [kv_heads, num_keys]: sum over queries and the
                              // query heads of each group of the probabilities
  float* lse = nullptr;       // [q_heads, num_queries]: log-sum-exp of logits
  // Queries before this index are left out of col_sums (SnapKV sums only the
  // last queries of a chunk, its observation window).
  int64_t col_sums_from_query = 0;
  int64_t num_queries = 0;
  int64_t num_keys = 0;
  int64_t kv_stride = 0;      // slots allocated per KV head (>= num_keys)
  int64_t causal_offset = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;       // features of queries and keys
  // Features of values and of the output (0 = head_dim): v is then
  // [kv_heads, kv_stride, value_dim], out [num_queries, q_heads, value_dim].
  // CPU only (MatryoshkaKV's projected values).
  int64_t value_dim = 0;
  float scale = 1.0f;         // multiplies q.k (usually 1/sqrt(head_dim))
};
absl::Status Attention(const Stream& s, const AttentionArgs& a);

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_OPS_H_
