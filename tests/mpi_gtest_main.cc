#include "tests/mpi_gtest_main.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"

namespace kvfold {
namespace {
Communicator* g_world = nullptr;
}  // namespace

Communicator& TestWorld() { return *g_world; }

}  // namespace kvfold

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto world = kvfold::MpiCommunicator::World(absl::Seconds(60));
  if (!world.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(world.status().message()).c_str());
    return 2;
  }
  kvfold::g_world = world->get();
  int rc = RUN_ALL_TESTS();
  // Every rank fails when one did.
  std::vector<int32_t> failed = {rc != 0};
  kvfold::TensorView v{failed.data(), kvfold::DType::kI32, kvfold::Device::Cpu(), {1}};
  if (!(*world)->AllReduce(v, kvfold::ReduceOp::kMax).ok()) failed[0] = 1;
  world->reset();
  kvfold::MpiCommunicator::Finalize();
  return failed[0];
}
