// Runs the collective suite on MPI_COMM_WORLD (under mpirun, from
// mpi_communicator_test.sh). With --die_rank=R, rank R exits with code 3
// before the first collective: the others must fail within --timeout_ms,
// naming the operation, and the job must end non-zero (no hang).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "parallel/collective_suite.h"
#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  int die_rank = -1;
  long timeout_ms = 60000;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--die_rank=", 11) == 0) die_rank = std::atoi(argv[i] + 11);
    if (std::strncmp(argv[i], "--timeout_ms=", 13) == 0) timeout_ms = std::atol(argv[i] + 13);
  }
  auto comm = kvfold::MpiCommunicator::World(absl::Milliseconds(timeout_ms));
  if (!comm.ok()) {
    std::fprintf(stderr, "mpi_suite: %s\n", std::string(comm.status().message()).c_str());
    return 2;
  }
  kvfold::Communicator& c = **comm;
  if (c.rank() == die_rank) {
    std::fprintf(stderr, "mpi_suite: rank %d exits on purpose\n", c.rank());
    std::_Exit(3);
  }
  if (die_rank >= 0) {
    const absl::Status s = c.Barrier();
    kvfold::MpiCommunicator::Abort(
        "mpi_suite: rank " + std::to_string(c.rank()) + ": " +
            (s.ok() ? std::string("barrier passed without the dead rank")
                    : std::string(s.message())),
        4);
  }
  const std::vector<std::string> failures = kvfold::RunCollectiveSuite(c);
  for (const std::string& f : failures) std::fprintf(stderr, "FAIL %s\n", f.c_str());
  std::printf("mpi_suite: rank %d of %d: %zu failure(s)\n", c.rank(), c.size(), failures.size());
  comm->reset();
  kvfold::MpiCommunicator::Finalize();
  return failures.empty() ? 0 : 1;
}
