// Communicator over MPI for CPU tensors across processes launched by
// mpirun. Collectives are non-blocking MPI calls polled until a deadline, so
// a rank that died, hangs or never arrives gives DeadlineExceeded (naming the
// operation, and the ranks that failed a health check: mpi_health.h) instead
// of a hang; the caller then aborts the job.
#ifndef KVFOLD_PARALLEL_MPI_COMMUNICATOR_H_
#define KVFOLD_PARALLEL_MPI_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace kvfold {

class MpiCommunicator : public Communicator {
 public:
  // Initializes MPI once (MPI_THREAD_FUNNELED) and returns MPI_COMM_WORLD.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> World(
      absl::Duration timeout = kDefaultCollectiveTimeout);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "mpi"; }

  absl::Status AllReduce(const TensorView& data, ReduceOp op) override;
  absl::Status AllGather(const TensorView& send, const TensorView& recv) override;
  absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                             ReduceOp op) override;
  absl::Status Broadcast(const TensorView& data, int root) override;
  absl::Status Send(const TensorView& data, int peer, int tag) override;
  absl::Status Recv(const TensorView& data, int peer, int tag) override;
  absl::StatusOr<bool> Probe(int peer, int tag) override;
  absl::Status Barrier() override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;

  // Ends the whole job (MPI_Abort) with `code`, after printing `why`.
  [[noreturn]] static void Abort(const std::string& why, int code);
  // MPI_Finalize, once, if MPI was initialized.
  static void Finalize();

  struct State;  // MPI handles (mpi.h stays out of this header)

 private:
  MpiCommunicator() = default;
  std::unique_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
  absl::Duration timeout_;
};

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_MPI_COMMUNICATOR_H_
