// Status-returning checks for NCCL calls in parallel/nccl (CUDA runtime calls
// use kernels/cuda/cuda_check.h):
// the message records the expression, file and line, so a failure deep in a
// collective says which call failed and where.
#ifndef KVFOLD_PARALLEL_NCCL_NCCL_CHECK_H_
#define KVFOLD_PARALLEL_NCCL_NCCL_CHECK_H_

#include <nccl.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvfold::nccl {

// ncclInProgress is not an error: on a non-blocking communicator it means
// "enqueued, still being set up"; the caller polls ncclCommGetAsyncError.
inline bool NcclOk(ncclResult_t r) {
  return r == ncclSuccess || r == ncclInProgress;
}

inline absl::Status NcclError(ncclResult_t r, const char* expr,
                              const char* file, int line) {
  return absl::InternalError(absl::StrCat(expr, " failed at ", file, ":", line,
                                          ": ", ncclGetErrorString(r), " (",
                                          ncclGetLastError(nullptr), ")"));
}

}  // namespace kvfold::nccl

#define NCCL_RETURN_IF_ERROR(expr)                                           \
  do {                                                                       \
    const ncclResult_t kvfold_r = (expr);                                    \
    if (!::kvfold::nccl::NcclOk(kvfold_r))                                   \
      return ::kvfold::nccl::NcclError(kvfold_r, #expr, __FILE__, __LINE__); \
  } while (0)

#endif  // KVFOLD_PARALLEL_NCCL_NCCL_CHECK_H_
