// Row-wise and elementwise ops: rms_norm, rope, softmax, silu*mul, add,
// embedding lookup.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace kvfold::cpu {

namespace {
// Elementwise work is split in large ranges; small inputs run inline.
constexpr int64_t kMinParallel = 1 << 14;

void ForRange(const Stream& s, int64_t n,
              const std::function<void(int64_t, int64_t)>& fn) {
  if (n < kMinParallel) {
    fn(0, n);
  } else {
    ParallelFor(s, n, fn);
  }
}
}  // namespace

absl::Status RmsNorm(const Stream& s, const float* x, const float* w,
                     float eps, float* out, int64_t rows, int64_t dim) {
  ParallelFor(s, rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = out + r * dim;
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
      const float inv = 1.0f / std::sqrt(float(ss / dim) + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  });
  return absl::OkStatus();
}

absl::Status ApplyRope(const Stream& s, float* x, const int32_t* positions,
                       const float* inv_freq, int64_t n, int64_t heads,
                       int64_t head_dim) {
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError("rope: head_dim must be even");
  }
  const int64_t half = head_dim / 2;
  ParallelFor(s, n, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        // Angle in f32 as the reference computes it, trig in double.
        const float angle = float(positions[t]) * inv_freq[i];
        cs[i] = float(std::cos(double(angle)));
        sn[i] = float(std::sin(double(angle)));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    }
  });
  return absl::OkStatus();
}

absl::Status Softmax(const Stream& s, float* x, int64_t rows, int64_t cols) {
  ParallelFor(s, rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = x + r * cols;
      const float mx = *std::max_element(row, row + cols);
      float sum = 0.0f;
      for (int64_t j = 0; j < cols; ++j) {
        row[j] = std::exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < cols; ++j) row[j] *= inv;
    }
  });
  return absl::OkStatus();
}

absl::Status SiluMul(const Stream& s, const float* gate, const float* up,
                     float* out, int64_t n) {
  ForRange(s, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
  return absl::OkStatus();
}

absl::Status AddInPlace(const Stream& s, float* x, const float* y, int64_t n) {
  ForRange(s, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] += y[i];
  });
  return absl::OkStatus();
}

absl::Status Relu(const Stream& s, float* x, int64_t n) {
  ForRange(s, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = std::max(x[i], 0.0f);
  });
  return absl::OkStatus();
}

absl::Status Im2Col1d(const Stream& s, const float* x, int64_t channels,
                      int64_t length, int64_t kernel, float* cols, int64_t ld) {
  const int64_t half = kernel / 2;
  ParallelFor(s, length, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* row = cols + t * ld;
      for (int64_t c = 0; c < channels; ++c) {
        const float* xc = x + c * length;
        for (int64_t j = 0; j < kernel; ++j) {
          const int64_t src = t + j - half;
          row[c * kernel + j] = src >= 0 && src < length ? xc[src] : 0.0f;
        }
      }
    }
  });
  return absl::OkStatus();
}

absl::Status AddBias(const Stream& s, float* y, const float* bias,
                     int64_t rows, int64_t cols) {
  ParallelFor(s, rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = y + r * cols;
      for (int64_t j = 0; j < cols; ++j) row[j] += bias[j];
    }
  });
  return absl::OkStatus();
}

absl::Status Embedding(const Stream& s, const void* table, DType table_type,
                       const int32_t* ids, int64_t n, int64_t dim, float* out) {
  if (table_type != DType::kF32) {
    return absl::InvalidArgumentError("embedding: the CPU table must be f32");
  }
  const float* t = static_cast<const float*>(table);
  ParallelFor(s, n, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0; i < t1; ++i) {
      if (ids[i] < 0) {
        std::memset(out + i * dim, 0, dim * sizeof(float));
      } else {
        std::memcpy(out + i * dim, t + int64_t(ids[i]) * dim, dim * sizeof(float));
      }
    }
  });
  return absl::OkStatus();
}

absl::Status AppendKv(const Stream& s, const float* k, const float* v,
                      int64_t n, int64_t heads, int64_t d, float* keys,
                      float* values, int64_t capacity, int64_t offset) {
  if (offset + n > capacity) {
    return absl::InternalError("append_kv: past the cache's capacity");
  }
  for (int64_t g = 0; g < heads; ++g) {
    float* kd = keys + (g * capacity + offset) * d;
    float* vd = values + (g * capacity + offset) * d;
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(kd + t * d, k + (t * heads + g) * d, d * sizeof(float));
      std::memcpy(vd + t * d, v + (t * heads + g) * d, d * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status GatherRows(const Stream& s, float* data, const int32_t* keep,
                        int64_t count, int64_t heads, int64_t capacity,
                        int64_t d) {
  for (int64_t g = 0; g < heads; ++g) {
    float* base = data + g * capacity * d;
    const int32_t* kg = keep + g * count;
    // Ascending keep: keep[i] >= i, so moving forward never overwrites a row
    // still to be read.
    for (int64_t i = 0; i < count; ++i) {
      if (kg[i] != i) std::memcpy(base + i * d, base + int64_t(kg[i]) * d, d * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status Argmax(const Stream& s, const float* x, int64_t rows,
                    int64_t cols, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    int64_t best = 0;
    for (int64_t j = 1; j < cols; ++j) {
      if (row[j] > row[best]) best = j;
    }
    out[r] = static_cast<int32_t>(best);
  }
  return absl::OkStatus();
}

}  // namespace kvfold::cpu
