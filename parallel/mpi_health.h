// Who stopped answering? When an MPI collective times out, the rank that
// timed out cannot tell from MPI which peer never arrived. The health check
// asks: every rank answers pings on a private duplicate of MPI_COMM_WORLD
// whenever it waits in any MPI call (ServePings from every wait loop), so a
// peer that stays silent for the check's window is stopped, hung in
// computation or dead, and the error can name it.
//
// Internal to the MPI communicator (it brings mpi.h; single-threaded use, as
// MPI_THREAD_FUNNELED asks).
#ifndef KVFOLD_PARALLEL_MPI_HEALTH_H_
#define KVFOLD_PARALLEL_MPI_HEALTH_H_

#include <mpi.h>

#include <string>

#include "absl/time/time.h"

namespace kvfold {

// Duplicates MPI_COMM_WORLD for the pings (collective over the world, once
// per process; later calls do nothing).
void StartHealthChecks();

// Answers the pings that arrived; cheap when none did.
void ServePings();

// Pings every other member of `comm` (only `peer`, a rank of `comm`, when it
// is not negative) and waits up to `window` for their answers (serving pings
// meanwhile). Returns a sentence for an error message: the world ranks that
// did not answer, or that all did.
std::string CheckPeers(MPI_Comm comm, int peer, absl::Duration window);

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_MPI_HEALTH_H_
