// The collective test suite every Communicator implementation runs (threads
// in-process, MPI under mpirun): each rank calls RunCollectiveSuite and gets
// the list of failed checks (empty = pass). Expected values are closed forms
// of rank-dependent inputs.
#ifndef KVFOLD_PARALLEL_COLLECTIVE_SUITE_H_
#define KVFOLD_PARALLEL_COLLECTIVE_SUITE_H_

#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace kvfold {

std::vector<std::string> RunCollectiveSuite(Communicator& comm);

}  // namespace kvfold

#endif  // KVFOLD_PARALLEL_COLLECTIVE_SUITE_H_
