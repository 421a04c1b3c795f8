// Device queries, device memory and the per-device Context.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace kvfold::cuda {
namespace {

cudaMemcpyKind Kind(CopyKind k) {
  switch (k) {
    case CopyKind::kHostToDevice:
      return cudaMemcpyHostToDevice;
    case CopyKind::kDeviceToHost:
      return cudaMemcpyDeviceToHost;
    case CopyKind::kDeviceToDevice:
      return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

}  // namespace

absl::Status DeviceCount(int* count) {
  *count = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(count));
  return absl::OkStatus();
}

absl::StatusOr<std::string> DeviceName(int device) {
  cudaDeviceProp p;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&p, device));
  return absl::StrFormat("%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major,
                         p.minor, p.multiProcessorCount,
                         p.totalGlobalMem / double(1 << 30));
}

absl::Status FreeMemory(int device, size_t* free_bytes) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  size_t total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(free_bytes, &total));
  return absl::OkStatus();
}

absl::StatusOr<void*> Malloc(int device, size_t bytes) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 256 : bytes);
  if (e != cudaSuccess) {
    size_t free_bytes = 0, total = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_bytes, &total);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cudaMalloc of %.3f GiB on cuda:%d failed (%s); %.3f GiB of %.3f GiB "
        "free",
        bytes / double(1 << 30), device, cudaGetErrorString(e),
        free_bytes / double(1 << 30), total / double(1 << 30)));
  }
  return p;
}

void Free(void* p) {
  if (p != nullptr) cudaFree(p);
}

absl::Status Memcpy(void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, Kind(kind)));
  return absl::OkStatus();
}

absl::Status Memcpy2D(void* dst, size_t dst_pitch, const void* src,
                      size_t src_pitch, size_t width, size_t rows,
                      CopyKind kind) {
  if (width == 0 || rows == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(
      cudaMemcpy2D(dst, dst_pitch, src, src_pitch, width, rows, Kind(kind)));
  return absl::OkStatus();
}

absl::Status Memset(void* p, int value, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemset(p, value, bytes));
  return absl::OkStatus();
}

absl::Status Synchronize() {
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::StatusOr<Context*> Context::Create(int device) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  Context* cx = new Context();
  cx->device_ = device;
  cublasHandle_t h = nullptr;
  const cublasStatus_t st = cublasCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    delete cx;
    return CublasError(st, "cublasCreate", __FILE__, __LINE__);
  }
  cx->blas_ = h;
  // f32 GEMMs stay exact f32 (no TF32): they are the reference path.
  CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, nullptr));
  return cx;
}

Context::~Context() {
  if (blas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(blas_));
  for (int i = 0; i < kSlots; ++i) Free(workspace_[i]);
}

absl::StatusOr<void*> Context::Workspace(int slot, size_t bytes) {
  if (slot < 0 || slot >= kSlots) {
    return absl::InternalError("bad CUDA workspace slot");
  }
  if (bytes > workspace_bytes_[slot]) {
    // The old buffer may still be read by queued work: wait before freeing.
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
    Free(workspace_[slot]);
    workspace_[slot] = nullptr;
    workspace_bytes_[slot] = 0;
    const size_t grown = bytes + bytes / 4;
    absl::StatusOr<void*> p = Malloc(device_, grown);
    if (!p.ok()) return p.status();
    workspace_[slot] = *p;
    workspace_bytes_[slot] = grown;
  }
  return workspace_[slot];
}

}  // namespace kvfold::cuda
