// GEMM dispatch: row-major C = alpha * op(A) * op(B) + beta * C.
// Host builds call OpenBLAS (cblas_sgemm / cblas_dgemm); a CUDA build would call
// cuBLAS here and nowhere else. Shapes are given as op(A) [m,k], op(B) [k,n], C [m,n].
// Degenerate shapes are legal: m or n == 0 does nothing; k == 0 scales C by beta.
#pragma once
#include <cstdint>
#include <vector>

namespace furnace::kernels {

enum class Op { N, T };

template <class T>
void gemm(Op op_a, Op op_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
          int ldb, T beta, T* c, int ldc);

// `batch` independent GEMMs of equal shape, operand i at a + i*stride_a, etc.
// Attention uses it for all heads of a sequence at once.
template <class T>
void gemm_strided_batched(Op op_a, Op op_b, int m, int n, int k, T alpha, const T* a, int lda,
                          std::int64_t stride_a, const T* b, int ldb, std::int64_t stride_b,
                          T beta, T* c, int ldc, std::int64_t stride_c, int batch);

// One GEMM of a group whose members differ in shape (one per expert: the row count
// m is the number of tokens routed to that expert and may be zero).
template <class T>
struct GemmDesc {
  int m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int lda = 0;
  const T* b = nullptr;
  int ldb = 0;
  T* c = nullptr;
  int ldc = 0;
};

template <class T>
void gemm_grouped(Op op_a, Op op_b, T alpha, const std::vector<GemmDesc<T>>& group, T beta);

}  // namespace furnace::kernels
