// RMSNorm: one block per row, f32 accumulation, block-wide reduction.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_ops.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 256;

absl::Status Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(what) + ": " + cudaGetErrorString(e));
}

__global__ void RmsNormKernel(const float* __restrict__ x,
                              const float* __restrict__ w, float eps,
                              float* __restrict__ out, int64_t dim) {
  const float* xr = x + blockIdx.x * dim;
  float* yr = out + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float partial[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) ss += __shfl_down_sync(0xffffffffu, ss, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    ss = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    for (int off = 16; off > 0; off /= 2) ss += __shfl_down_sync(0xffffffffu, ss, off);
    if (threadIdx.x == 0) partial[0] = rsqrtf(ss / dim + eps);
  }
  __syncthreads();
  const float inv = partial[0];
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}

}  // namespace

absl::Status DeviceCount(int* count) {
  *count = 0;
  return Check(cudaGetDeviceCount(count), "cudaGetDeviceCount");
}

absl::Status RmsNorm(void* stream, const float* x, const float* w, float eps,
                     float* out, int64_t rows, int64_t dim) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<rows, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, w, eps, out, dim);
  return Check(cudaGetLastError(), "rms_norm launch");
}

}  // namespace kvfold::cuda
