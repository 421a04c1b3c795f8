#include "parallel/thread_group.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kernels/status_macros.h"

namespace kvfold {

// std::mutex rather than absl::Mutex: ThreadSanitizer sees the pthread
// calls under it (Debian's absl is not built with TSan annotations).
struct ThreadGroup::Shared {
  std::mutex mu;
  std::condition_variable changed;  // a generation, a message or a failure
  int size = 0;
  absl::Duration timeout;
  int64_t generation = 0;
  int arrived = 0;
  std::string failure;               // once set, every call fails with it
  std::vector<const void*> inputs;   // per rank, valid between the barriers
  std::vector<std::string> signatures;
  std::map<std::tuple<int, int, int>, std::deque<std::string>> mail;  // (from, to, tag)
  // Groups made by Split, by (generation of the split, color).
  std::map<std::pair<int64_t, int>, std::shared_ptr<Shared>> splits;
};

namespace {

// memcpy that allows empty (possibly null) buffers: empty tensors have no
// data pointer, and memcpy(dst, nullptr, 0) is undefined behaviour.
void CopyBytes(void* dst, const void* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n);
}


template <typename T>
void Reduce(T* acc, const T* x, int64_t n, ReduceOp op) {
  if (op == ReduceOp::kSum) {
    for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
  }
}

void ReduceAny(DType dtype, void* acc, const void* x, int64_t n, ReduceOp op) {
  if (dtype == DType::kF32) {
    Reduce(static_cast<float*>(acc), static_cast<const float*>(x), n, op);
  } else {
    Reduce(static_cast<int32_t*>(acc), static_cast<const int32_t*>(x), n, op);
  }
}

class ThreadComm : public Communicator {
 public:
  ThreadComm(std::shared_ptr<ThreadGroup::Shared> shared, int rank)
      : s_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->size; }
  std::string kind() const override { return "threads"; }

  absl::Status AllReduce(const TensorView& data, ReduceOp op) override {
    KVFOLD_RETURN_IF_ERROR(CheckReduce(data, "AllReduce"));
    std::string mine(static_cast<const char*>(data.data), data.bytes());
    return Collective(Signature("AllReduce", data, int(op)), mine.data(), [&] {
      CopyBytes(data.data, s_->inputs[0], data.bytes());
      for (int r = 1; r < s_->size; ++r) {
        ReduceAny(data.dtype, data.data, s_->inputs[r], data.numel(), op);
      }
    });
  }

  absl::Status AllGather(const TensorView& send, const TensorView& recv) override {
    KVFOLD_RETURN_IF_ERROR(CheckGather(send, recv, s_->size, "AllGather"));
    return Collective(Signature("AllGather", send, 0), send.data, [&] {
      for (int r = 0; r < s_->size; ++r) {
        CopyBytes(static_cast<char*>(recv.data) + r * send.bytes(), s_->inputs[r],
                    send.bytes());
      }
    });
  }

  absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                             ReduceOp op) override {
    KVFOLD_RETURN_IF_ERROR(CheckReduce(send, "ReduceScatter"));
    KVFOLD_RETURN_IF_ERROR(CheckGather(recv, send, s_->size, "ReduceScatter"));
    return Collective(Signature("ReduceScatter", send, int(op)), send.data, [&] {
      const size_t block = recv.bytes();
      CopyBytes(recv.data, static_cast<const char*>(s_->inputs[0]) + rank_ * block, block);
      for (int r = 1; r < s_->size; ++r) {
        ReduceAny(recv.dtype, recv.data,
                  static_cast<const char*>(s_->inputs[r]) + rank_ * block, recv.numel(), op);
      }
    });
  }

  absl::Status Broadcast(const TensorView& data, int root) override {
    KVFOLD_RETURN_IF_ERROR(CheckRank(root, s_->size, "Broadcast root"));
    std::string mine(static_cast<const char*>(data.data), data.bytes());
    return Collective(Signature("Broadcast", data, root), mine.data(), [&] {
      CopyBytes(data.data, s_->inputs[root], data.bytes());
    });
  }

  absl::Status Send(const TensorView& data, int peer, int tag) override {
    KVFOLD_RETURN_IF_ERROR(CheckRank(peer, s_->size, "Send peer"));
    std::lock_guard<std::mutex> lock(s_->mu);
    if (!s_->failure.empty()) return absl::AbortedError(s_->failure);
    s_->mail[{rank_, peer, tag}].emplace_back(static_cast<const char*>(data.data),
                                              data.bytes());
    s_->changed.notify_all();
    return absl::OkStatus();
  }

  absl::Status Recv(const TensorView& data, int peer, int tag) override {
    KVFOLD_RETURN_IF_ERROR(CheckRank(peer, s_->size, "Recv peer"));
    std::unique_lock<std::mutex> lock(s_->mu);
    auto key = std::make_tuple(peer, rank_, tag);
    auto ready = [&] {
      auto it = s_->mail.find(key);
      return !s_->failure.empty() || (it != s_->mail.end() && !it->second.empty());
    };
    if (!s_->changed.wait_for(lock, absl::ToChronoNanoseconds(s_->timeout), ready)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "threads rank ", rank_, ": Recv from rank ", peer, " tag ", tag, " timed out after ",
          absl::FormatDuration(s_->timeout)));
    }
    if (!s_->failure.empty()) return absl::AbortedError(s_->failure);
    std::string msg = std::move(s_->mail[key].front());
    s_->mail[key].pop_front();
    if (msg.size() != data.bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "threads rank ", rank_, ": Recv of ", data.bytes(), " bytes got a message of ",
          msg.size(), " bytes from rank ", peer));
    }
    CopyBytes(data.data, msg.data(), msg.size());
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Probe(int peer, int tag) override {
    KVFOLD_RETURN_IF_ERROR(CheckRank(peer, s_->size, "Probe peer"));
    std::lock_guard<std::mutex> lock(s_->mu);
    if (!s_->failure.empty()) return absl::AbortedError(s_->failure);
    auto it = s_->mail.find(std::make_tuple(peer, rank_, tag));
    return it != s_->mail.end() && !it->second.empty();
  }

  absl::Status Barrier() override {
    return Collective("Barrier", nullptr, [] {});
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    const std::pair<int, int> mine{color, key};
    std::unique_ptr<Communicator> out;
    KVFOLD_RETURN_IF_ERROR(Collective("Split", &mine, [&] {
      std::vector<std::pair<int, int>> members;  // (key, rank) of my color
      for (int r = 0; r < s_->size; ++r) {
        const auto* p = static_cast<const std::pair<int, int>*>(s_->inputs[r]);
        if (p->first == color) members.push_back({p->second, r});
      }
      std::sort(members.begin(), members.end());
      const int index = int(std::find(members.begin(), members.end(),
                                      std::make_pair(key, rank_)) - members.begin());
      std::lock_guard<std::mutex> lock(s_->mu);
      // The generation stays put until every rank has left this collective.
      std::shared_ptr<ThreadGroup::Shared>& group = s_->splits[{s_->generation, color}];
      if (group == nullptr) group = NewShared(int(members.size()), s_->timeout);
      out = std::make_unique<ThreadComm>(group, index);
    }));
    return out;
  }

  static std::shared_ptr<ThreadGroup::Shared> NewShared(int size, absl::Duration timeout) {
    auto shared = std::make_shared<ThreadGroup::Shared>();
    shared->size = size;
    shared->timeout = timeout;
    shared->inputs.assign(size, nullptr);
    shared->signatures.assign(size, "");
    return shared;
  }

 private:
  static std::string Signature(const char* op, const TensorView& t, int arg) {
    return absl::StrCat(op, "/", DTypeName(t.dtype), "/", t.numel(), "/", arg);
  }

  // Waits until every rank has arrived at this point (a reusable barrier).
  // `lock` holds s_->mu.
  absl::Status Arrive(const std::string& what, std::unique_lock<std::mutex>& lock) {
    if (!s_->failure.empty()) return absl::AbortedError(s_->failure);
    const int64_t generation = s_->generation;
    if (++s_->arrived == s_->size) {
      s_->arrived = 0;
      ++s_->generation;
      s_->changed.notify_all();
      return absl::OkStatus();
    }
    auto done = [&] { return s_->generation != generation || !s_->failure.empty(); };
    if (!s_->changed.wait_for(lock, absl::ToChronoNanoseconds(s_->timeout), done)) {
      s_->failure = absl::StrCat("threads rank ", rank_, ": ", what, " timed out after ",
                                 absl::FormatDuration(s_->timeout),
                                 " waiting for the other ranks");
      s_->changed.notify_all();
      return absl::DeadlineExceededError(s_->failure);
    }
    if (!s_->failure.empty()) return absl::AbortedError(s_->failure);
    return absl::OkStatus();
  }

  // Deposits `input`, meets every rank, runs `compute` (which may read all
  // ranks' inputs), and meets again so no input is released early.
  absl::Status Collective(const std::string& signature, const void* input,
                          const std::function<void()>& compute) {
    std::unique_lock<std::mutex> lock(s_->mu);
    s_->inputs[rank_] = input;
    s_->signatures[rank_] = signature;
    KVFOLD_RETURN_IF_ERROR(Arrive(signature, lock));
    for (int r = 0; r < s_->size; ++r) {
      if (s_->signatures[r] != signature) {
        const std::string error = absl::StrCat("threads: rank ", rank_, " called ", signature,
                                               " but rank ", r, " called ",
                                               s_->signatures[r]);
        KVFOLD_RETURN_IF_ERROR(Arrive(signature, lock));
        return absl::InvalidArgumentError(error);
      }
    }
    lock.unlock();
    compute();
    lock.lock();
    return Arrive(signature, lock);
  }

  std::shared_ptr<ThreadGroup::Shared> s_;
  int rank_;
};

}  // namespace

ThreadGroup::ThreadGroup(int size, absl::Duration timeout)
    : shared_(ThreadComm::NewShared(size, timeout)) {
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<ThreadComm>(shared_, r));
}

ThreadGroup::~ThreadGroup() = default;

}  // namespace kvfold
