// A Communicator that forwards to another and accounts for every call:
// calls, payload bytes (what this rank contributes: the tensor of an
// all-reduce or broadcast, the send block of an all-gather or
// reduce-scatter) and seconds spent. Benchmarks read the traffic of a
// forward pass from it.
#ifndef KVFOLD_PARALLEL_COUNTING_COMMUNICATOR_H_
#define KVFOLD_PARALLEL_COUNTING_COMMUNICATOR_H_

#include <map>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace kvfold {

struct OpCount {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0;
};

class CountingCommunicator : public Communicator {
 public:
  explicit CountingCommunicator(Communicator& inner) : inner_(inner) {}
  // The same, owning `inner`.
  explicit CountingCommunicator(std::unique_ptr<Communicator> inner)
      : owned_(std::move(inner)), inner_(*owned_) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string kind() const override { return inner_.kind(); }

  absl::Status AllReduce(const TensorView& data, ReduceOp op) override;
  absl::Status AllGather(const TensorView& send, const TensorView& recv) override;
  absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                             ReduceOp op) override;
  absl::Status Broadcast(const TensorView& data, int root) override;
  absl::Status Send(const TensorView& data, int peer, int tag) override;
  absl::Status Recv(const TensorView& data, int peer, int tag) override;
  absl::StatusOr<bool> Probe(int peer, int tag) override { return inner_.Probe(peer, tag); }
  absl::Status Barrier() override;
  // The new communicator is not counted.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    return inner_.Split(color, key);
  }

  // By operation name ("AllReduce", ...).
  const std::map<std::string, OpCount>& counts() const { return counts_; }
  OpCount Total() const;
  void Reset() { counts_.clear(); }
  // The first transport failure (a timeout, an MPI or NCCL error; OK while
  // none): a rank that died or stopped, which the caller must not mistake
  // for a bad input. It leaves the communicator broken: every later call
  // returns it at once instead of waiting out another timeout.
  const absl::Status& failure() const { return failure_; }

 private:
  template <typename F>
  absl::Status Count(const char* op, int64_t bytes, F call);

  std::unique_ptr<Communicator> owned_;  // declared before inner_, which may refer to it
  Communicator& inner_;
  std::map<std::string, OpCount> counts_;
  absl::Status failure_;
};

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_COUNTING_COMMUNICATOR_H_
