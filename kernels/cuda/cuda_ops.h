// CUDA siblings of the ops in kernels/ops.h (built with --config=cuda).
//
// Every function takes a Context (the stream, the cuBLAS handle and a
// workspace of one device), raw device pointers and sizes, queues its work on
// the context's stream and returns a status naming the failing call. Layouts
// are the CPU ops' (kernels/ops.h); activations are f32, weights f32, bf16 or
// f16, accumulation f32.
#ifndef KVFOLD_KERNELS_CUDA_CUDA_OPS_H_
#define KVFOLD_KERNELS_CUDA_CUDA_OPS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace kvfold {
struct AttentionArgs;
}  // namespace kvfold

namespace kvfold::cuda {

// Number of usable CUDA devices; an error (e.g. no driver) says why none.
absl::Status DeviceCount(int* count);
// Name, memory and SM count of a device, for logs and benchmark headers.
absl::StatusOr<std::string> DeviceName(int device);
// Free memory on the device, in bytes.
absl::Status FreeMemory(int device, size_t* free_bytes);

// Device memory (plain cudaMalloc; no managed memory). Free(nullptr) is a no-op.
absl::StatusOr<void*> Malloc(int device, size_t bytes);
void Free(void* p);
// Synchronous copies on the legacy default stream, which orders them with all
// work queued by kvfold (every Context uses that stream too).
enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
absl::Status Memcpy(void* dst, const void* src, size_t bytes, CopyKind kind);
// `rows` rows of `width` bytes, with row pitches in bytes.
absl::Status Memcpy2D(void* dst, size_t dst_pitch, const void* src,
                      size_t src_pitch, size_t width, size_t rows,
                      CopyKind kind);
absl::Status Memset(void* p, int value, size_t bytes);
// Waits for all queued work of the current device.
absl::Status Synchronize();

// One device's execution context.
class Context {
 public:
  static absl::StatusOr<Context*> Create(int device);
  ~Context();

  int device() const { return device_; }
  void* stream() const { return stream_; }
  void* blas() const { return blas_; }
  // Scratch of at least `bytes` (grown on demand, reused between ops of the
  // same stream; a later call may invalidate what an earlier returned).
  absl::StatusOr<void*> Workspace(int slot, size_t bytes);

 private:
  static constexpr int kSlots = 4;
  Context() = default;
  int device_ = 0;
  void* stream_ = nullptr;  // cudaStream_t (null: the legacy default stream)
  void* blas_ = nullptr;    // cublasHandle_t
  void* workspace_[kSlots] = {};
  size_t workspace_bytes_[kSlots] = {};
};

// Workspace slots used by the ops below (distinct so that one op's scratch
// never clobbers another's within a call).
inline constexpr int kWsGemmInput = 0;
inline constexpr int kWsAttention = 1;
inline constexpr int kWsLse = 2;

// c[m, n] (+)= a[m, k] . b[n, k]^T; b of type `b_type` (f32: exact f32
// arithmetic, no TF32; bf16/f16: a is rounded to b's type first).
absl::Status MatMulNT(Context& cx, const float* a, int64_t lda, const void* b,
                      DType b_type, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate);

// The bare half-precision GEMM (a, b both of `type`), c[m, n] = a . b^T:
// what MatMulNT runs after rounding a; benchmarks measure the peak with it.
absl::Status GemmHalf(Context& cx, const void* a, const void* b, DType type,
                      float* c, int64_t m, int64_t n, int64_t k);

absl::Status RmsNorm(Context& cx, const float* x, const float* w, float eps,
                     float* out, int64_t rows, int64_t dim);
absl::Status ApplyRope(Context& cx, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim);
absl::Status Softmax(Context& cx, float* x, int64_t rows, int64_t cols);
absl::Status SiluMul(Context& cx, const float* gate, const float* up,
                     float* out, int64_t n);
absl::Status AddInPlace(Context& cx, float* x, const float* y, int64_t n);
absl::Status AddBias(Context& cx, float* y, const float* bias, int64_t rows,
                     int64_t cols);
absl::Status Embedding(Context& cx, const void* table, DType table_type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out);
// k, v [n, heads, d] into keys/values [heads, capacity, d] at slot `offset`.
absl::Status AppendKv(Context& cx, const float* k, const float* v, int64_t n,
                      int64_t heads, int64_t head_dim, float* keys,
                      float* values, int64_t capacity, int64_t offset);
// For each head h, rows keep[h, i] (i < count) of data [heads, capacity, d]
// move to row i. `keep` is device memory, ascending per head.
absl::Status GatherRows(Context& cx, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t head_dim);
// out[r] = argmax of x[r, :] (the first index of the maximum).
absl::Status Argmax(Context& cx, const float* x, int64_t rows, int64_t cols,
                    int32_t* out);
// f32 -> bf16/f16 element conversion.
absl::Status Convert(Context& cx, const float* x, int64_t n, DType to,
                     void* out);
absl::Status Attention(Context& cx, const AttentionArgs& a);

}  // namespace kvfold::cuda

#endif  // KVFOLD_KERNELS_CUDA_CUDA_OPS_H_
