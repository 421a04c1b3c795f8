// Communicator over NCCL for tensors on one CUDA device per rank (DESIGN.md,
// parallel/). Built only with --config=cuda.
//
// Every call enqueues one NCCL operation on the communicator's own stream and
// polls it (ncclCommGetAsyncError + cudaStreamQuery) until it completes or
// the timeout passes; a timeout or an asynchronous NCCL error aborts the
// communicator (ncclCommAbort) and returns DeadlineExceeded / Internal naming
// the rank and the operation. After that every call fails at once: the job
// should stop, as with MPI. The destructor waits (up to the timeout) for the
// other ranks to finish with the communicator, then aborts it.
//
// Contract beyond communicator.h:
// - Use a communicator from one thread at a time (one thread per rank).
// - TensorView.data is a device pointer on this communicator's CUDA device;
//   whatever wrote it (another stream) must have finished before the call.
//   When a call returns OK its outputs are complete and visible to any stream.
// - Send/Recv: NCCL has no tags. Messages between a pair of ranks are matched
//   in the order they were sent; `tag` is only checked to be >= 0, and sizes
//   must match. NCCL point-to-point is a rendezvous: Send returns once the
//   peer has received, so two ranks that both Send to each other before
//   receiving time out (order the pair: the lower rank sends first), and a
//   rank cannot Send to itself.
#ifndef KVFOLD_PARALLEL_NCCL_NCCL_COMMUNICATOR_H_
#define KVFOLD_PARALLEL_NCCL_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace kvfold {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap` (MPI in production, a ThreadGroup in tests):
  // rank 0 makes the NCCL id and broadcasts it, then every rank joins with
  // its `cuda_device` (one rank per device). The result has bootstrap's rank
  // and size and does not keep a reference to it.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      Communicator& bootstrap, int cuda_device,
      absl::Duration timeout = kDefaultCollectiveTimeout);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "nccl"; }
  int cuda_device() const { return device_; }
  // The timeout of every later blocking call (e.g. long for start-up, short
  // in steady state).
  void set_timeout(absl::Duration timeout) { timeout_ = timeout; }

  absl::Status AllReduce(const TensorView& data, ReduceOp op) override;
  absl::Status AllGather(const TensorView& send,
                         const TensorView& recv) override;
  absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                             ReduceOp op) override;
  absl::Status Broadcast(const TensorView& data, int root) override;
  absl::Status Send(const TensorView& data, int peer, int tag) override;
  absl::Status Recv(const TensorView& data, int peer, int tag) override;
  absl::Status Barrier() override;
  // ncclCommSplit. A negative color takes part in the split (so the others do
  // not wait for this rank) and then fails with InvalidArgument.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color,
                                                      int key) override;

  struct State;  // NCCL and CUDA handles (nccl.h stays out of this header)

 private:
  NcclCommunicator() = default;
  // Fails once the communicator was aborted.
  absl::Status CheckAlive(const char* op) const;
  // CheckAlive, and `t` (unless empty) is on this communicator's device.
  absl::Status CheckUsable(const TensorView& t, const char* op) const;
  // Makes this communicator's device current, runs `enqueue` (which starts
  // one NCCL operation on the stream) and waits for it (see the file comment).
  absl::Status Run(const std::string& what,
                   absl::FunctionRef<absl::Status()> enqueue);
  absl::Status Wait(const std::string& what);
  // Aborts the NCCL communicator and returns `error` (used on every failure
  // after an operation was started, since the group is then out of step).
  absl::Status Fail(absl::Status error);

  std::unique_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  absl::Duration timeout_;
};

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_NCCL_NCCL_COMMUNICATOR_H_
