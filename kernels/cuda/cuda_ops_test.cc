// CUDA ops against the CPU ops. Without a usable GPU every test is SKIPPED
// with the reason, never passed.
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace kvfold {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    absl::Status s = cuda::DeviceCount(&count);
    if (!s.ok()) GTEST_SKIP() << "no usable CUDA device: " << s.message();
    if (count == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaOpsTest, RmsNormMatchesCpu) {
  const int64_t rows = 7, dim = 1001;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<float> x(rows * dim), w(dim), want(rows * dim), got(rows * dim);
  for (float& v : x) v = dist(rng);
  for (float& v : w) v = dist(rng);
  ASSERT_TRUE(RmsNorm(Stream{}, x.data(), w.data(), 1e-5f, want.data(), rows, dim).ok());
  float *dx, *dw, *dy;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dw, w.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, got.size() * 4), cudaSuccess);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  ASSERT_TRUE(cuda::RmsNorm(nullptr, dx, dw, 1e-5f, dy, rows, dim).ok());
  ASSERT_EQ(cudaMemcpy(got.data(), dy, got.size() * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dy);
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, double(std::abs(got[i] - want[i])));
  EXPECT_LT(err, 1e-5);
}

}  // namespace
}  // namespace kvfold
