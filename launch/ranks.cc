#include "launch/ranks.h"

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launch/flags.h"
#include "parallel/mpi_communicator.h"
#include "parallel/thread_group.h"
#ifdef KVFOLD_WITH_CUDA
#include "parallel/nccl/nccl_communicator.h"
#endif

namespace kvfold {
namespace {

bool LaunchedByMpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

std::unique_ptr<CountingCommunicator> Counted(std::unique_ptr<Communicator> c) {
  return std::make_unique<CountingCommunicator>(std::move(c));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ranks>> Ranks::Start() {
  std::unique_ptr<Ranks> r(new Ranks());
  if (LaunchedByMpirun()) {
    KVFOLD_ASSIGN_OR_RETURN(
        std::unique_ptr<Communicator> world,
        MpiCommunicator::World(absl::Seconds(absl::GetFlag(FLAGS_collective_timeout))));
    KVFOLD_ASSIGN_OR_RETURN(
        std::unique_ptr<Communicator> results,
        MpiCommunicator::World(absl::Seconds(absl::GetFlag(FLAGS_job_timeout))));
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> watch,
                            MpiCommunicator::World(silence_limit()));
    r->owned_world_ = Counted(std::move(world));
    r->results_ = Counted(std::move(results));
    r->watch_ = Counted(std::move(watch));
    r->mpi_ = true;
  } else {
    r->single_ = std::make_unique<ThreadGroup>(1);
    r->world_ = r->single_->rank(0);
  }
  if (r->owned_world_) r->world_ = r->owned_world_.get();
  return r;
}

Ranks::~Ranks() {
  tp_device_.reset();
  replica_watch_.reset();
  replica_jobs_.reset();
  sp_.reset();
  tp_.reset();
  watch_.reset();
  results_.reset();
  owned_world_.reset();
  if (mpi_) MpiCommunicator::Finalize();
}

absl::Duration Ranks::silence_limit() {
  return 2 * absl::Seconds(absl::GetFlag(FLAGS_collective_timeout)) + absl::Seconds(10);
}

std::string Ranks::Prefix() const {
  return size() > 1 ? absl::StrCat("rank ", rank(), " of ", size(), ": ") : "";
}

absl::Status Ranks::PlanMesh(const ModelConfig& c) {
  const int tp = absl::GetFlag(FLAGS_tp), sp = absl::GetFlag(FLAGS_sp);
  KVFOLD_ASSIGN_OR_RETURN(
      Mesh mesh, Mesh::Create(size(), rank(), {.tp = tp, .sp = sp},
                              {int(c.num_heads), int(c.num_kv_heads), c.intermediate_size}));
  mesh_ = std::make_unique<Mesh>(mesh);
  return absl::OkStatus();
}

absl::Status Ranks::SplitGroups() {
  // TP groups: the ranks of one (replica, SP rank), ordered by TP rank.
  const int color = rank() / mesh_->tp_size();
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> tp,
                          world_->Split(color, mesh_->tp_rank()));
  tp_ = Counted(std::move(tp));
  // SP groups: the ranks of one (replica, TP rank), ordered by SP rank.
  KVFOLD_ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> sp,
      world_->Split(mesh_->dp_rank() * mesh_->tp_size() + mesh_->tp_rank(), mesh_->sp_rank()));
  sp_ = Counted(std::move(sp));
  // The replica (SP x TP ranks), for the work its leader shares out.
  const int replica = rank() % (mesh_->sp_size() * mesh_->tp_size());
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> jobs,
                          results().Split(mesh_->dp_rank(), replica));
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> watch,
                          watch().Split(mesh_->dp_rank(), replica));
  replica_jobs_ = Counted(std::move(jobs));
  replica_watch_ = Counted(std::move(watch));
  return absl::OkStatus();
}

absl::Status Ranks::SyncReplica() {
  // One replica: nobody waits on other replicas, and a partner that stopped
  // shows at the first collective of the document, within its timeout.
  if (dp_size() == 1 || replica_jobs_ == nullptr || replica_jobs_->size() == 1) {
    return absl::OkStatus();
  }
  return replica_jobs_->Barrier();
}

absl::Status Ranks::ShareWithReplica(std::string* text) {
  if (replica_watch_ == nullptr || replica_watch_->size() == 1) return absl::OkStatus();
  return BroadcastText(*replica_watch_, text, 0);
}

int64_t Ranks::BytesExchanged() const {
  int64_t bytes = 0;
  for (const CountingCommunicator* c :
       {owned_world_.get(), results_.get(), watch_.get(), tp_.get(), sp_.get(),
        replica_jobs_.get(), replica_watch_.get(), tp_device_.get()}) {
    if (c != nullptr) bytes += c->Total().bytes;
  }
  return bytes;
}

absl::Status Ranks::CommunicationFailure() const {
  for (const CountingCommunicator* c :
       {owned_world_.get(), results_.get(), watch_.get(), tp_.get(), sp_.get(),
        replica_jobs_.get(), replica_watch_.get(), tp_device_.get()}) {
    if (c != nullptr && !c->failure().ok()) return c->failure();
  }
  return absl::OkStatus();
}

absl::StatusOr<Communicator*> Ranks::TpFor(const Device& device) {
  if (tp() == nullptr || device.kind == Device::Kind::kCpu) return tp();
#ifdef KVFOLD_WITH_CUDA
  if (tp_device_ == nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(
        std::unique_ptr<Communicator> nccl,
        NcclCommunicator::Create(*tp_, device.index,
                                 absl::Seconds(absl::GetFlag(FLAGS_collective_timeout))));
    tp_device_ = Counted(std::move(nccl));
  }
  return tp_device_.get();
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "--tp=", mesh_->tp_size(), " on ", device.ToString(),
      " needs NCCL: this kvfold was built without CUDA"));
#endif
}

int Ranks::ReplicaLeader(int dp) const {
  return mesh_ ? dp * mesh_->sp_size() * mesh_->tp_size() : 0;
}

absl::Status Ranks::AgreeOnStartup(const absl::Status& status) {
  const int n = size();
  std::string message(status.message());
  if (!status.ok() && message.empty()) message = absl::StatusCodeToString(status.code());
  KVFOLD_ASSIGN_OR_RETURN(std::vector<std::string> all, AllGatherText(results(), message));
  std::vector<int> failed;
  for (int r = 0; r < n; ++r) {
    if (!all[r].empty()) failed.push_back(r);
  }
  if (failed.empty()) return absl::OkStatus();
  if (rank() == 0) {
    const bool alike = int(failed.size()) == n &&
                       std::all_of(all.begin(), all.end(),
                                   [&](const std::string& m) { return m == all[0]; });
    if (alike) {
      std::fprintf(stderr, "kvfold: error: %s\n", all[0].c_str());
    } else {
      for (int r : failed) {
        std::fprintf(stderr, "kvfold: error: rank %d of %d failed at start-up: %s\n", r, n,
                     all[r].c_str());
      }
    }
    std::fflush(stderr);
  }
  reported_ = true;
  return status.ok() ? absl::AbortedError("another rank failed at start-up") : status;
}

void Ranks::Fail(const std::string& message, int code) {
  if (size() > 1) {
    MpiCommunicator::Abort(absl::StrCat("kvfold: error: ", Prefix(), message), code);
  }
  std::fprintf(stderr, "kvfold: error: %s\n", message.c_str());
  std::exit(code);
}

}  // namespace kvfold
