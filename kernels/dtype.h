// Element types, devices and the scalar conversions between storage types and f32.
#ifndef KVFOLD_KERNELS_DTYPE_H_
#define KVFOLD_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace kvfold {

enum class DType { kF32, kF16, kBF16, kI32 };

size_t DTypeSize(DType t);
const char* DTypeName(DType t);

struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;

  static Device Cpu() { return {Kind::kCpu, 0}; }
  static Device Cuda(int i) { return {Kind::kCuda, i}; }
  bool operator==(const Device& o) const {
    return kind == o.kind && index == o.index;
  }
  std::string ToString() const;
};

// bf16 is the top half of an f32; rounding to nearest even on the way down.
inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts n elements of `src` (of type `t`) to f32.
void ConvertToF32(DType t, const void* src, float* dst, size_t n);

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_DTYPE_H_
