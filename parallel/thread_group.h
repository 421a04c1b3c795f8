// An in-process group of communicators, one per thread: the collectives of
// Communicator with shared memory, for fast unit tests of parallel code
// without mpirun.
#ifndef KVFOLD_PARALLEL_THREAD_GROUP_H_
#define KVFOLD_PARALLEL_THREAD_GROUP_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace kvfold {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size, absl::Duration timeout = kDefaultCollectiveTimeout);
  ~ThreadGroup();
  int size() const { return static_cast<int>(ranks_.size()); }
  // The communicator of `rank`, owned by the group; use it from one thread.
  Communicator* rank(int r) { return ranks_[r].get(); }

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Communicator>> ranks_;
};

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_THREAD_GROUP_H_
