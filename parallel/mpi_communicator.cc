#include "parallel/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <list>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/mpi_health.h"

namespace kvfold {

struct MpiCommunicator::State {
  MPI_Comm comm = MPI_COMM_WORLD;
  // Sends in flight: each owns a copy of its data until MPI completes it.
  struct PendingSend {
    MPI_Request request;
    std::vector<char> data;
  };
  std::list<PendingSend> sends;
};

namespace {

MPI_Datatype Type(DType t) { return t == DType::kI32 ? MPI_INT32_T : MPI_FLOAT; }
MPI_Op Op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

std::string MpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::World(
    absl::Duration timeout) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed");
    }
  }
  // Errors come back as codes, not as a job abort, so they can be reported.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  StartHealthChecks();
  std::unique_ptr<MpiCommunicator> c(new MpiCommunicator());
  c->state_ = std::make_unique<State>();
  c->timeout_ = timeout;
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size_);
  return c;
}

MpiCommunicator::~MpiCommunicator() {
  for (State::PendingSend& s : state_->sends) MPI_Request_free(&s.request);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (state_->comm != MPI_COMM_WORLD && !finalized) MPI_Comm_free(&state_->comm);
}

void MpiCommunicator::Abort(const std::string& why, int code) {
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void MpiCommunicator::Finalize() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

namespace {

// MPI here moves host memory; device tensors go through NCCL.
absl::Status CheckHost(const TensorView& t, const char* op) {
  if (t.device.kind == Device::Kind::kCpu) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "mpi ", op, ": a tensor on ", t.device.ToString(),
      "; the MPI communicator takes CPU tensors (GPU tensors go through NCCL)"));
}

absl::Status Started(int rc, int rank, const std::string& what) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("mpi rank ", rank, ": ", what, ": ", MpiError(rc)));
}

// Polls `request` until it completes or the timeout passes, answering health
// checks meanwhile. On a timeout, checks which peers still answer, so the
// error can name the rank that stopped.
// `peer`: the rank a point-to-point call waits for (-1: a collective).
absl::Status Wait(MPI_Comm comm, MPI_Request* request, absl::Duration timeout, int rank,
                  const std::string& what, int peer = -1) {
  const absl::Time deadline = absl::Now() + timeout;
  int done = 0;
  for (int spins = 0;; ++spins) {
    const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      return absl::InternalError(absl::StrCat("mpi rank ", rank, ": ", what, ": ", MpiError(rc)));
    }
    if (done) return absl::OkStatus();
    if ((spins & 63) == 0) ServePings();
    if (absl::Now() > deadline) {
      const std::string peers = CheckPeers(comm, peer, std::min(timeout, absl::Seconds(10)));
      return absl::DeadlineExceededError(
          absl::StrCat("mpi rank ", rank, ": ", what, " timed out after ",
                       absl::FormatDuration(timeout), peers.empty() ? "" : "; ", peers));
    }
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

absl::Status MpiCommunicator::AllReduce(const TensorView& data, ReduceOp op) {
  KVFOLD_RETURN_IF_ERROR(CheckReduce(data, "AllReduce"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(data, "AllReduce"));
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(MPI_Iallreduce(MPI_IN_PLACE, data.data, int(data.numel()),
                                                Type(data.dtype), Op(op), state_->comm, &r),
                                 rank_, "AllReduce"));
  return Wait(state_->comm, &r, timeout_, rank_, "AllReduce");
}

absl::Status MpiCommunicator::AllGather(const TensorView& send, const TensorView& recv) {
  KVFOLD_RETURN_IF_ERROR(CheckGather(send, recv, size_, "AllGather"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(send, "AllGather"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(recv, "AllGather"));
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(
      MPI_Iallgather(send.data, int(send.numel()), Type(send.dtype), recv.data,
                     int(send.numel()), Type(send.dtype), state_->comm, &r),
      rank_, "AllGather"));
  return Wait(state_->comm, &r, timeout_, rank_, "AllGather");
}

absl::Status MpiCommunicator::ReduceScatter(const TensorView& send, const TensorView& recv,
                                            ReduceOp op) {
  KVFOLD_RETURN_IF_ERROR(CheckReduce(send, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckGather(recv, send, size_, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(send, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(recv, "ReduceScatter"));
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(
      MPI_Ireduce_scatter_block(send.data, recv.data, int(recv.numel()), Type(send.dtype),
                                Op(op), state_->comm, &r),
      rank_, "ReduceScatter"));
  return Wait(state_->comm, &r, timeout_, rank_, "ReduceScatter");
}

absl::Status MpiCommunicator::Broadcast(const TensorView& data, int root) {
  KVFOLD_RETURN_IF_ERROR(CheckRank(root, size_, "Broadcast root"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(data, "Broadcast"));
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(MPI_Ibcast(data.data, int(data.bytes()), MPI_BYTE, root,
                                            state_->comm, &r),
                                 rank_, "Broadcast"));
  return Wait(state_->comm, &r, timeout_, rank_, "Broadcast");
}

absl::Status MpiCommunicator::Send(const TensorView& data, int peer, int tag) {
  KVFOLD_RETURN_IF_ERROR(CheckRank(peer, size_, "Send peer"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(data, "Send"));
  // Completed sends release their buffers.
  for (auto it = state_->sends.begin(); it != state_->sends.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    it = done ? state_->sends.erase(it) : std::next(it);
  }
  State::PendingSend& s = state_->sends.emplace_back();
  s.data.assign(static_cast<const char*>(data.data),
                static_cast<const char*>(data.data) + data.bytes());
  return Started(MPI_Isend(s.data.data(), int(s.data.size()), MPI_BYTE, peer, tag,
                           state_->comm, &s.request),
                 rank_, "Send");
}

absl::Status MpiCommunicator::Recv(const TensorView& data, int peer, int tag) {
  KVFOLD_RETURN_IF_ERROR(CheckRank(peer, size_, "Recv peer"));
  KVFOLD_RETURN_IF_ERROR(CheckHost(data, "Recv"));
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(MPI_Irecv(data.data, int(data.bytes()), MPI_BYTE, peer, tag,
                                           state_->comm, &r),
                                 rank_, "Recv"));
  return Wait(state_->comm, &r, timeout_, rank_,
              absl::StrCat("Recv from rank ", peer, " tag ", tag), peer);
}

absl::StatusOr<bool> MpiCommunicator::Probe(int peer, int tag) {
  KVFOLD_RETURN_IF_ERROR(CheckRank(peer, size_, "Probe peer"));
  ServePings();  // a rank polling for messages answers health checks too
  int waiting = 0;
  KVFOLD_RETURN_IF_ERROR(Started(
      MPI_Iprobe(peer, tag, state_->comm, &waiting, MPI_STATUS_IGNORE), rank_, "Probe"));
  return waiting != 0;
}

absl::Status MpiCommunicator::Barrier() {
  MPI_Request r;
  KVFOLD_RETURN_IF_ERROR(Started(MPI_Ibarrier(state_->comm, &r), rank_, "Barrier"));
  KVFOLD_RETURN_IF_ERROR(Wait(state_->comm, &r, timeout_, rank_, "Barrier"));
  for (State::PendingSend& s : state_->sends) {
    KVFOLD_RETURN_IF_ERROR(Wait(state_->comm, &s.request, timeout_, rank_, "Send completion"));
  }
  state_->sends.clear();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> MpiCommunicator::Split(int color, int key) {
  // MPI_Comm_split blocks without a deadline: meet in a timed barrier first,
  // so a missing rank is reported instead of hanging the split.
  KVFOLD_RETURN_IF_ERROR(Barrier());
  std::unique_ptr<MpiCommunicator> c(new MpiCommunicator());
  c->state_ = std::make_unique<State>();
  c->timeout_ = timeout_;
  KVFOLD_RETURN_IF_ERROR(
      Started(MPI_Comm_split(state_->comm, color, key, &c->state_->comm), rank_, "Split"));
  MPI_Comm_set_errhandler(c->state_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c->state_->comm, &c->rank_);
  MPI_Comm_size(c->state_->comm, &c->size_);
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace kvfold
