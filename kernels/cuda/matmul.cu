// GEMMs through cuBLAS: c[m, n] (+)= a[m, k] . b[n, k]^T, row-major.
//
// Row-major C = A B^T is column-major C^T = B A^T, so cuBLAS computes
// op(B)=T [n x k] times A [k x m] into C^T [n x m].
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace kvfold::cuda {
namespace {

absl::Status Gemm(Context& cx, const void* a, int64_t lda, const void* b,
                  int64_t ldb, cudaDataType_t ab_type, float* c, int64_t ldc,
                  int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
    return absl::InvalidArgumentError("matmul: a dimension exceeds 2^31");
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      static_cast<cublasHandle_t>(cx.blas()), CUBLAS_OP_T, CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
      ab_type, static_cast<int>(ldb), a, ab_type, static_cast<int>(lda), &beta,
      c, CUDA_R_32F, static_cast<int>(ldc), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace

absl::Status GemmHalf(Context& cx, const void* a, const void* b, DType type,
                      float* c, int64_t m, int64_t n, int64_t k) {
  if (type != DType::kBF16 && type != DType::kF16) {
    return absl::InvalidArgumentError("gemm_half: bf16 or f16 only");
  }
  return Gemm(cx, a, k, b, k, type == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F,
              c, n, m, n, k, false);
}

absl::Status MatMulNT(Context& cx, const float* a, int64_t lda, const void* b,
                      DType b_type, int64_t ldb, float* c, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m == 0 || n == 0) return absl::OkStatus();
  const void* a_ptr = a;
  cudaDataType_t ab_type = CUDA_R_32F;
  int64_t a_ld = lda;
  switch (b_type) {
    case DType::kF32:
      break;
    case DType::kBF16:
    case DType::kF16: {
      // Round the activations to the weights' type; accumulate in f32.
      ab_type = b_type == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
      absl::StatusOr<void*> ws = cx.Workspace(kWsGemmInput, m * k * 2);
      if (!ws.ok()) return ws.status();
      if (lda == k) {
        if (absl::Status s = Convert(cx, a, m * k, b_type, *ws); !s.ok()) return s;
      } else {
        for (int64_t r = 0; r < m; ++r) {
          absl::Status s = Convert(cx, a + r * lda, k, b_type,
                                   static_cast<char*>(*ws) + r * k * 2);
          if (!s.ok()) return s;
        }
      }
      a_ptr = *ws;
      a_ld = k;
      break;
    }
    default:
      return absl::InvalidArgumentError("matmul: weights must be f32, bf16 or f16");
  }
  return Gemm(cx, a_ptr, a_ld, b, ldb, ab_type, c, ldc, m, n, k, accumulate);
}

}  // namespace kvfold::cuda
