// Helpers the forward pass's files share (llama.cc, llama_sp.cc); not an
// interface for other packages.
#ifndef KVFOLD_MODELS_LLAMA_INTERNAL_H_
#define KVFOLD_MODELS_LLAMA_INTERNAL_H_

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace kvfold::llama_internal {

// Grows `t` to hold `shape` (never shrinks it: scratch is reused).
inline absl::Status Ensure(Tensor& t, Shape shape, Device device, DType type = DType::kF32) {
  if (t.empty() || t.numel() < NumElements(shape)) {
    KVFOLD_ASSIGN_OR_RETURN(t, Tensor::Allocate(std::move(shape), type, device));
  }
  return absl::OkStatus();
}

// y[n, out] = x[n, in] . W^T (+ bias), or y += that when `accumulate`
// (row-parallel outputs added straight into the residual stream).
inline absl::Status Linear(const Stream& s, const float* x, int64_t n, const Tensor& w,
                           const Tensor& bias, float* y, bool accumulate = false) {
  const int64_t out = w.dim(0), in = w.dim(1);
  KVFOLD_RETURN_IF_ERROR(MatMulNT(s, x, in, w.data(), w.dtype(), in, y, out, n, out, in,
                                  accumulate));
  if (bias.empty()) return absl::OkStatus();
  return AddBias(s, y, bias.as<float>(), n, out);
}

}  // namespace kvfold::llama_internal

#endif  // KVFOLD_MODELS_LLAMA_INTERNAL_H_
