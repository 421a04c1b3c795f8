// The counting wrapper passes the whole collective suite through and counts
// what each call moved.
#include "parallel/counting_communicator.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/collective_suite.h"
#include "parallel/thread_group.h"

namespace kvfold {
namespace {

TEST(CountingCommunicatorTest, ForwardsTheSuiteAndCounts) {
  const int size = 3;
  ThreadGroup group(size);
  std::vector<std::vector<std::string>> failures(size);
  std::vector<OpCount> reduce(size), gather(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      CountingCommunicator c(*group.rank(r));
      failures[r] = RunCollectiveSuite(c);
      c.Reset();
      std::vector<float> x(10), all(30);
      TensorView v{x.data(), DType::kF32, Device::Cpu(), {10}};
      for (int i = 0; i < 4; ++i) EXPECT_TRUE(c.AllReduce(v, ReduceOp::kSum).ok());
      EXPECT_TRUE(c.AllGather(v, {all.data(), DType::kF32, Device::Cpu(), {30}}).ok());
      reduce[r] = c.counts().at("AllReduce");
      gather[r] = c.counts().at("AllGather");
      EXPECT_EQ(c.Total().calls, 5);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < size; ++r) {
    for (const std::string& f : failures[r]) ADD_FAILURE() << f;
    EXPECT_EQ(reduce[r].calls, 4);
    EXPECT_EQ(reduce[r].bytes, 4 * 40);
    EXPECT_EQ(gather[r].calls, 1);
    EXPECT_EQ(gather[r].bytes, 40);  // this rank's block
    EXPECT_GT(reduce[r].seconds, 0.0);
  }
}

// A timeout (a peer that never arrives) breaks the communicator: later calls
// return it at once; a bad argument does not.
TEST(CountingCommunicatorTest, KeepsTheFirstFailure) {
  ThreadGroup group(2, absl::Milliseconds(50));
  CountingCommunicator c(*group.rank(0));
  EXPECT_TRUE(c.failure().ok());
  float x = 1;
  TensorView v{&x, DType::kF32, Device::Cpu(), {1}};
  EXPECT_EQ(c.Broadcast(v, /*root=*/5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(c.failure().ok());
  const absl::Status s = c.AllReduce(v, ReduceOp::kSum);  // rank 1 never comes
  ASSERT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(c.failure(), s);
  const int64_t calls = c.Total().calls;
  EXPECT_EQ(c.AllReduce(v, ReduceOp::kSum), s);
  EXPECT_EQ(c.Total().calls, calls);  // not tried again
}

}  // namespace
}  // namespace kvfold
