// Status propagation helpers used across the layers.
#ifndef KVFOLD_KERNELS_STATUS_MACROS_H_
#define KVFOLD_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KVFOLD_RETURN_IF_ERROR(expr)          \
  do {                                        \
    if (absl::Status _s = (expr); !_s.ok()) { \
      return _s;                              \
    }                                         \
  } while (0)

#define KVFOLD_CONCAT_INNER(a, b) a##b
#define KVFOLD_CONCAT(a, b) KVFOLD_CONCAT_INNER(a, b)

// KVFOLD_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
#define KVFOLD_ASSIGN_OR_RETURN(lhs, expr) \
  KVFOLD_ASSIGN_OR_RETURN_IMPL(KVFOLD_CONCAT(_statusor_, __LINE__), lhs, expr)
#define KVFOLD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(*tmp)

#endif  // KVFOLD_KERNELS_STATUS_MACROS_H_
