// Status-returning checks for CUDA runtime and cuBLAS calls (the .cu files of
// kernels/cuda, and C++ calling the CUDA runtime, e.g. parallel/nccl): the
// message records the expression, file and line.
#ifndef KVFOLD_KERNELS_CUDA_CUDA_CHECK_H_
#define KVFOLD_KERNELS_CUDA_CUDA_CHECK_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"

namespace kvfold::cuda {

inline absl::Status CudaError(cudaError_t e, const char* expr, const char* file,
                              int line) {
  return absl::InternalError(std::string(expr) + " failed at " + file + ":" +
                             std::to_string(line) + ": " +
                             cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

inline absl::Status CublasError(cublasStatus_t e, const char* expr,
                                const char* file, int line) {
  return absl::InternalError(std::string(expr) + " failed at " + file + ":" +
                             std::to_string(line) + ": " +
                             cublasGetStatusName(e) + ": " +
                             cublasGetStatusString(e));
}

}  // namespace kvfold::cuda

#define CUDA_RETURN_IF_ERROR(expr)                                           \
  do {                                                                       \
    const cudaError_t kvfold_e = (expr);                                     \
    if (kvfold_e != cudaSuccess)                                             \
      return ::kvfold::cuda::CudaError(kvfold_e, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                                           \
  do {                                                                         \
    const cublasStatus_t kvfold_e = (expr);                                    \
    if (kvfold_e != CUBLAS_STATUS_SUCCESS)                                     \
      return ::kvfold::cuda::CublasError(kvfold_e, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here.
#define CUDA_RETURN_IF_LAUNCH_FAILED(name) \
  CUDA_RETURN_IF_ERROR((static_cast<void>(name), cudaGetLastError()))

#endif  // KVFOLD_KERNELS_CUDA_CUDA_CHECK_H_
