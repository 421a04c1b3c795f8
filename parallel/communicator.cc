#include "parallel/communicator.h"

#include "absl/strings/str_cat.h"

namespace kvfold {

absl::Status CheckReduce(const TensorView& data, const char* op) {
  if (data.dtype != DType::kF32 && data.dtype != DType::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": reductions take f32 or i32, not ", DTypeName(data.dtype)));
  }
  if (data.numel() > 0 && data.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null data"));
  }
  return absl::OkStatus();
}

absl::Status CheckGather(const TensorView& small, const TensorView& big, int size,
                         const char* op) {
  if (small.dtype != big.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": dtypes differ (",
                                                   DTypeName(small.dtype), " vs ",
                                                   DTypeName(big.dtype), ")"));
  }
  if (big.numel() != small.numel() * size) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": the large tensor has ", big.numel(), " elements, expected ", size, " x ",
        small.numel()));
  }
  return absl::OkStatus();
}

absl::Status CheckRank(int rank, int size, const char* what) {
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", rank, " is not a rank of a group of ", size));
  }
  return absl::OkStatus();
}

}  // namespace kvfold
