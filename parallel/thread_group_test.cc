// The collective suite on in-process thread groups of 1-5 ranks, plus a
// rank that never arrives (timeout, no hang) and mismatched calls.
#include "parallel/thread_group.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/collective_suite.h"

namespace kvfold {
namespace {

TEST(ThreadGroupTest, CollectiveSuite) {
  for (int size : {1, 2, 3, 5}) {
    ThreadGroup group(size);
    std::vector<std::vector<std::string>> failures(size);
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] { failures[r] = RunCollectiveSuite(*group.rank(r)); });
    }
    for (std::thread& t : threads) t.join();
    for (int r = 0; r < size; ++r) {
      for (const std::string& f : failures[r]) ADD_FAILURE() << f;
    }
  }
}

TEST(ThreadGroupTest, MissingRankTimesOut) {
  ThreadGroup group(3, absl::Milliseconds(200));
  std::vector<absl::Status> status(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {  // rank 2 never calls
    threads.emplace_back([&, r] { status[r] = group.rank(r)->Barrier(); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : status) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("timed out"), absl::string_view::npos) << s;
  }
  // The group is now failed: later calls fail at once.
  EXPECT_FALSE(group.rank(2)->Barrier().ok());
}

TEST(ThreadGroupTest, MismatchedCollectivesFailOnEveryRank) {
  ThreadGroup group(2, absl::Seconds(5));
  std::vector<float> a(4), b(8);
  TensorView va{a.data(), DType::kF32, Device::Cpu(), {4}};
  TensorView vb{b.data(), DType::kF32, Device::Cpu(), {8}};
  absl::Status s0, s1;
  std::thread t0([&] { s0 = group.rank(0)->AllReduce(va, ReduceOp::kSum); });
  std::thread t1([&] { s1 = group.rank(1)->AllReduce(vb, ReduceOp::kSum); });
  t0.join();
  t1.join();
  EXPECT_FALSE(s0.ok());
  EXPECT_FALSE(s1.ok());
  EXPECT_NE(s0.message().find("but rank 1 called"), absl::string_view::npos) << s0;
}

}  // namespace
}  // namespace kvfold
