// Host GEMM dispatch onto OpenBLAS's CBLAS interface (row-major throughout).
#include "kernels/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace furnace::kernels {
namespace {

CBLAS_TRANSPOSE cblas_op(Op op) { return op == Op::N ? CblasNoTrans : CblasTrans; }

// Row-major storage needs ld >= the stored row length; OpenBLAS would only print
// "parameter N had an illegal value" and return, leaving C silently untouched, so we
// check first and throw something the caller can act on.
void check_ld(const char* name, int ld, int row_len) {
  int need = std::max(1, row_len);
  if (ld < need)
    throw std::invalid_argument("gemm: " + std::string(name) + " = " + std::to_string(ld) +
                                " < " + std::to_string(need) + " (row length of the stored matrix)");
}

}  // namespace

void check_gemm_args(Op op_a, Op op_b, int m, int n, int k, int lda, int ldb, int ldc) {
  if (m < 0 || n < 0 || k < 0)
    throw std::invalid_argument("gemm: negative shape m=" + std::to_string(m) + " n=" +
                                std::to_string(n) + " k=" + std::to_string(k));
  check_ld("lda", lda, op_a == Op::N ? k : m);  // A stored [m,k], or [k,m] when transposed
  check_ld("ldb", ldb, op_b == Op::N ? n : k);  // B stored [k,n], or [n,k] when transposed
  check_ld("ldc", ldc, n);
}

template <class T>
void gemm(Op op_a, Op op_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
          int ldb, T beta, T* c, int ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  check_gemm_args(op_a, op_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty inner product: C = beta * C. Done here rather than trusting every BLAS
    // with k == 0, and beta == 0 must overwrite (C may hold NaN garbage), not multiply.
    for (int i = 0; i < m; ++i) {
      T* row = c + static_cast<std::ptrdiff_t>(i) * ldc;
      if (beta == T(0))
        std::fill(row, row + n, T(0));
      else
        for (int j = 0; j < n; ++j) row[j] *= beta;
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, cblas_op(op_a), cblas_op(op_b), m, n, k, alpha, a, lda, b, ldb,
                beta, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, cblas_op(op_a), cblas_op(op_b), m, n, k, alpha, a, lda, b, ldb,
                beta, c, ldc);
}

// OpenBLAS has no batched GEMM in 0.3.21, and each member is already large enough to
// use its threads, so a loop costs little. A CUDA build would make this one
// cublasSgemmStridedBatched / cublasDgemmStridedBatched call instead.
template <class T>
void gemm_strided_batched(Op op_a, Op op_b, int m, int n, int k, T alpha, const T* a, int lda,
                          std::int64_t stride_a, const T* b, int ldb, std::int64_t stride_b,
                          T beta, T* c, int ldc, std::int64_t stride_c, int batch) {
  if (batch < 0) throw std::invalid_argument("gemm_strided_batched: negative batch");
  for (int i = 0; i < batch; ++i)
    gemm(op_a, op_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
         c + i * stride_c, ldc);
}

// Members differ in shape, so there is no single batched call to make on the host
// (a CUDA build would use cublasGemmGroupedBatchedEx or a grouped CUTLASS kernel).
template <class T>
void gemm_grouped(Op op_a, Op op_b, T alpha, const std::vector<GemmDesc<T>>& group, T beta) {
  for (const auto& g : group) {
    // An expert that received no tokens may come with null pointers and unset leading
    // dimensions; it has nothing to compute, so skip it before any validation.
    if (g.m == 0 || g.n == 0) continue;
    gemm(op_a, op_b, g.m, g.n, g.k, alpha, g.a, g.lda, g.b, g.ldb, beta, g.c, g.ldc);
  }
}

#define FURNACE_INSTANTIATE_GEMM(T)                                                          \
  template void gemm<T>(Op, Op, int, int, int, T, const T*, int, const T*, int, T, T*, int);  \
  template void gemm_strided_batched<T>(Op, Op, int, int, int, T, const T*, int, std::int64_t, \
                                        const T*, int, std::int64_t, T, T*, int,              \
                                        std::int64_t, int);                                   \
  template void gemm_grouped<T>(Op, Op, T, const std::vector<GemmDesc<T>>&, T);
FURNACE_INSTANTIATE_GEMM(float)
FURNACE_INSTANTIATE_GEMM(double)
#undef FURNACE_INSTANTIATE_GEMM

}  // namespace furnace::kernels
