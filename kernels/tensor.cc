#include "kernels/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace kvfold {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void Tensor::Free::operator()(void* p) const { std::free(p); }

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), dtype_(dtype), device_(device) {
  // Only host memory so far; the CUDA backend adds its allocator here.
  // Not bytes(): that is 0 until the buffer exists.
  const size_t n = NumElements(shape_) * DTypeSize(dtype_);
  const size_t rounded = (n + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  data_.reset(p);
}

Tensor Tensor::Copy() const {
  if (empty()) return Tensor();
  Tensor t(shape_, dtype_, device_);
  std::memcpy(t.data(), data(), bytes());
  return t;
}

}  // namespace kvfold
