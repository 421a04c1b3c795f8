// GEMM on OpenBLAS. Threads come from our pool, each calling a
// single-threaded sgemm/sgemv on its slice, so there is one threading model.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "kernels/cpu/cpu_ops.h"

namespace kvfold::cpu {

void ParallelFor(const Stream& s, int64_t n,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (s.pool == nullptr) {
    if (n > 0) fn(0, n);
    return;
  }
  s.pool->ParallelFor(n, fn);
}

namespace {
std::once_flag blas_once;
}  // namespace

absl::Status MatMulNT(const Stream& s, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate) {
  std::call_once(blas_once, [] { openblas_set_num_threads(1); });
  if (m <= 0 || n <= 0) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  const float beta = accumulate ? 1.0f : 0.0f;
  const int threads = s.pool ? s.pool->size() : 1;
  // Split the output columns (weight rows) when there are enough of them:
  // each thread then streams its own part of the weight exactly once.
  constexpr int64_t kBlock = 16;
  constexpr int64_t kFewRows = 32;
  if (n >= threads * kBlock * 4 || m < threads) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    ParallelFor(s, blocks, [&](int64_t b0, int64_t b1) {
      const int64_t n0 = b0 * kBlock, n1 = std::min(n, b1 * kBlock);
      if (m == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n1 - n0, k, 1.0f,
                    b + n0 * ldb, ldb, a, 1, beta, c + n0, 1);
      } else {
        // A few rows (batched decode): OpenBLAS 0.3.21 packs the whole weight
        // slice before a small-m sgemm, costing several GEMVs' worth; calls
        // over narrow column blocks stream each weight row about once.
        const int64_t step = m <= kFewRows ? std::max<int64_t>(kBlock, 256 / m) : n1 - n0;
        for (int64_t j = n0; j < n1; j += step) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, std::min(step, n1 - j), k,
                      1.0f, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
        }
      }
    });
  } else {
    ParallelFor(s, m, [&](int64_t m0, int64_t m1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m1 - m0, n, k, 1.0f,
                  a + m0 * lda, lda, b, ldb, beta, c + m0 * ldc, ldc);
    });
  }
  if (s.timers != nullptr) {
    s.timers->matmul_seconds += std::chrono::duration<double>(
        std::chrono::steady_clock::now() - start).count();
    s.timers->matmul_flops += 2.0 * m * n * k;
  }
  return absl::OkStatus();
}

}  // namespace kvfold::cpu
