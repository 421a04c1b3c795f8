#include "kernels/ops.h"

#include <cstring>

#include "kernels/cpu/cpu_ops.h"

#ifdef KVFOLD_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace kvfold {
namespace {

#ifdef KVFOLD_WITH_CUDA
absl::Status NoContext(const char* op) {
  return absl::InternalError(std::string(op) +
                             ": CUDA stream without a CUDA context");
}
#define KVFOLD_CUDA_CALL(op, ...)                     \
  if (s.cuda == nullptr) return NoContext(#op);       \
  return cuda::op(*s.cuda, __VA_ARGS__)
#else
absl::Status NoCuda(const char* op) {
  return absl::UnimplementedError(
      std::string(op) +
      ": this binary was built without CUDA (build with --config=cuda)");
}
#define KVFOLD_CUDA_CALL(op, ...) return NoCuda(#op)
#endif

}  // namespace

// Every entry point is the same visible switch on the device kind.
#define KVFOLD_DISPATCH(op, ...)        \
  switch (s.device.kind) {              \
    case Device::Kind::kCpu:            \
      return cpu::op(s, __VA_ARGS__);   \
    case Device::Kind::kCuda:           \
      KVFOLD_CUDA_CALL(op, __VA_ARGS__); \
  }                                     \
  return absl::InternalError("bad device")

absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate) {
  return MatMulNT(s, a, lda, b, DType::kF32, ldb, c, ldc, m, n, k, accumulate);
}

absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const void* b, DType b_type, int64_t ldb, float* c,
                      int64_t ldc, int64_t m, int64_t n, int64_t k,
                      bool accumulate) {
  switch (s.device.kind) {
    case Device::Kind::kCpu:
      if (b_type != DType::kF32) {
        return absl::InvalidArgumentError("matmul: CPU weights must be f32");
      }
      return cpu::MatMulNT(s, a, lda, static_cast<const float*>(b), ldb, c,
                           ldc, m, n, k, accumulate);
    case Device::Kind::kCuda:
      KVFOLD_CUDA_CALL(MatMulNT, a, lda, b, b_type, ldb, c, ldc, m, n, k,
                       accumulate);
  }
  return absl::InternalError("bad device");
}

absl::Status RmsNorm(const Stream& s, const float* x, const float* w,
                     float eps, float* out, int64_t rows, int64_t dim) {
  KVFOLD_DISPATCH(RmsNorm, x, w, eps, out, rows, dim);
}

absl::Status ApplyRope(const Stream& s, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim) {
  KVFOLD_DISPATCH(ApplyRope, x, positions, inv_freq, n, heads, head_dim);
}

absl::Status Softmax(const Stream& s, float* x, int64_t rows, int64_t cols) {
  KVFOLD_DISPATCH(Softmax, x, rows, cols);
}

absl::Status SiluMul(const Stream& s, const float* gate, const float* up,
                     float* out, int64_t n) {
  KVFOLD_DISPATCH(SiluMul, gate, up, out, n);
}

// No CUDA kernels yet: the policy that uses them (LoCoCo) keeps its cache
// in host memory, and MakeCache refuses it on a device.
absl::Status Relu(const Stream& s, float* x, int64_t n) {
  switch (s.device.kind) {
    case Device::Kind::kCpu:
      return cpu::Relu(s, x, n);
    case Device::Kind::kCuda:
      return absl::UnimplementedError("relu: no CUDA kernel yet");
  }
  return absl::InternalError("bad device");
}

absl::Status Im2Col1d(const Stream& s, const float* x, int64_t channels,
                      int64_t length, int64_t kernel, float* cols, int64_t ld) {
  if (kernel < 1 || kernel % 2 == 0 || ld < channels * kernel) {
    return absl::InvalidArgumentError(
        "im2col: the kernel must be odd and ld >= channels * kernel");
  }
  switch (s.device.kind) {
    case Device::Kind::kCpu:
      return cpu::Im2Col1d(s, x, channels, length, kernel, cols, ld);
    case Device::Kind::kCuda:
      return absl::UnimplementedError("im2col: no CUDA kernel yet");
  }
  return absl::InternalError("bad device");
}

absl::Status AddInPlace(const Stream& s, float* x, const float* y, int64_t n) {
  KVFOLD_DISPATCH(AddInPlace, x, y, n);
}

absl::Status AddBias(const Stream& s, float* y, const float* bias,
                     int64_t rows, int64_t cols) {
  KVFOLD_DISPATCH(AddBias, y, bias, rows, cols);
}

absl::Status Embedding(const Stream& s, const void* table, DType table_type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out) {
  KVFOLD_DISPATCH(Embedding, table, table_type, ids, n, dim, out);
}

absl::Status AppendKv(const Stream& s, const float* k, const float* v,
                      int64_t n, int64_t heads, int64_t head_dim, float* keys,
                      float* values, int64_t capacity, int64_t offset) {
  KVFOLD_DISPATCH(AppendKv, k, v, n, heads, head_dim, keys, values, capacity,
                  offset);
}

absl::Status GatherRows(const Stream& s, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t head_dim) {
  KVFOLD_DISPATCH(GatherRows, data, keep, count, heads, capacity, head_dim);
}

absl::Status Argmax(const Stream& s, const float* x, int64_t rows,
                    int64_t cols, int32_t* out) {
  KVFOLD_DISPATCH(Argmax, x, rows, cols, out);
}

absl::Status Attention(const Stream& s, const AttentionArgs& a) {
  // Argument checks shared by both backends.
  if (a.q == nullptr || a.k == nullptr || a.v == nullptr || a.out == nullptr) {
    return absl::InvalidArgumentError("attention: null q/k/v/out");
  }
  if (a.q_heads <= 0 || a.kv_heads <= 0 || a.q_heads % a.kv_heads != 0) {
    return absl::InvalidArgumentError(
        "attention: q_heads must be a positive multiple of kv_heads");
  }
  if (a.num_keys > a.kv_stride || a.causal_offset < 0 ||
      a.causal_offset >= a.num_keys + (a.num_queries == 0 ? 1 : 0)) {
    return absl::InvalidArgumentError(
        "attention: need 0 <= causal_offset < num_keys <= kv_stride");
  }
  if (a.value_dim != 0 && a.value_dim != a.head_dim &&
      s.device.kind != Device::Kind::kCpu) {
    return absl::UnimplementedError(
        "attention: values of another width than the keys (MatryoshkaKV) run on the "
        "CPU backend only so far");
  }
  KVFOLD_DISPATCH(Attention, a);
}

#undef KVFOLD_DISPATCH

// Copies: memcpy on the CPU, cudaMemcpy on CUDA.
#ifdef KVFOLD_WITH_CUDA
#define KVFOLD_CUDA_COPY(copy_kind) \
  cuda::Memcpy(dst, src, bytes, cuda::CopyKind::copy_kind)
#else
#define KVFOLD_CUDA_COPY(copy_kind) NoCuda("copy")
#endif
#define KVFOLD_COPY(copy_kind)               \
  switch (s.device.kind) {                   \
    case Device::Kind::kCpu:                 \
      std::memcpy(dst, src, bytes);          \
      return absl::OkStatus();               \
    case Device::Kind::kCuda:                \
      return KVFOLD_CUDA_COPY(copy_kind);    \
  }                                          \
  return absl::InternalError("bad device")

absl::Status CopyToDevice(const Stream& s, void* dst, const void* src,
                          size_t bytes) {
  KVFOLD_COPY(kHostToDevice);
}

absl::Status CopyToHost(const Stream& s, void* dst, const void* src,
                        size_t bytes) {
  KVFOLD_COPY(kDeviceToHost);
}

absl::Status CopyOnDevice(const Stream& s, void* dst, const void* src,
                          size_t bytes) {
  KVFOLD_COPY(kDeviceToDevice);
}

#undef KVFOLD_COPY
#undef KVFOLD_CUDA_COPY

absl::Status CopyRowsOnDevice(const Stream& s, void* dst, size_t dst_pitch,
                              const void* src, size_t src_pitch, size_t width,
                              size_t rows) {
  switch (s.device.kind) {
    case Device::Kind::kCpu:
      for (size_t r = 0; r < rows; ++r) {
        std::memcpy(static_cast<char*>(dst) + r * dst_pitch,
                    static_cast<const char*>(src) + r * src_pitch, width);
      }
      return absl::OkStatus();
    case Device::Kind::kCuda:
#ifdef KVFOLD_WITH_CUDA
      return cuda::Memcpy2D(dst, dst_pitch, src, src_pitch, width, rows,
                            cuda::CopyKind::kDeviceToDevice);
#else
      return NoCuda("copy");
#endif
  }
  return absl::InternalError("bad device");
}

}  // namespace kvfold
