// The ranks of a kvfold job. Under mpirun every process is one rank of an MPI
// world; run directly it is a world of one. --tp and --sp lay the world out
// as a Mesh (DP x SP x TP) and give each rank its TP and SP groups; the data-parallel
// replicas share out the documents and world rank 0 writes every result.
//
// Failure rules (what a user sees):
// - Start-up (flags, config, mesh, loading): every rank meets in
//   AgreeOnStartup; if any failed, rank 0 prints one message (naming the
//   failing ranks when they differ) and every rank exits non-zero.
// - After start-up, a failing rank prints "rank R of N: ..." and aborts the
//   whole job (mpirun ends every rank non-zero); a rank that dies is
//   reported by mpirun, and the others stop at their next collective
//   within its timeout. A rank that hangs (alive, silent) is named by the
//   health check of the rank whose collective timed out (parallel/
//   mpi_health.h); `kvfold run` adds heartbeats between replicas and the
//   writer (run.cc).
#ifndef KVFOLD_LAUNCH_RANKS_H_
#define KVFOLD_LAUNCH_RANKS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "parallel/communicator.h"
#include "parallel/counting_communicator.h"
#include "parallel/mesh.h"

namespace kvfold {

class Ranks {
 public:
  // MPI when launched by mpirun (its environment says so), else one rank.
  static absl::StatusOr<std::unique_ptr<Ranks>> Start();
  ~Ranks();

  Communicator& world() { return *world_; }
  // The world again, for results sent to the writer: its timeout
  // (--job_timeout) bounds one document's work, not one collective's.
  Communicator& results() { return results_ ? *results_ : *world_; }
  // The world again, for waits on a peer that may itself be stuck in a
  // collective: its timeout, silence_limit(), lets that peer time out and
  // report (naming the rank that stopped) first.
  Communicator& watch() { return watch_ ? *watch_ : *world_; }
  // 2 x --collective_timeout + 10 s: one collective's timeout plus the
  // health check that follows it (parallel/mpi_health.h), with a margin.
  static absl::Duration silence_limit();
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }
  bool writer() const { return world_->rank() == 0; }
  // Launched by mpirun (else a world of one).
  bool mpi() const { return mpi_; }
  // "rank R of N: " when there are several ranks, else "".
  std::string Prefix() const;

  // Lays out the mesh from --tp and --sp for `config` (local checks only;
  // every rank reaches the same verdict).
  absl::Status PlanMesh(const ModelConfig& config);
  // Splits the world into the planned TP and SP groups and replicas
  // (collective; after AgreeOnStartup, so no rank is missing).
  absl::Status SplitGroups();
  // Meets the rest of this rank's replica with the --job_timeout before
  // each document when there are several replicas, so ranks whose partner
  // (the writer) is waiting for other replicas' results do not run into the
  // short collective timeout. Nothing to do with one replica.
  absl::Status SyncReplica();
  const Mesh& mesh() const { return *mesh_; }
  // The TP group, or null for TP = 1 (the model then holds everything).
  Communicator* tp() { return mesh_ && mesh_->tp_size() > 1 ? tp_.get() : nullptr; }
  // The TP group for tensors on `device`: tp() on the CPU; on a CUDA device
  // an NCCL communicator bootstrapped over tp() (collective over the TP
  // group; builds with --config=cuda only). Null for TP = 1.
  absl::StatusOr<Communicator*> TpFor(const Device& device);
  // The SP group (the replica's ranks at this rank's TP position), or null
  // for SP = 1. Its collectives run on host memory (MPI) on every device.
  Communicator* sp() { return mesh_ && mesh_->sp_size() > 1 ? sp_.get() : nullptr; }
  int dp_size() const { return mesh_ ? mesh_->dp_size() : 1; }
  int dp_rank() const { return mesh_ ? mesh_->dp_rank() : 0; }
  // World rank of the first rank (TP 0, SP 0) of replica `dp`: the one that
  // sends the replica's results to the writer.
  int ReplicaLeader(int dp) const;
  bool replica_leader() const { return ReplicaLeader(dp_rank()) == rank(); }
  // Collective over this rank's replica (its SP x TP ranks), with the
  // silence_limit() (the leader gets `text` from the writer, which answers
  // between its own steps): every rank ends with its leader's `text`.
  absl::Status ShareWithReplica(std::string* text);
  // Payload bytes this rank has sent or contributed to collectives so far,
  // over every communicator of the job.
  int64_t BytesExchanged() const;
  // The first error of any communicator of the job (OK while none failed).
  absl::Status CommunicationFailure() const;

  // Collective over the world (with the --job_timeout: ranks load at
  // different speeds): OK when every rank's `status` is OK. Else
  // rank 0 prints the failure (one message when all ranks failed alike, else
  // one line per failing rank) and every rank returns an error that
  // `reported()` marks as already printed.
  absl::Status AgreeOnStartup(const absl::Status& status);
  bool reported() const { return reported_; }

  // A failure after start-up: prints it with this rank's prefix and, with
  // several ranks, aborts the job.
  [[noreturn]] void Fail(const std::string& message, int code);

 private:
  Ranks() = default;
  // Every communicator is counted (BytesExchanged).
  std::unique_ptr<CountingCommunicator> owned_world_;
  std::unique_ptr<CountingCommunicator> results_;
  std::unique_ptr<CountingCommunicator> watch_;
  Communicator* world_ = nullptr;
  std::unique_ptr<class ThreadGroup> single_;
  bool mpi_ = false;
  std::unique_ptr<Mesh> mesh_;
  std::unique_ptr<CountingCommunicator> tp_;
  std::unique_ptr<CountingCommunicator> tp_device_;  // NCCL over tp_
  std::unique_ptr<CountingCommunicator> sp_;
  // The replica's ranks (SP x TP) with the --job_timeout, and with the
  // silence_limit().
  std::unique_ptr<CountingCommunicator> replica_jobs_;
  std::unique_ptr<CountingCommunicator> replica_watch_;
  bool reported_ = false;
};

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_RANKS_H_
