// Tensor (owning, move-only) and TensorView (non-owning) over device memory.
#ifndef KVFOLD_KERNELS_TENSOR_H_
#define KVFOLD_KERNELS_TENSOR_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace kvfold {

using Shape = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);

// A non-owning, row-major (contiguous) view. Cheap to copy.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device;
  Shape shape;

  int64_t numel() const { return NumElements(shape); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  size_t bytes() const { return numel() * DTypeSize(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// Owns a 64-byte aligned buffer on one device. Move-only: copies are explicit
// (Copy()), so their cost is visible at the call site.
class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised. Failing to allocate throws (an internal invariant);
  // where the size comes from the user, use Allocate().
  Tensor(Shape shape, DType dtype, Device device = Device::Cpu());
  static absl::StatusOr<Tensor> Allocate(Shape shape, DType dtype,
                                         Device device = Device::Cpu());
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  Tensor Copy() const;

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return empty() ? 0 : NumElements(shape_); }
  size_t bytes() const { return numel() * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool empty() const { return data_ == nullptr; }

  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T>
  T* as() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data());
  }

  TensorView view() const {
    return {data_.get(), dtype_, device_, shape_};
  }

 private:
  struct Free {
    Device device;
    void operator()(void* p) const;
  };
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
  std::unique_ptr<void, Free> data_;
};

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_TENSOR_H_
