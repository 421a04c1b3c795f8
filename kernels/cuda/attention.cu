// Causal GQA attention in the flash style: K/V tiles of 32 keys in shared
// memory, one warp per (query, head) row, an online softmax in registers (no
// score matrix), per-row log-sum-exp out. Long key ranges with few rows
// (decode) are split over blocks (flash-decoding) and merged by their
// log-sum-exp. Column sums of the probabilities, when a policy asks, are a
// second pass that recomputes q.k against the known log-sum-exp.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace kvfold::cuda {
namespace {

constexpr int kWarps = 8;     // rows per block
constexpr int kTile = 32;     // keys per shared-memory tile
constexpr int kMaxHeadDim = 256;

struct FlashParams {
  const float* q;    // [nq, qh, d]
  const float* k;    // [kvh, stride, d]
  const float* v;    // [kvh, stride, d]
  float* out;        // [splits, nq, qh, d]
  float* lse;        // [splits, qh, nq]
  int64_t nq, nk, stride, causal_offset, keys_per_split;
  int qh, group, d;
  float scale;
};

__device__ __forceinline__ float WarpMax(float v) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Grid: (kv head, row block, split). Rows of one KV head are (query i, group
// head gh) flattened as i * group + gh, so a block's rows share K/V tiles.
template <int kChunks>  // head_dim <= 32 * kChunks
__global__ void __launch_bounds__(kWarps * 32)
    FlashKernel(FlashParams p) {
  extern __shared__ float smem[];
  const int d = p.d, ldk = d + 1;
  float* ks = smem;              // [kTile][d + 1] (padded: lane j reads row j)
  float* vs = ks + kTile * ldk;  // [kTile][d]
  float* qs = vs + kTile * d;    // [kWarps][d], pre-scaled
  const int g = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = p.nq * p.group;
  const int64_t row = int64_t(blockIdx.y) * kWarps + warp;
  const bool active = row < rows;
  const int64_t i = active ? row / p.group : 0;
  const int h = g * p.group + (active ? int(row % p.group) : 0);
  const int64_t k_begin = int64_t(blockIdx.z) * p.keys_per_split;
  const int64_t k_end = min(p.nk, k_begin + p.keys_per_split);
  const int64_t row_end = active ? min(k_end, p.causal_offset + i + 1) : k_begin;
  const int64_t last_row = min(rows - 1, int64_t(blockIdx.y) * kWarps + kWarps - 1);
  const int64_t block_end = min(k_end, p.causal_offset + last_row / p.group + 1);
  const float* kg = p.k + int64_t(g) * p.stride * d;
  const float* vg = p.v + int64_t(g) * p.stride * d;

  if (active) {
    const float* qr = p.q + (i * p.qh + h) * d;
    for (int c = lane; c < d; c += 32) qs[warp * d + c] = qr[c] * p.scale;
  }
  float m = -INFINITY, l = 0.0f, acc[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;

  for (int64_t t0 = k_begin; t0 < block_end; t0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and qs is written)
    const int n_tile = int(min(int64_t(kTile), block_end - t0));
    for (int idx = threadIdx.x; idx < n_tile * d; idx += blockDim.x) {
      const int j = idx / d, c = idx - j * d;
      ks[j * ldk + c] = kg[(t0 + j) * d + c];
      vs[j * d + c] = vg[(t0 + j) * d + c];
    }
    __syncthreads();
    if (!active || t0 >= row_end) continue;  // uniform per warp
    const int64_t key = t0 + lane;
    const bool valid = key < row_end;
    float s = -INFINITY;
    if (valid) {
      s = 0.0f;
      const float* qr = qs + warp * d;
      const float* kr = ks + lane * ldk;
#pragma unroll 4
      for (int c = 0; c < d; ++c) s += qr[c] * kr[c];
    }
    const float m_new = fmaxf(m, WarpMax(s));  // finite: key t0 is valid
    const float corr = expf(m - m_new);
    const float pj = valid ? expf(s - m_new) : 0.0f;
    l = l * corr + WarpSum(pj);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[c] *= corr;
    const int seen = int(min(int64_t(kTile), row_end - t0));
    for (int j = 0; j < seen; ++j) {
      const float pb = __shfl_sync(0xffffffffu, pj, j);
      const float* vr = vs + j * d;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int col = lane + 32 * c;
        if (col < d) acc[c] += pb * vr[col];
      }
    }
    m = m_new;
  }
  if (!active) return;
  float* o = p.out + ((int64_t(blockIdx.z) * p.nq + i) * p.qh + h) * d;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int col = lane + 32 * c;
    if (col < d) o[col] = acc[c] * inv;
  }
  if (lane == 0) {
    p.lse[(int64_t(blockIdx.z) * p.qh + h) * p.nq + i] =
        l > 0.0f ? m + logf(l) : -INFINITY;
  }
}

// Merges split partials: one block per (query, head).
__global__ void CombineKernel(const float* part_out, const float* part_lse,
                              int splits, int64_t nq, int qh, int d,
                              float* out, float* lse) {
  const int64_t i = blockIdx.x / qh;
  const int h = blockIdx.x % qh;
  float mx = -INFINITY;
  for (int z = 0; z < splits; ++z) mx = fmaxf(mx, part_lse[(int64_t(z) * qh + h) * nq + i]);
  float total = 0.0f;
  for (int z = 0; z < splits; ++z) total += expf(part_lse[(int64_t(z) * qh + h) * nq + i] - mx);
  const float all = mx + logf(total);
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float o = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const float w = expf(part_lse[(int64_t(z) * qh + h) * nq + i] - all);
      if (w > 0.0f) o += w * part_out[((int64_t(z) * nq + i) * qh + h) * d + c];
    }
    out[(i * qh + h) * d + c] = o;
  }
  if (threadIdx.x == 0 && lse != nullptr) lse[int64_t(h) * nq + i] = all;
}

// Column sums: block (32 keys, 8 row lanes) per (kv head, key tile); loops
// over the rows of queries >= from_query in tiles of 32, recomputing
// p = exp(scale q.k - lse).
__global__ void __launch_bounds__(256)
    ColSumKernel(FlashParams p, const float* lse, int64_t from_query,
                 float* col_sums) {
  extern __shared__ float smem[];
  const int d = p.d, ld = d + 1;
  float* ks = smem;            // [32][d + 1]
  float* qs = ks + 32 * ld;    // [32][d + 1]
  __shared__ float row_lse[32];
  __shared__ int64_t row_query[32];
  __shared__ float partial[8][32];
  const int g = blockIdx.x, tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t key0 = int64_t(blockIdx.y) * 32, key = key0 + tx;
  const float* kg = p.k + int64_t(g) * p.stride * d;
  for (int idx = threadIdx.x; idx < 32 * d; idx += blockDim.x) {
    const int j = idx / d, c = idx - j * d;
    ks[j * ld + c] = key0 + j < p.nk ? kg[(key0 + j) * d + c] : 0.0f;
  }
  const int64_t rows = p.nq * p.group;
  // Queries before key0 - causal_offset see none of this tile.
  const int64_t first_query = max(from_query, key0 - p.causal_offset);
  float acc = 0.0f;
  for (int64_t r0 = first_query * p.group; r0 < rows; r0 += 32) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < 32 * d; idx += blockDim.x) {
      const int rr = idx / d, c = idx - rr * d;
      const int64_t r = r0 + rr;
      float val = 0.0f;
      if (r < rows) {
        const int64_t i = r / p.group;
        const int h = g * p.group + int(r % p.group);
        val = p.q[(i * p.qh + h) * d + c] * p.scale;
      }
      qs[rr * ld + c] = val;
    }
    if (threadIdx.x < 32) {
      const int64_t r = r0 + threadIdx.x;
      const int64_t i = r < rows ? r / p.group : 0;
      const int h = g * p.group + int(r < rows ? r % p.group : 0);
      row_query[threadIdx.x] = r < rows ? i : -1;
      row_lse[threadIdx.x] = r < rows ? lse[int64_t(h) * p.nq + i] : 0.0f;
    }
    __syncthreads();
    for (int rr = ty; rr < 32; rr += 8) {
      const int64_t i = row_query[rr];
      if (i < 0 || key >= p.nk || key > p.causal_offset + i) continue;
      float s = 0.0f;
      const float* qr = qs + rr * ld;
      const float* kr = ks + tx * ld;
#pragma unroll 4
      for (int c = 0; c < d; ++c) s += qr[c] * kr[c];
      acc += expf(s - row_lse[rr]);
    }
  }
  partial[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && key < p.nk) {
    float sum = 0.0f;
    for (int r = 0; r < 8; ++r) sum += partial[r][tx];
    col_sums[int64_t(g) * p.nk + key] = sum;
  }
}

template <int kChunks>
absl::Status LaunchFlash(const FlashParams& p, dim3 grid, cudaStream_t st) {
  const size_t smem =
      (size_t(kTile) * (p.d + 1) + size_t(kTile) * p.d + size_t(kWarps) * p.d) *
      sizeof(float);
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      FlashKernel<kChunks>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  FlashKernel<kChunks><<<grid, kWarps * 32, smem, st>>>(p);
  CUDA_RETURN_IF_LAUNCH_FAILED("flash attention");
  return absl::OkStatus();
}

absl::Status Validate(const AttentionArgs& a) {
  // The shared checks ran in kernels/ops.cc; this is the kernel's own limit.
  if (a.head_dim <= 0 || a.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError("attention: head_dim must be in [1, 256] on CUDA");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Attention(Context& cx, const AttentionArgs& a) {
  if (absl::Status s = Validate(a); !s.ok()) return s;
  if (a.num_queries == 0) return absl::OkStatus();
  cudaStream_t st = static_cast<cudaStream_t>(cx.stream());
  FlashParams p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.nq = a.num_queries;
  p.nk = a.num_keys;
  p.stride = a.kv_stride;
  p.causal_offset = a.causal_offset;
  p.qh = int(a.q_heads);
  p.group = int(a.q_heads / a.kv_heads);
  p.d = int(a.head_dim);
  p.scale = a.scale;

  const int64_t row_blocks = (p.nq * p.group + kWarps - 1) / kWarps;
  if (row_blocks > 65535) {
    return absl::InvalidArgumentError("attention: chunk too long for one launch");
  }
  // Split the keys when too few blocks would cover the chip (decode).
  const int64_t base = a.kv_heads * row_blocks;
  int64_t splits = 1;
  if (base < 256 && p.nk > 2 * kTile) {
    splits = std::min<int64_t>((p.nk + 2 * kTile - 1) / (2 * kTile),
                               (264 + base - 1) / base);
  }
  p.keys_per_split = ((p.nk + splits - 1) / splits + kTile - 1) / kTile * kTile;
  splits = (p.nk + p.keys_per_split - 1) / p.keys_per_split;

  float* lse = a.lse;
  if (lse == nullptr && a.col_sums != nullptr) {
    absl::StatusOr<void*> ws = cx.Workspace(kWsLse, a.q_heads * p.nq * sizeof(float));
    if (!ws.ok()) return ws.status();
    lse = static_cast<float*>(*ws);
  }
  float* part_out = a.out;
  float* part_lse = lse;
  if (splits > 1) {
    const size_t out_floats = size_t(splits) * p.nq * p.qh * p.d;
    absl::StatusOr<void*> ws = cx.Workspace(
        kWsAttention, (out_floats + size_t(splits) * p.qh * p.nq) * sizeof(float));
    if (!ws.ok()) return ws.status();
    part_out = static_cast<float*>(*ws);
    part_lse = part_out + out_floats;
  } else if (part_lse == nullptr) {
    absl::StatusOr<void*> ws = cx.Workspace(kWsLse, a.q_heads * p.nq * sizeof(float));
    if (!ws.ok()) return ws.status();
    part_lse = static_cast<float*>(*ws);
  }
  p.out = part_out;
  p.lse = part_lse;
  const dim3 grid(unsigned(a.kv_heads), unsigned(row_blocks), unsigned(splits));
  const absl::Status launched = p.d <= 64    ? LaunchFlash<2>(p, grid, st)
                                : p.d <= 128 ? LaunchFlash<4>(p, grid, st)
                                             : LaunchFlash<8>(p, grid, st);
  if (!launched.ok()) return launched;
  if (splits > 1) {
    CombineKernel<<<unsigned(p.nq * p.qh), 128, 0, st>>>(
        part_out, part_lse, int(splits), p.nq, p.qh, p.d, a.out, lse);
    CUDA_RETURN_IF_LAUNCH_FAILED("attention combine");
  }
  if (a.col_sums != nullptr) {
    const size_t smem = size_t(2) * 32 * (p.d + 1) * sizeof(float);
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        ColSumKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 cgrid(unsigned(a.kv_heads), unsigned((p.nk + 31) / 32));
    ColSumKernel<<<cgrid, 256, smem, st>>>(p, lse, a.col_sums_from_query,
                                           a.col_sums);
    CUDA_RETURN_IF_LAUNCH_FAILED("attention column sums");
  }
  return absl::OkStatus();
}

}  // namespace kvfold::cuda
