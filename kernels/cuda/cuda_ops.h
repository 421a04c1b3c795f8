// CUDA implementations of kernels/ops.h entry points (built with
// --config=cuda). Pointers are device memory; work is queued on the stream.
#ifndef KVFOLD_KERNELS_CUDA_CUDA_OPS_H_
#define KVFOLD_KERNELS_CUDA_CUDA_OPS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvfold::cuda {

// Number of usable CUDA devices; an error (e.g. no driver) says why none.
absl::Status DeviceCount(int* count);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, on `stream`.
absl::Status RmsNorm(void* stream, const float* x, const float* w, float eps,
                     float* out, int64_t rows, int64_t dim);

}  // namespace kvfold::cuda

#endif  // KVFOLD_KERNELS_CUDA_CUDA_OPS_H_
