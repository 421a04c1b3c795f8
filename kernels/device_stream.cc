#include "kernels/device_stream.h"

#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "kernels/status_macros.h"

#ifdef KVFOLD_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace kvfold {

bool BuiltWithCuda() {
#ifdef KVFOLD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int CudaDeviceCount(std::string* why) {
#ifdef KVFOLD_WITH_CUDA
  int count = 0;
  absl::Status s = cuda::DeviceCount(&count);
  if (!s.ok()) {
    if (why != nullptr) *why = std::string(s.message());
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "the CUDA runtime reports no device";
  return count;
#else
  if (why != nullptr) *why = "this binary was built without CUDA (build with --config=cuda)";
  return 0;
#endif
}

absl::StatusOr<Device> ParseDevice(const std::string& value) {
  if (value == "cpu") return Device::Cpu();
  std::string why;
  if (value == "auto") {
    return CudaDeviceCount(&why) > 0 ? Device::Cuda(0) : Device::Cpu();
  }
  int index = 0;
  if (value == "cuda" ||
      (absl::StartsWith(value, "cuda:") && absl::SimpleAtoi(value.substr(5), &index))) {
    const int count = CudaDeviceCount(&why);
    if (count == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device=", value, ": no usable CUDA device (", why,
          "); use --device=cpu"));
    }
    if (index < 0 || index >= count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--device=", value, ": there are ", count, " CUDA devices (cuda:0..cuda:",
          count - 1, ")"));
    }
    return Device::Cuda(index);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--device=", value, ": expected auto, cpu, cuda or cuda:N"));
}

std::string DescribeDevice(Device device) {
  if (device.kind == Device::Kind::kCpu) return "cpu";
#ifdef KVFOLD_WITH_CUDA
  absl::StatusOr<std::string> name = cuda::DeviceName(device.index);
  if (name.ok()) return absl::StrCat(device.ToString(), " ", *name);
#endif
  return device.ToString();
}

absl::StatusOr<double> DeviceMemoryBytes(Device device) {
  if (device.kind == Device::Kind::kCpu) {
    return double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  }
#ifdef KVFOLD_WITH_CUDA
  size_t free_bytes = 0;
  KVFOLD_RETURN_IF_ERROR(cuda::FreeMemory(device.index, &free_bytes));
  return double(free_bytes);
#else
  return absl::UnimplementedError(
      "this binary was built without CUDA (build with --config=cuda)");
#endif
}

absl::StatusOr<std::unique_ptr<DeviceStream>> DeviceStream::Open(
    Device device, ThreadPool* pool, OpTimers* timers) {
  std::unique_ptr<DeviceStream> ds(new DeviceStream());
  ds->stream_.device = device;
  ds->stream_.pool = pool;
  ds->stream_.timers = timers;
  if (device.kind == Device::Kind::kCuda) {
#ifdef KVFOLD_WITH_CUDA
    absl::StatusOr<cuda::Context*> cx = cuda::Context::Create(device.index);
    if (!cx.ok()) return cx.status();
    ds->stream_.cuda = *cx;
#else
    return absl::UnimplementedError(
        "this binary was built without CUDA (build with --config=cuda)");
#endif
  }
  return ds;
}

DeviceStream::~DeviceStream() {
#ifdef KVFOLD_WITH_CUDA
  delete stream_.cuda;
#endif
}

absl::Status DeviceStream::Synchronize() const {
#ifdef KVFOLD_WITH_CUDA
  if (stream_.device.kind == Device::Kind::kCuda) return cuda::Synchronize();
#endif
  return absl::OkStatus();
}

}  // namespace kvfold
