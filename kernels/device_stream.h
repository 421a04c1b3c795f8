// Opening a Stream on a device: the CPU (with a thread pool) or a CUDA
// device (with its own cuda::Context). Also parses --device values.
#ifndef KVFOLD_KERNELS_DEVICE_STREAM_H_
#define KVFOLD_KERNELS_DEVICE_STREAM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace kvfold {

// Whether this binary has the CUDA backend, and how many devices it sees
// (0 with the reason in `why` when none is usable).
bool BuiltWithCuda();
int CudaDeviceCount(std::string* why);

// "cpu", "cuda", "cuda:N" or "auto" (the first CUDA device when one is
// usable, else the CPU). Errors name the value and what is possible.
absl::StatusOr<Device> ParseDevice(const std::string& value);

// A human-readable description for logs and benchmark output.
std::string DescribeDevice(Device device);

// Memory a job may use on `device`, in bytes: the machine's physical memory
// for the CPU, the device's free memory for CUDA (an error without CUDA).
absl::StatusOr<double> DeviceMemoryBytes(Device device);

class DeviceStream {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceStream>> Open(Device device,
                                                            ThreadPool* pool,
                                                            OpTimers* timers);
  ~DeviceStream();
  const Stream& stream() const { return stream_; }
  // Waits for the device's queued work (timing; no-op on the CPU).
  absl::Status Synchronize() const;

 private:
  DeviceStream() = default;
  Stream stream_;
};

}  // namespace kvfold

#endif  // KVFOLD_KERNELS_DEVICE_STREAM_H_
