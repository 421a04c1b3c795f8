#include "kernels/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "kernels/tensor.h"

namespace kvfold {
namespace {

TEST(DTypeTest, Bf16RoundTripAndRounding) {
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.5f)), 1.5f);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToF32(0xc000), -2.0f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0.
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

TEST(DTypeTest, F16KnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x0200), std::ldexp(1.0f, -15));  // subnormal
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DTypeTest, F16RoundTripAllFinite) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf / NaN
    const float f = F16ToF32(static_cast<uint16_t>(h));
    const uint16_t back = F32ToF16(f);
    if (f == 0.0f) {
      EXPECT_EQ(back & 0x7fff, 0) << h;
    } else {
      EXPECT_EQ(back, h) << h;
    }
  }
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);  // overflow -> inf
}

TEST(TensorTest, MoveAndExplicitCopy) {
  Tensor t({3, 5}, DType::kF32);
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.bytes(), 60u);
  t.as<float>()[7] = 2.5f;
  Tensor c = t.Copy();
  Tensor m = std::move(t);
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(m.as<float>()[7], 2.5f);
  EXPECT_EQ(c.as<float>()[7], 2.5f);
  EXPECT_EQ(c.as<float>()[0], 0.0f);
  EXPECT_EQ(ShapeString(c.shape()), "[3, 5]");
  EXPECT_EQ(Tensor().numel(), 0);
  EXPECT_EQ(Tensor().bytes(), 0u);
  EXPECT_TRUE(Tensor().Copy().empty());
}

}  // namespace
}  // namespace kvfold
