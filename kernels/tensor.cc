#include "kernels/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#ifdef KVFOLD_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

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

void Tensor::Free::operator()(void* p) const {
  if (device.kind == Device::Kind::kCpu) {
    std::free(p);
    return;
  }
#ifdef KVFOLD_WITH_CUDA
  cuda::Free(p);
#endif
}

absl::StatusOr<Tensor> Tensor::Allocate(Shape shape, DType dtype,
                                        Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  // Not bytes(): that is 0 until the buffer exists.
  const size_t n = NumElements(t.shape_) * DTypeSize(dtype);
  const size_t rounded = n == 0 ? 64 : (n + 63) / 64 * 64;
  switch (device.kind) {
    case Device::Kind::kCpu: {
      void* p = std::aligned_alloc(64, rounded);
      if (p == nullptr) {
        return absl::ResourceExhaustedError(
            "cannot allocate " + std::to_string(rounded) + " bytes of host memory");
      }
      std::memset(p, 0, rounded);
      t.data_ = std::unique_ptr<void, Free>(p, Free{device});
      return t;
    }
    case Device::Kind::kCuda: {
#ifdef KVFOLD_WITH_CUDA
      absl::StatusOr<void*> p = cuda::Malloc(device.index, rounded);
      if (!p.ok()) return p.status();
      t.data_ = std::unique_ptr<void, Free>(*p, Free{device});
      if (absl::Status s = cuda::Memset(*p, 0, rounded); !s.ok()) return s;
      return t;
#else
      return absl::UnimplementedError(
          "a CUDA tensor needs a binary built with --config=cuda");
#endif
    }
  }
  return absl::InternalError("bad device");
}

Tensor::Tensor(Shape shape, DType dtype, Device device) {
  absl::StatusOr<Tensor> t = Allocate(std::move(shape), dtype, device);
  if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
  *this = std::move(*t);
}

Tensor Tensor::Copy() const {
  if (empty()) return Tensor();
  Tensor t(shape_, dtype_, device_);
  if (device_.kind == Device::Kind::kCpu) {
    std::memcpy(t.data(), data(), bytes());
  } else {
#ifdef KVFOLD_WITH_CUDA
    absl::Status s = cuda::Memcpy(t.data(), data(), bytes(),
                                  cuda::CopyKind::kDeviceToDevice);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
#endif
  }
  return t;
}

}  // namespace kvfold
