// The main of a gtest binary whose every process is one rank of an MPI world
// (tp_check, sp_check under mpirun): it opens the world, runs the tests and
// exits non-zero on every rank when any rank failed.
#ifndef KVFOLD_TESTS_MPI_GTEST_MAIN_H_
#define KVFOLD_TESTS_MPI_GTEST_MAIN_H_

#include "parallel/communicator.h"

namespace kvfold {

// The MPI world; valid while the tests run.
Communicator& TestWorld();

}  // namespace kvfold

#endif  // KVFOLD_TESTS_MPI_GTEST_MAIN_H_
