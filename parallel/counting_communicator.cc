#include "parallel/counting_communicator.h"

#include <chrono>

namespace kvfold {

template <typename F>
absl::Status CountingCommunicator::Count(const char* op, int64_t bytes, F call) {
  if (!failure_.ok()) return failure_;
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = call();
  // Bad arguments (InvalidArgument, ...) leave the communicator usable.
  const absl::StatusCode code = s.code();
  if (code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kInternal ||
      code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kAborted) {
    failure_ = s;
  }
  OpCount& c = counts_[op];
  ++c.calls;
  c.bytes += bytes;
  c.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

absl::Status CountingCommunicator::AllReduce(const TensorView& data, ReduceOp op) {
  return Count("AllReduce", data.bytes(), [&] { return inner_.AllReduce(data, op); });
}

absl::Status CountingCommunicator::AllGather(const TensorView& send, const TensorView& recv) {
  return Count("AllGather", send.bytes(), [&] { return inner_.AllGather(send, recv); });
}

absl::Status CountingCommunicator::ReduceScatter(const TensorView& send, const TensorView& recv,
                                                 ReduceOp op) {
  return Count("ReduceScatter", send.bytes(),
               [&] { return inner_.ReduceScatter(send, recv, op); });
}

absl::Status CountingCommunicator::Broadcast(const TensorView& data, int root) {
  return Count("Broadcast", data.bytes(), [&] { return inner_.Broadcast(data, root); });
}

absl::Status CountingCommunicator::Send(const TensorView& data, int peer, int tag) {
  return Count("Send", data.bytes(), [&] { return inner_.Send(data, peer, tag); });
}

absl::Status CountingCommunicator::Recv(const TensorView& data, int peer, int tag) {
  return Count("Recv", data.bytes(), [&] { return inner_.Recv(data, peer, tag); });
}

absl::Status CountingCommunicator::Barrier() {
  return Count("Barrier", 0, [&] { return inner_.Barrier(); });
}

OpCount CountingCommunicator::Total() const {
  OpCount t;
  for (const auto& [op, c] : counts_) {
    t.calls += c.calls;
    t.bytes += c.bytes;
    t.seconds += c.seconds;
  }
  return t;
}

}  // namespace kvfold
