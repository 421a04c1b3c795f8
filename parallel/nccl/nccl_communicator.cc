#include "parallel/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <array>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/cuda/cuda_check.h"
#include "parallel/nccl/nccl_check.h"

namespace kvfold {

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;  // null once aborted
  cudaStream_t stream = nullptr;
  int32_t* barrier = nullptr;  // [1] on the device, always 0
  std::string failure;         // once set, every call fails with it
};

namespace {

ncclDataType_t Type(DType t) {
  return t == DType::kI32 ? ncclInt32 : ncclFloat32;
}
ncclRedOp_t Op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

// Makes a device current for the calling thread and restores the caller's
// device afterwards: ranks are threads in tests, and callers may drive other
// devices between calls.
class DeviceScope {
 public:
  DeviceScope() = default;
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  absl::Status Enter(int device) {
    int previous = 0;
    CUDA_RETURN_IF_ERROR(cudaGetDevice(&previous));
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    previous_ = previous;
    return absl::OkStatus();
  }

 private:
  int previous_ = -1;
};

void Pause(int spins) {
  if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

// Polls a non-blocking communicator until its pending set-up (init, split,
// finalize) is over; `where` names the rank and the operation.
absl::Status WaitReady(ncclComm_t comm, absl::Duration timeout,
                       const std::string& where) {
  const absl::Time deadline = absl::Now() + timeout;
  for (int spins = 0;; ++spins) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::InternalError(absl::StrCat(where, ": ",
                                              ncclGetErrorString(state), " (",
                                              ncclGetLastError(comm), ")"));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          where, " timed out after ", absl::FormatDuration(timeout),
          " (a rank failed or never arrived)"));
    }
    Pause(spins);
  }
}

// A stream and the barrier word, for a communicator on the current device.
absl::Status CreateStream(NcclCommunicator::State& s) {
  CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&s.barrier, sizeof(int32_t)));
  CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(s.barrier, 0, sizeof(int32_t), s.stream));
  return absl::OkStatus();
}

// A device index that does not exist is the caller's mistake, not CUDA's.
absl::Status CheckDevice(int device) {
  int count = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("there is no CUDA device ", device, " (", count,
                     " visible; see CUDA_VISIBLE_DEVICES)"));
  }
  return absl::OkStatus();
}

ncclConfig_t NonBlockingConfig() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  // Calls return at once (ncclInProgress) so that every wait has a deadline.
  config.blocking = 0;
  return config;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Communicator& bootstrap, int cuda_device, absl::Duration timeout) {
  const int rank = bootstrap.rank();
  const std::string where = absl::StrCat("nccl rank ", rank, ": ");
  DeviceScope scope;
  absl::Status local = CheckDevice(cuda_device);
  if (local.ok()) local = scope.Enter(cuda_device);
  // Rank 0's id as i32 words behind a flag word (1: rank 0 made an id), so
  // the others fail at once when it could not, instead of timing out.
  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0);
  std::array<int32_t, 1 + sizeof(ncclUniqueId) / sizeof(int32_t)> words{};
  if (rank == 0 && local.ok()) {
    ncclUniqueId id;
    local = [&] {
      NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
      return absl::OkStatus();
    }();
    if (local.ok()) {
      words[0] = 1;
      std::memcpy(&words[1], &id, sizeof id);
    }
  }
  const TensorView view{words.data(),
                        DType::kI32,
                        Device::Cpu(),
                        {static_cast<int64_t>(words.size())}};
  KVFOLD_RETURN_IF_ERROR(bootstrap.Broadcast(view, 0));
  if (!local.ok()) {
    return absl::Status(local.code(), absl::StrCat(where, "cuda:", cuda_device,
                                                   ": ", local.message()));
  }
  if (words[0] != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, "rank 0 could not create the NCCL id (see its error)"));
  }
  ncclUniqueId id;
  std::memcpy(&id, &words[1], sizeof id);

  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->state_ = std::make_unique<State>();
  c->rank_ = rank;
  c->size_ = bootstrap.size();
  c->device_ = cuda_device;
  c->timeout_ = timeout;
  KVFOLD_RETURN_IF_ERROR(CreateStream(*c->state_));
  ncclConfig_t config = NonBlockingConfig();
  absl::Status init = [&] {
    NCCL_RETURN_IF_ERROR(
        ncclCommInitRankConfig(&c->state_->comm, c->size_, id, rank, &config));
    return WaitReady(c->state_->comm, timeout,
                     where + "ncclCommInitRankConfig");
  }();
  if (!init.ok()) return c->Fail(std::move(init));
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (state_ == nullptr) return;
  DeviceScope scope;
  const bool on_device = scope.Enter(device_).ok();
  if (state_->comm != nullptr) {
    // Finalize waits for the other ranks to quiesce; bounded, since one may be
    // gone, after which abort frees what is left without them.
    const bool finalized =
        on_device && nccl::NcclOk(ncclCommFinalize(state_->comm)) &&
        WaitReady(state_->comm, timeout_, "ncclCommFinalize").ok();
    if (finalized) {
      ncclCommDestroy(state_->comm);
    } else {
      ncclCommAbort(state_->comm);
    }
  }
  if (state_->barrier != nullptr) cudaFree(state_->barrier);
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

absl::Status NcclCommunicator::Fail(absl::Status error) {
  if (state_->comm != nullptr) {
    ncclCommAbort(state_->comm);
    state_->comm = nullptr;
  }
  if (state_->failure.empty()) {
    state_->failure =
        absl::StrCat(error.message(), "; the NCCL communicator is aborted");
  }
  return error;
}

absl::Status NcclCommunicator::CheckAlive(const char* op) const {
  if (state_->failure.empty()) return absl::OkStatus();
  return absl::AbortedError(
      absl::StrCat("nccl rank ", rank_, ": ", op,
                   " after an earlier failure: ", state_->failure));
}

absl::Status NcclCommunicator::CheckUsable(const TensorView& t,
                                           const char* op) const {
  KVFOLD_RETURN_IF_ERROR(CheckAlive(op));
  if (t.numel() == 0) return absl::OkStatus();
  if (!(t.device == Device::Cuda(device_))) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the tensor is on ", t.device.ToString(),
                     ", this NCCL communicator on cuda:", device_));
  }
  if (t.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null data"));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Run(const std::string& what,
                                   absl::FunctionRef<absl::Status()> enqueue) {
  DeviceScope scope;
  KVFOLD_RETURN_IF_ERROR(scope.Enter(device_));
  if (absl::Status s = enqueue(); !s.ok()) {
    return Fail(absl::Status(s.code(), absl::StrCat("nccl rank ", rank_, ": ",
                                                    what, ": ", s.message())));
  }
  return Wait(what);
}

absl::Status NcclCommunicator::Wait(const std::string& what) {
  const std::string where = absl::StrCat("nccl rank ", rank_, ": ", what);
  const absl::Time deadline = absl::Now() + timeout_;
  for (int spins = 0;; ++spins) {
    // Until the communicator leaves ncclInProgress the operation may not be
    // on the stream yet, so the stream is only asked after that.
    ncclResult_t state = ncclInProgress;
    const ncclResult_t r = ncclCommGetAsyncError(state_->comm, &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess) {
      const cudaError_t e = cudaStreamQuery(state_->stream);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) {
        return Fail(absl::InternalError(absl::StrCat(
            where, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e))));
      }
    } else if (state != ncclInProgress) {
      return Fail(absl::InternalError(
          absl::StrCat(where, ": ", ncclGetErrorString(state), " (",
                       ncclGetLastError(state_->comm), ")")));
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          where, " timed out after ", absl::FormatDuration(timeout_),
          " (a rank failed or never arrived)")));
    }
    Pause(spins);
  }
}

absl::Status NcclCommunicator::AllReduce(const TensorView& data, ReduceOp op) {
  KVFOLD_RETURN_IF_ERROR(CheckReduce(data, "AllReduce"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(data, "AllReduce"));
  if (data.numel() == 0) return absl::OkStatus();  // the same on every rank
  return Run("AllReduce", [&] {
    NCCL_RETURN_IF_ERROR(ncclAllReduce(data.data, data.data, data.numel(),
                                       Type(data.dtype), Op(op), state_->comm,
                                       state_->stream));
    return absl::OkStatus();
  });
}

absl::Status NcclCommunicator::AllGather(const TensorView& send,
                                         const TensorView& recv) {
  KVFOLD_RETURN_IF_ERROR(CheckGather(send, recv, size_, "AllGather"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(send, "AllGather"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(recv, "AllGather"));
  if (send.numel() == 0) return absl::OkStatus();
  // As bytes: gathering does not look at the values, so any dtype works.
  return Run("AllGather", [&] {
    NCCL_RETURN_IF_ERROR(ncclAllGather(send.data, recv.data, send.bytes(),
                                       ncclUint8, state_->comm,
                                       state_->stream));
    return absl::OkStatus();
  });
}

absl::Status NcclCommunicator::ReduceScatter(const TensorView& send,
                                             const TensorView& recv,
                                             ReduceOp op) {
  KVFOLD_RETURN_IF_ERROR(CheckReduce(send, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckGather(recv, send, size_, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(send, "ReduceScatter"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(recv, "ReduceScatter"));
  if (recv.numel() == 0) return absl::OkStatus();
  return Run("ReduceScatter", [&] {
    NCCL_RETURN_IF_ERROR(ncclReduceScatter(send.data, recv.data, recv.numel(),
                                           Type(send.dtype), Op(op),
                                           state_->comm, state_->stream));
    return absl::OkStatus();
  });
}

absl::Status NcclCommunicator::Broadcast(const TensorView& data, int root) {
  KVFOLD_RETURN_IF_ERROR(CheckRank(root, size_, "Broadcast root"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(data, "Broadcast"));
  if (data.numel() == 0) return absl::OkStatus();
  return Run(absl::StrCat("Broadcast from rank ", root), [&] {
    NCCL_RETURN_IF_ERROR(ncclBroadcast(data.data, data.data, data.bytes(),
                                       ncclUint8, root, state_->comm,
                                       state_->stream));
    return absl::OkStatus();
  });
}

namespace {

// NCCL has no tags (see the header): a negative one is still a caller's bug.
absl::Status CheckPointToPoint(int peer, int self, int size, int tag,
                               const char* op) {
  KVFOLD_RETURN_IF_ERROR(
      CheckRank(peer, size, absl::StrCat(op, " peer").c_str()));
  if (tag < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": negative tag ", tag));
  }
  if (peer == self) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": rank ", self,
                     " with itself never completes (NCCL point-to-point is a "
                     "rendezvous); copy the data instead"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status NcclCommunicator::Send(const TensorView& data, int peer, int tag) {
  KVFOLD_RETURN_IF_ERROR(CheckPointToPoint(peer, rank_, size_, tag, "Send"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(data, "Send"));
  if (data.numel() == 0) return absl::OkStatus();
  return Run(absl::StrCat("Send to rank ", peer, " tag ", tag), [&] {
    NCCL_RETURN_IF_ERROR(ncclSend(data.data, data.bytes(), ncclUint8, peer,
                                  state_->comm, state_->stream));
    return absl::OkStatus();
  });
}

absl::Status NcclCommunicator::Recv(const TensorView& data, int peer, int tag) {
  KVFOLD_RETURN_IF_ERROR(CheckPointToPoint(peer, rank_, size_, tag, "Recv"));
  KVFOLD_RETURN_IF_ERROR(CheckUsable(data, "Recv"));
  if (data.numel() == 0) return absl::OkStatus();
  return Run(absl::StrCat("Recv from rank ", peer, " tag ", tag), [&] {
    NCCL_RETURN_IF_ERROR(ncclRecv(data.data, data.bytes(), ncclUint8, peer,
                                  state_->comm, state_->stream));
    return absl::OkStatus();
  });
}

absl::Status NcclCommunicator::Barrier() {
  KVFOLD_RETURN_IF_ERROR(CheckAlive("Barrier"));
  // NCCL has no barrier: a one-word all-reduce completes only when every
  // rank has joined it.
  return Run("Barrier", [&] {
    NCCL_RETURN_IF_ERROR(ncclAllReduce(state_->barrier, state_->barrier, 1,
                                       ncclInt32, ncclSum, state_->comm,
                                       state_->stream));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Split(int color,
                                                                      int key) {
  KVFOLD_RETURN_IF_ERROR(CheckAlive("Split"));
  const std::string where = absl::StrCat("nccl rank ", rank_, ": Split");
  DeviceScope scope;
  KVFOLD_RETURN_IF_ERROR(scope.Enter(device_));
  std::unique_ptr<NcclCommunicator> child(new NcclCommunicator());
  child->state_ = std::make_unique<State>();
  child->device_ = device_;
  child->timeout_ = timeout_;
  KVFOLD_RETURN_IF_ERROR(CreateStream(*child->state_));
  // A fresh config, not the parent's: splitShare stays off, so the child owns
  // its resources and may outlive this communicator.
  ncclConfig_t config = NonBlockingConfig();
  ncclComm_t& comm = child->state_->comm;
  absl::Status split = [&] {
    NCCL_RETURN_IF_ERROR(ncclCommSplit(state_->comm,
                                       color < 0 ? NCCL_SPLIT_NOCOLOR : color,
                                       key, &comm, &config));
    KVFOLD_RETURN_IF_ERROR(WaitReady(state_->comm, timeout_, where));
    if (comm == nullptr) return absl::OkStatus();  // NCCL_SPLIT_NOCOLOR
    KVFOLD_RETURN_IF_ERROR(WaitReady(comm, timeout_, where));
    NCCL_RETURN_IF_ERROR(ncclCommUserRank(comm, &child->rank_));
    NCCL_RETURN_IF_ERROR(ncclCommCount(comm, &child->size_));
    return absl::OkStatus();
  }();
  if (!split.ok()) {
    // The ranks are out of step: neither communicator can be trusted.
    child->Fail(split).IgnoreError();
    return Fail(split);
  }
  if (color < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": color ", color, " is negative (colors are >= 0)"));
  }
  return std::unique_ptr<Communicator>(std::move(child));
}

}  // namespace kvfold
