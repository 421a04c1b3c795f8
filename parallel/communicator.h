// Collective communication between the ranks of a group (DESIGN.md,
// parallel/): one interface, implemented over an in-process thread group
// (fast unit tests), MPI (CPU tensors across processes launched by mpirun)
// and, with --config=cuda, NCCL. Every blocking call has a timeout: a rank
// that never arrives makes the others fail with DeadlineExceeded naming the
// operation, instead of hanging.
#ifndef KVFOLD_PARALLEL_COMMUNICATOR_H_
#define KVFOLD_PARALLEL_COMMUNICATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/tensor.h"

namespace kvfold {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "threads", "mpi", "nccl".
  virtual std::string kind() const = 0;

  // In place: every rank ends with the elementwise reduction over ranks.
  // Tensors are contiguous f32 or i32 of the same shape on every rank.
  virtual absl::Status AllReduce(const TensorView& data, ReduceOp op) = 0;
  // recv holds size() copies of send's shape, concatenated in rank order.
  virtual absl::Status AllGather(const TensorView& send, const TensorView& recv) = 0;
  // send holds size() blocks of recv's shape; rank r receives the reduction
  // of block r over ranks.
  virtual absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                                     ReduceOp op) = 0;
  // In place: every rank ends with root's data.
  virtual absl::Status Broadcast(const TensorView& data, int root) = 0;
  // Point to point; a Recv matches the Send with the same peer and tag.
  virtual absl::Status Send(const TensorView& data, int peer, int tag) = 0;
  virtual absl::Status Recv(const TensorView& data, int peer, int tag) = 0;
  // Whether a message from `peer` with `tag` is waiting (never blocks), so
  // a rank busy with its own work can serve others between steps. NCCL has
  // no such call: Unimplemented there.
  virtual absl::StatusOr<bool> Probe(int peer, int tag);
  virtual absl::Status Barrier() = 0;
  // Collective over this communicator: ranks passing the same `color` form a
  // new communicator, ordered by `key` (ties by rank here). The result is
  // independent of this one (it may outlive it).
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;
};

// Text over any communicator (results, error messages), carried as i32
// words: a length, then the bytes. SendText/RecvText are point to point
// (two messages with `tag`); AllGatherText returns every rank's text in rank
// order (collective).
absl::Status SendText(Communicator& c, const std::string& text, int peer, int tag);
absl::StatusOr<std::string> RecvText(Communicator& c, int peer, int tag);
absl::StatusOr<std::vector<std::string>> AllGatherText(Communicator& c,
                                                        const std::string& text);
// Collective: every rank ends with root's `text`.
absl::Status BroadcastText(Communicator& c, std::string* text, int root);

// Checks shared by the implementations: sizes, dtypes, ranks.
absl::Status CheckReduce(const TensorView& data, const char* op);
absl::Status CheckGather(const TensorView& small, const TensorView& big, int size,
                         const char* op);
absl::Status CheckRank(int rank, int size, const char* what);

// Default timeout of blocking calls (overridable per communicator).
inline constexpr absl::Duration kDefaultCollectiveTimeout = absl::Seconds(120);

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_COMMUNICATOR_H_
