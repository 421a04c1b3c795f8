// NcclCommunicator with one rank per visible GPU (at most 8; NCCL refuses two
// ranks on one GPU), bootstrapped by a ThreadGroup, one thread per rank: the
// shared collective suite through a host<->device staging adapter, Split,
// NCCL's in-order point-to-point, a Recv that times out, and bad input.
// Without a usable GPU every test is skipped with the reason, never passed.
#include "parallel/nccl/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "parallel/collective_suite.h"
#include "parallel/thread_group.h"

namespace kvfold {
namespace {

// How many ranks to run (one per GPU, at most 8), or why there are none.
absl::StatusOr<int> GpuCount() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat(
        "no usable GPU: cudaGetDeviceCount failed with ", cudaGetErrorName(e),
        " (", int(e), "): ", cudaGetErrorString(e)));
  }
  if (n == 0) {
    return absl::UnavailableError(
        "no usable GPU: cudaGetDeviceCount found none");
  }
  return std::min(n, 8);
}

#define SKIP_WITHOUT_GPU(ranks)                                        \
  absl::StatusOr<int> ranks##_or = GpuCount();                         \
  if (!ranks##_or.ok()) GTEST_SKIP() << ranks##_or.status().message(); \
  const int ranks = *ranks##_or

using Body =
    std::function<void(std::unique_ptr<NcclCommunicator>, Communicator&)>;

// Runs `body` on n threads, rank r on GPU r, each with its NCCL communicator
// (the body's to keep or drop) and its rank of the host bootstrap group.
void RunRanks(int n, const Body& body) {
  ThreadGroup group(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      absl::StatusOr<std::unique_ptr<NcclCommunicator>> nccl =
          NcclCommunicator::Create(*group.rank(r), r);
      ASSERT_TRUE(nccl.ok()) << nccl.status();
      body(*std::move(nccl), *group.rank(r));
    });
  }
  for (std::thread& t : threads) t.join();
}

// A device copy of a host tensor (test-only, so plain synchronous copies).
class DeviceCopy {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceCopy>> Of(
      const TensorView& host) {
    std::unique_ptr<DeviceCopy> d(new DeviceCopy(host));
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
      return absl::InternalError("cudaGetDevice failed");
    }
    d->view_.device = Device::Cuda(device);
    if (host.bytes() == 0) return d;
    // A pageable copy may return before its DMA ends, and NCCL's stream does
    // not wait for the default stream: synchronize.
    if (cudaMalloc(&d->view_.data, host.bytes()) != cudaSuccess ||
        cudaMemcpy(d->view_.data, host.data, host.bytes(),
                   cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
      return absl::InternalError("staging a tensor on the device failed");
    }
    return d;
  }
  ~DeviceCopy() {
    if (view_.data != nullptr) cudaFree(view_.data);
  }
  const TensorView& view() const { return view_; }
  absl::Status CopyBack(const TensorView& host) const {
    if (host.bytes() == 0) return absl::OkStatus();
    if (cudaMemcpy(host.data, view_.data, host.bytes(),
                   cudaMemcpyDeviceToHost) != cudaSuccess) {
      return absl::InternalError("copying a tensor back to the host failed");
    }
    return absl::OkStatus();
  }

 private:
  explicit DeviceCopy(const TensorView& host) : view_(host) {
    view_.data = nullptr;
  }
  TensorView view_;
};

// The suite works on host vectors: this stages every tensor on the device,
// calls NCCL, and copies results back. Send/Recv go over the host group
// instead: the suite sends before it receives and receives tags out of
// order, which NCCL (rendezvous, in order, no tags) cannot do; NCCL's own
// point-to-point is tested in InOrderPointToPoint.
class Staged : public Communicator {
 public:
  Staged(Communicator* nccl, Communicator* host) : nccl_(nccl), host_(host) {}
  Staged(std::unique_ptr<Communicator> nccl, std::unique_ptr<Communicator> host)
      : Staged(nccl.get(), host.get()) {
    owned_nccl_ = std::move(nccl);
    owned_host_ = std::move(host);
  }

  int rank() const override { return nccl_->rank(); }
  int size() const override { return nccl_->size(); }
  std::string kind() const override { return nccl_->kind(); }

  absl::Status AllReduce(const TensorView& data, ReduceOp op) override {
    return OnDevice({data}, [&](const std::vector<TensorView>& d) {
      return nccl_->AllReduce(d[0], op);
    });
  }
  absl::Status AllGather(const TensorView& send,
                         const TensorView& recv) override {
    return OnDevice({send, recv}, [&](const std::vector<TensorView>& d) {
      return nccl_->AllGather(d[0], d[1]);
    });
  }
  absl::Status ReduceScatter(const TensorView& send, const TensorView& recv,
                             ReduceOp op) override {
    return OnDevice({send, recv}, [&](const std::vector<TensorView>& d) {
      return nccl_->ReduceScatter(d[0], d[1], op);
    });
  }
  absl::Status Broadcast(const TensorView& data, int root) override {
    return OnDevice({data}, [&](const std::vector<TensorView>& d) {
      return nccl_->Broadcast(d[0], root);
    });
  }
  absl::Status Send(const TensorView& data, int peer, int tag) override {
    return host_->Send(data, peer, tag);
  }
  absl::Status Recv(const TensorView& data, int peer, int tag) override {
    return host_->Recv(data, peer, tag);
  }
  absl::Status Barrier() override { return nccl_->Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color,
                                                      int key) override {
    absl::StatusOr<std::unique_ptr<Communicator>> nccl =
        nccl_->Split(color, key);
    if (!nccl.ok()) return nccl.status();
    absl::StatusOr<std::unique_ptr<Communicator>> host =
        host_->Split(color, key);
    if (!host.ok()) return host.status();
    return std::unique_ptr<Communicator>(
        new Staged(*std::move(nccl), *std::move(host)));
  }

 private:
  // Stages `host`, runs `op` on the device views, copies all back on success.
  absl::Status OnDevice(
      const std::vector<TensorView>& host,
      const std::function<absl::Status(const std::vector<TensorView>&)>& op) {
    std::vector<std::unique_ptr<DeviceCopy>> copies;
    std::vector<TensorView> views;
    for (const TensorView& t : host) {
      absl::StatusOr<std::unique_ptr<DeviceCopy>> d = DeviceCopy::Of(t);
      if (!d.ok()) return d.status();
      views.push_back((*d)->view());
      copies.push_back(*std::move(d));
    }
    if (absl::Status s = op(views); !s.ok()) return s;
    for (size_t i = 0; i < host.size(); ++i) {
      if (absl::Status s = copies[i]->CopyBack(host[i]); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  Communicator* nccl_;
  Communicator* host_;
  std::unique_ptr<Communicator> owned_nccl_, owned_host_;
};

TEST(NcclCommunicatorTest, CollectiveSuite) {
  SKIP_WITHOUT_GPU(n);
  RunRanks(n, [](std::unique_ptr<NcclCommunicator> nccl, Communicator& host) {
    EXPECT_EQ(nccl->kind(), "nccl");
    Staged staged(nccl.get(), &host);
    for (const std::string& f : RunCollectiveSuite(staged)) ADD_FAILURE() << f;
  });
}

// Reads back one value per rank gathered on the device.
std::vector<int32_t> GatherRanks(Communicator& comm, int32_t mine) {
  int32_t* d = nullptr;
  std::vector<int32_t> all(comm.size(), -1);
  if (cudaMalloc(&d, sizeof(int32_t) * (all.size() + 1)) != cudaSuccess) {
    return {};
  }
  cudaMemcpy(d, &mine, sizeof mine, cudaMemcpyHostToDevice);
  int device = 0;
  cudaGetDevice(&device);
  const TensorView send{d, DType::kI32, Device::Cuda(device), {1}};
  const TensorView recv{
      d + 1, DType::kI32, Device::Cuda(device), {comm.size()}};
  const absl::Status s = comm.AllGather(send, recv);
  EXPECT_TRUE(s.ok()) << s;
  cudaMemcpy(all.data(), d + 1, sizeof(int32_t) * all.size(),
             cudaMemcpyDeviceToHost);
  cudaFree(d);
  return all;
}

TEST(NcclCommunicatorTest, SplitByParityOutlivesParent) {
  SKIP_WITHOUT_GPU(n);
  RunRanks(n, [n](std::unique_ptr<NcclCommunicator> nccl, Communicator&) {
    const int r = nccl->rank();
    absl::StatusOr<std::unique_ptr<Communicator>> half = nccl->Split(r % 2, r);
    ASSERT_TRUE(half.ok()) << half.status();
    std::vector<int32_t> members;
    for (int q = r % 2; q < n; q += 2) members.push_back(q);
    EXPECT_EQ((*half)->size(), int(members.size()));
    EXPECT_EQ((*half)->rank(), r / 2);
    EXPECT_EQ((*half)->kind(), "nccl");
    EXPECT_EQ(GatherRanks(**half, r), members);
    // Colors are >= 0; a negative one still takes part, so nobody hangs.
    absl::StatusOr<std::unique_ptr<Communicator>> none =
        nccl->Split(r == 0 ? -1 : 0, r);
    if (r == 0) {
      EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument)
          << none.status();
    } else {
      ASSERT_TRUE(none.ok()) << none.status();
      EXPECT_EQ((*none)->size(), n - 1);
    }
    // Independent of its parent: still usable after the parent is gone.
    nccl.reset();
    EXPECT_EQ(GatherRanks(**half, r), members);
  });
}

TEST(NcclCommunicatorTest, InOrderPointToPoint) {
  SKIP_WITHOUT_GPU(n);
  if (n < 2) {
    GTEST_SKIP() << "NCCL point-to-point needs two GPUs (one rank per GPU); "
                    "found 1";
  }
  RunRanks(n, [n](std::unique_ptr<NcclCommunicator> nccl, Communicator&) {
    const int r = nccl->rank();
    // Pairs (0,1), (2,3), ...; an odd last rank sits out.
    const int peer = r ^ 1;
    if (peer < n) {
      std::vector<float> a(5), b(3);
      float* d = nullptr;
      ASSERT_EQ(cudaMalloc(&d, sizeof(float) * 8), cudaSuccess);
      const TensorView da{d, DType::kF32, Device::Cuda(r), {5}};
      const TensorView db{d + 5, DType::kF32, Device::Cuda(r), {3}};
      // Two messages of different sizes, received in the order sent; the
      // lower rank sends first since a Send waits for its Recv.
      for (int sender : {r & ~1, r | 1}) {
        if (sender == r) {
          std::fill(a.begin(), a.end(), float(r));
          std::fill(b.begin(), b.end(), float(-r));
          cudaMemcpy(d, a.data(), sizeof(float) * 5, cudaMemcpyHostToDevice);
          cudaMemcpy(d + 5, b.data(), sizeof(float) * 3,
                     cudaMemcpyHostToDevice);
          EXPECT_EQ(nccl->Send(da, peer, 1), absl::OkStatus());
          EXPECT_EQ(nccl->Send(db, peer, 2), absl::OkStatus());
        } else {
          EXPECT_EQ(nccl->Recv(da, peer, 1), absl::OkStatus());
          EXPECT_EQ(nccl->Recv(db, peer, 2), absl::OkStatus());
          cudaMemcpy(a.data(), d, sizeof(float) * 5, cudaMemcpyDeviceToHost);
          cudaMemcpy(b.data(), d + 5, sizeof(float) * 3,
                     cudaMemcpyDeviceToHost);
          EXPECT_EQ(a[4], float(peer));
          EXPECT_EQ(b[2], float(-peer));
        }
      }
      cudaFree(d);
    }
    EXPECT_EQ(nccl->Barrier(), absl::OkStatus());
  });
}

TEST(NcclCommunicatorTest, RecvWithoutSendTimesOut) {
  SKIP_WITHOUT_GPU(n);
  if (n < 2) {
    GTEST_SKIP() << "a Recv from another rank needs two GPUs (one rank per "
                    "GPU); found 1";
  }
  RunRanks(2, [](std::unique_ptr<NcclCommunicator> nccl, Communicator& host) {
    nccl->set_timeout(absl::Seconds(1));
    if (nccl->rank() == 0) {
      float* d = nullptr;
      ASSERT_EQ(cudaMalloc(&d, sizeof(float) * 4), cudaSuccess);
      const absl::Time start = absl::Now();
      const absl::Status s =
          nccl->Recv({d, DType::kF32, Device::Cuda(0), {4}}, 1, 7);
      EXPECT_LT(absl::Now() - start, absl::Seconds(30));
      EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
      EXPECT_NE(
          s.message().find("nccl rank 0: Recv from rank 1 tag 7 timed out"),
          absl::string_view::npos)
          << s;
      // Aborted: later calls fail at once.
      EXPECT_EQ(nccl->Barrier().code(), absl::StatusCode::kAborted);
      cudaFree(d);
    }
    // Rank 1 never sends; it keeps its communicator until rank 0 is done.
    EXPECT_EQ(host.Barrier(), absl::OkStatus());
  });
}

TEST(NcclCommunicatorTest, RejectsBadInputWithoutStarting) {
  SKIP_WITHOUT_GPU(n);
  RunRanks(n, [n](std::unique_ptr<NcclCommunicator> nccl, Communicator&) {
    const int r = nccl->rank();
    std::vector<float> host(4);
    const TensorView on_host{host.data(), DType::kF32, Device::Cpu(), {4}};
    EXPECT_EQ(nccl->AllReduce(on_host, ReduceOp::kSum).code(),
              absl::StatusCode::kInvalidArgument);
    float* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, sizeof(float) * 4), cudaSuccess);
    const TensorView dev{d, DType::kF32, Device::Cuda(r), {4}};
    EXPECT_EQ(nccl->Send(dev, r, 0).code(),
              absl::StatusCode::kInvalidArgument);  // itself
    EXPECT_EQ(nccl->Send(dev, n, 0).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(nccl->Recv(dev, (r + 1) % n, -1).code(),
              absl::StatusCode::kInvalidArgument);
    cudaFree(d);
    // Nothing was started, so the group is still in step.
    EXPECT_EQ(nccl->Barrier(), absl::OkStatus());
  });
}

}  // namespace
}  // namespace kvfold
