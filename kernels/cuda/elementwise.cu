// Row and elementwise kernels: RMSNorm, RoPE, softmax, SiLU*mul, adds,
// embedding, KV append/gather, argmax, conversions. f32 arithmetic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 256;

cudaStream_t S(Context& cx) { return static_cast<cudaStream_t>(cx.stream()); }

int Blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 16 ? b : 65535 * 16);
}

// Block-wide sum (kThreads threads); every thread gets the result.
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    if (threadIdx.x == 0) total = v;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();
  return r;
}

__device__ float BlockMax(float v) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, off));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : -FLT_MAX;
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, off));
    if (threadIdx.x == 0) total = v;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();
  return r;
}

__global__ void RmsNormKernel(const float* __restrict__ x,
                              const float* __restrict__ w, float eps,
                              float* out, int64_t dim) {
  const float* xr = x + blockIdx.x * dim;
  float* yr = out + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = rsqrtf(BlockSum(ss) / dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}

// One block per token; pairs (i, i + half) of every head rotate together.
__global__ void RopeKernel(float* x, const int32_t* __restrict__ positions,
                           const float* __restrict__ inv_freq, int64_t heads,
                           int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[blockIdx.x]);
  float* row = x + blockIdx.x * heads * head_dim;
  for (int64_t j = threadIdx.x; j < heads * half; j += blockDim.x) {
    const int64_t h = j / half, i = j % half;
    float sn, cs;
    sincosf(pos * inv_freq[i], &sn, &cs);
    float* p = row + h * head_dim;
    const float a = p[i], b = p[i + half];
    p[i] = a * cs - b * sn;
    p[i + half] = b * cs + a * sn;
  }
}

__global__ void SoftmaxKernel(float* x, int64_t cols) {
  float* row = x + blockIdx.x * cols;
  float mx = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = BlockMax(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / BlockSum(sum);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

__global__ void SiluMulKernel(const float* gate, const float* up, float* out,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows,
                              int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] += bias[i % cols];
  }
}

__device__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ float Load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }

template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids,
                                int64_t dim, float* out) {
  const int32_t id = ids[blockIdx.x];
  float* dst = out + blockIdx.x * dim;
  if (id < 0) {  // held by another tensor-parallel rank
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = 0.0f;
    return;
  }
  const T* row = table + int64_t(id) * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = Load(row, j);
}

// One block per (token, head): rows of d floats into [heads, cap, d].
__global__ void AppendKvKernel(const float* k, const float* v, int64_t heads,
                               int64_t d, float* keys, float* values,
                               int64_t cap, int64_t offset) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const float* ks = k + (t * heads + h) * d;
  const float* vs = v + (t * heads + h) * d;
  float* kd = keys + (h * cap + offset + t) * d;
  float* vd = values + (h * cap + offset + t) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    kd[j] = ks[j];
    vd[j] = vs[j];
  }
}

// Pass 1 copies kept rows to `tmp` [heads, count, d]; pass 2 writes them back.
__global__ void GatherKernel(const float* data, const int32_t* keep,
                             int64_t count, int64_t cap, int64_t d,
                             float* tmp) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const float* src = data + (h * cap + keep[h * count + i]) * d;
  float* dst = tmp + (h * count + i) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

__global__ void ScatterBackKernel(const float* tmp, int64_t count, int64_t cap,
                                  int64_t d, float* data) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const float* src = tmp + (h * count + i) * d;
  float* dst = data + (h * cap + i) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

__global__ void ArgmaxKernel(const float* x, int64_t cols, int32_t* out) {
  const float* row = x + blockIdx.x * cols;
  float best = -FLT_MAX;
  int64_t arg = cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    if (row[j] > best || arg == cols) {
      best = row[j];
      arg = j;
    }
  }
  // Largest value, then smallest index.
  __shared__ float vals[kThreads];
  __shared__ int64_t args[kThreads];
  vals[threadIdx.x] = best;
  args[threadIdx.x] = arg;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const float ov = vals[threadIdx.x + stride];
      const int64_t oa = args[threadIdx.x + stride];
      if (oa < cols && (args[threadIdx.x] == cols || ov > vals[threadIdx.x] ||
                        (ov == vals[threadIdx.x] && oa < args[threadIdx.x]))) {
        vals[threadIdx.x] = ov;
        args[threadIdx.x] = oa;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int32_t>(args[0]);
}

template <typename T>
__global__ void ConvertKernel(const float* x, int64_t n, T* out);

template <>
__global__ void ConvertKernel(const float* x, int64_t n, __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(x[i]);
  }
}

template <>
__global__ void ConvertKernel(const float* x, int64_t n, __half* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __float2half_rn(x[i]);
  }
}

unsigned Grid(int64_t rows) { return static_cast<unsigned>(rows); }

}  // namespace

absl::Status RmsNorm(Context& cx, const float* x, const float* w, float eps,
                     float* out, int64_t rows, int64_t dim) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<Grid(rows), kThreads, 0, S(cx)>>>(x, w, eps, out, dim);
  CUDA_RETURN_IF_LAUNCH_FAILED("rms_norm");
  return absl::OkStatus();
}

absl::Status ApplyRope(Context& cx, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim) {
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError("rope: head_dim must be even");
  }
  if (n == 0) return absl::OkStatus();
  RopeKernel<<<Grid(n), kThreads, 0, S(cx)>>>(x, positions, inv_freq, heads,
                                               head_dim);
  CUDA_RETURN_IF_LAUNCH_FAILED("rope");
  return absl::OkStatus();
}

absl::Status Softmax(Context& cx, float* x, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return absl::OkStatus();
  SoftmaxKernel<<<Grid(rows), kThreads, 0, S(cx)>>>(x, cols);
  CUDA_RETURN_IF_LAUNCH_FAILED("softmax");
  return absl::OkStatus();
}

absl::Status SiluMul(Context& cx, const float* gate, const float* up,
                     float* out, int64_t n) {
  if (n == 0) return absl::OkStatus();
  SiluMulKernel<<<Blocks(n), kThreads, 0, S(cx)>>>(gate, up, out, n);
  CUDA_RETURN_IF_LAUNCH_FAILED("silu_mul");
  return absl::OkStatus();
}

absl::Status AddInPlace(Context& cx, float* x, const float* y, int64_t n) {
  if (n == 0) return absl::OkStatus();
  AddKernel<<<Blocks(n), kThreads, 0, S(cx)>>>(x, y, n);
  CUDA_RETURN_IF_LAUNCH_FAILED("add");
  return absl::OkStatus();
}

absl::Status AddBias(Context& cx, float* y, const float* bias, int64_t rows,
                     int64_t cols) {
  if (rows * cols == 0) return absl::OkStatus();
  AddBiasKernel<<<Blocks(rows * cols), kThreads, 0, S(cx)>>>(y, bias, rows, cols);
  CUDA_RETURN_IF_LAUNCH_FAILED("add_bias");
  return absl::OkStatus();
}

absl::Status Embedding(Context& cx, const void* table, DType type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out) {
  if (n == 0) return absl::OkStatus();
  switch (type) {
    case DType::kF32:
      EmbeddingKernel<<<Grid(n), kThreads, 0, S(cx)>>>(
          static_cast<const float*>(table), ids, dim, out);
      break;
    case DType::kBF16:
      EmbeddingKernel<<<Grid(n), kThreads, 0, S(cx)>>>(
          static_cast<const __nv_bfloat16*>(table), ids, dim, out);
      break;
    case DType::kF16:
      EmbeddingKernel<<<Grid(n), kThreads, 0, S(cx)>>>(
          static_cast<const __half*>(table), ids, dim, out);
      break;
    default:
      return absl::InvalidArgumentError("embedding: table must be f32, bf16 or f16");
  }
  CUDA_RETURN_IF_LAUNCH_FAILED("embedding");
  return absl::OkStatus();
}

absl::Status AppendKv(Context& cx, const float* k, const float* v, int64_t n,
                      int64_t heads, int64_t head_dim, float* keys,
                      float* values, int64_t capacity, int64_t offset) {
  if (n == 0) return absl::OkStatus();
  if (offset + n > capacity) {
    return absl::InternalError("append_kv: past the cache's capacity");
  }
  AppendKvKernel<<<dim3(Grid(n), Grid(heads)), 128, 0, S(cx)>>>(
      k, v, heads, head_dim, keys, values, capacity, offset);
  CUDA_RETURN_IF_LAUNCH_FAILED("append_kv");
  return absl::OkStatus();
}

absl::Status GatherRows(Context& cx, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t head_dim) {
  if (count == 0 || heads == 0) return absl::OkStatus();
  absl::StatusOr<void*> tmp =
      cx.Workspace(kWsAttention, heads * count * head_dim * sizeof(float));
  if (!tmp.ok()) return tmp.status();
  float* t = static_cast<float*>(*tmp);
  const dim3 grid(Grid(count), Grid(heads));
  GatherKernel<<<grid, 128, 0, S(cx)>>>(data, keep, count, capacity, head_dim, t);
  CUDA_RETURN_IF_LAUNCH_FAILED("gather_rows");
  ScatterBackKernel<<<grid, 128, 0, S(cx)>>>(t, count, capacity, head_dim, data);
  CUDA_RETURN_IF_LAUNCH_FAILED("gather_rows (write back)");
  return absl::OkStatus();
}

absl::Status Argmax(Context& cx, const float* x, int64_t rows, int64_t cols,
                    int32_t* out) {
  if (rows == 0 || cols == 0) return absl::OkStatus();
  ArgmaxKernel<<<Grid(rows), kThreads, 0, S(cx)>>>(x, cols, out);
  CUDA_RETURN_IF_LAUNCH_FAILED("argmax");
  return absl::OkStatus();
}

absl::Status Convert(Context& cx, const float* x, int64_t n, DType to,
                     void* out) {
  if (n == 0) return absl::OkStatus();
  switch (to) {
    case DType::kBF16:
      ConvertKernel<<<Blocks(n), kThreads, 0, S(cx)>>>(
          x, n, static_cast<__nv_bfloat16*>(out));
      break;
    case DType::kF16:
      ConvertKernel<<<Blocks(n), kThreads, 0, S(cx)>>>(
          x, n, static_cast<__half*>(out));
      break;
    default:
      return absl::InvalidArgumentError("convert: target must be bf16 or f16");
  }
  CUDA_RETURN_IF_LAUNCH_FAILED("convert");
  return absl::OkStatus();
}

}  // namespace kvfold::cuda
