#include "parallel/mpi_health.h"

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace kvfold {
namespace {

constexpr int kPingTag = 1;
constexpr int kPongTag = 2;

MPI_Comm& HealthComm() {
  static MPI_Comm comm = MPI_COMM_NULL;
  return comm;
}

// World ranks of `comm`'s members, in `comm`'s order.
std::vector<int> WorldRanks(MPI_Comm comm) {
  MPI_Group group, world;
  MPI_Comm_group(comm, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  int n = 0;
  MPI_Group_size(group, &n);
  std::vector<int> local(n), global(n, MPI_UNDEFINED);
  for (int i = 0; i < n; ++i) local[i] = i;
  MPI_Group_translate_ranks(group, n, local.data(), world, global.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  return global;
}

}  // namespace

void StartHealthChecks() {
  if (HealthComm() != MPI_COMM_NULL) return;
  MPI_Comm_dup(MPI_COMM_WORLD, &HealthComm());
  MPI_Comm_set_errhandler(HealthComm(), MPI_ERRORS_RETURN);
}

void ServePings() {
  const MPI_Comm comm = HealthComm();
  if (comm == MPI_COMM_NULL) return;
  for (;;) {
    int waiting = 0;
    MPI_Status status;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kPingTag, comm, &waiting, &status) != MPI_SUCCESS ||
        !waiting) {
      return;
    }
    static char byte = 0;
    MPI_Recv(&byte, 0, MPI_BYTE, status.MPI_SOURCE, kPingTag, comm, MPI_STATUS_IGNORE);
    // An empty message completes on its own: the request need not be kept.
    MPI_Request pong;
    if (MPI_Isend(&byte, 0, MPI_BYTE, status.MPI_SOURCE, kPongTag, comm, &pong) ==
        MPI_SUCCESS) {
      MPI_Request_free(&pong);
    }
  }
}

std::string CheckPeers(MPI_Comm comm, int peer, absl::Duration window) {
  const MPI_Comm health = HealthComm();
  if (health == MPI_COMM_NULL) return "";
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  std::vector<int> peers = WorldRanks(comm);
  if (peer >= 0 && peer < int(peers.size())) peers = {peers[peer]};
  struct Pending {
    int rank;
    MPI_Request pong = MPI_REQUEST_NULL;
    bool answered = false;
  };
  std::vector<Pending> pending;
  static char ping = 0, pong = 0;
  for (int p : peers) {
    if (p == me || p == MPI_UNDEFINED) continue;
    Pending& q = pending.emplace_back(Pending{p});
    if (MPI_Irecv(&pong, 0, MPI_BYTE, p, kPongTag, health, &q.pong) != MPI_SUCCESS) {
      q.pong = MPI_REQUEST_NULL;
      continue;  // counted as silent
    }
    MPI_Request request;
    if (MPI_Isend(&ping, 0, MPI_BYTE, p, kPingTag, health, &request) == MPI_SUCCESS) {
      MPI_Request_free(&request);
    }
  }
  const absl::Time deadline = absl::Now() + window;
  size_t answered = 0;
  while (answered < pending.size() && absl::Now() < deadline) {
    ServePings();
    for (Pending& q : pending) {
      if (q.answered || q.pong == MPI_REQUEST_NULL) continue;
      int done = 0;
      if (MPI_Test(&q.pong, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
        q.answered = true;
        ++answered;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<int> silent;
  for (Pending& q : pending) {
    if (q.answered) continue;
    silent.push_back(q.rank);
    if (q.pong == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&q.pong);
    MPI_Request_free(&q.pong);
  }
  if (silent.empty() && peer >= 0) {
    return absl::StrCat("rank ", pending.empty() ? -1 : pending[0].rank,
                        " answered a health check: it is alive but did not send");
  }
  if (silent.empty()) {
    return "every other rank of the group answered a health check, so they are alive but "
           "not in this operation";
  }
  return absl::StrCat(silent.size() == 1 ? "rank " : "ranks ", absl::StrJoin(silent, ", "),
                      " did not answer a health check within ", absl::FormatDuration(window),
                      " (stopped, hung or dead)");
}

}  // namespace kvfold
