#include "kernels/ops.h"

#include "kernels/cpu/cpu_ops.h"

namespace kvfold {
namespace {

absl::Status NoCuda(const char* op) {
  return absl::UnimplementedError(
      std::string(op) + ": the CUDA backend is not built into this binary");
}

}  // namespace

// Every entry point is the same visible switch on the device kind.
#define KVFOLD_DISPATCH(op, ...)        \
  switch (s.device.kind) {              \
    case Device::Kind::kCpu:            \
      return cpu::op(s, __VA_ARGS__);   \
    case Device::Kind::kCuda:           \
      return NoCuda(#op);               \
  }                                     \
  return absl::InternalError("bad device")

absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate) {
  KVFOLD_DISPATCH(MatMulNT, a, lda, b, ldb, c, ldc, m, n, k, accumulate);
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

absl::Status AddInPlace(const Stream& s, float* x, const float* y, int64_t n) {
  KVFOLD_DISPATCH(AddInPlace, x, y, n);
}

absl::Status Embedding(const Stream& s, const float* table, const int32_t* ids,
                       int64_t n, int64_t dim, float* out) {
  KVFOLD_DISPATCH(Embedding, table, ids, n, dim, out);
}

absl::Status Attention(const Stream& s, const AttentionArgs& a) {
  KVFOLD_DISPATCH(Attention, a);
}

#undef KVFOLD_DISPATCH

}  // namespace kvfold
