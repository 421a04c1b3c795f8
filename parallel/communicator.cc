#include "parallel/communicator.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

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

namespace {

TensorView Words(std::vector<int32_t>& w) {
  return {w.data(), DType::kI32, Device::Cpu(), {int64_t(w.size())}};
}

int64_t WordsFor(size_t bytes) { return int64_t((bytes + 3) / 4); }

}  // namespace

absl::Status SendText(Communicator& c, const std::string& text, int peer, int tag) {
  std::vector<int32_t> length = {int32_t(text.size())};
  std::vector<int32_t> words(WordsFor(text.size()));
  if (!text.empty()) std::memcpy(words.data(), text.data(), text.size());
  KVFOLD_RETURN_IF_ERROR(c.Send(Words(length), peer, tag));
  return c.Send(Words(words), peer, tag);
}

absl::StatusOr<std::string> RecvText(Communicator& c, int peer, int tag) {
  std::vector<int32_t> length(1);
  KVFOLD_RETURN_IF_ERROR(c.Recv(Words(length), peer, tag));
  if (length[0] < 0) return absl::InternalError("RecvText: a negative length");
  std::vector<int32_t> words(WordsFor(size_t(length[0])));
  KVFOLD_RETURN_IF_ERROR(c.Recv(Words(words), peer, tag));
  return std::string(reinterpret_cast<const char*>(words.data()), size_t(length[0]));
}

absl::StatusOr<bool> Communicator::Probe(int peer, int tag) {
  return absl::UnimplementedError(absl::StrCat(kind(), ": Probe is not supported"));
}

absl::Status BroadcastText(Communicator& c, std::string* text, int root) {
  std::vector<int32_t> length = {int32_t(text->size())};
  KVFOLD_RETURN_IF_ERROR(c.Broadcast(Words(length), root));
  std::vector<int32_t> words(WordsFor(size_t(length[0])));
  if (c.rank() == root && !text->empty()) std::memcpy(words.data(), text->data(), text->size());
  KVFOLD_RETURN_IF_ERROR(c.Broadcast(Words(words), root));
  text->assign(reinterpret_cast<const char*>(words.data()), size_t(length[0]));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> AllGatherText(Communicator& c,
                                                        const std::string& text) {
  const int n = c.size();
  std::vector<int32_t> length = {int32_t(text.size())}, lengths(n);
  KVFOLD_RETURN_IF_ERROR(c.AllGather(Words(length), Words(lengths)));
  const int64_t width = WordsFor(size_t(*std::max_element(lengths.begin(), lengths.end())));
  std::vector<int32_t> mine(width), all(width * n);
  if (!text.empty()) std::memcpy(mine.data(), text.data(), text.size());
  KVFOLD_RETURN_IF_ERROR(c.AllGather(Words(mine), Words(all)));
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) {
    out[r].assign(reinterpret_cast<const char*>(all.data() + r * width), size_t(lengths[r]));
  }
  return out;
}

}  // namespace kvfold
