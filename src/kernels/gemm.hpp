// GEMM dispatch: row-major C = alpha * op(A) * op(B) + beta * C.
// Host builds call OpenBLAS (cblas_sgemm / cblas_dgemm); a CUDA build would call
// cuBLAS here and nowhere else. Shapes are given as op(A) [m,k], op(B) [k,n], C [m,n].
// Degenerate shapes are legal: m or n == 0 does nothing; k == 0 scales C by beta.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/precision.hpp"

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
// TA: A's element type (std::uint16_t: A already rounded to a 16-bit format; only
// the mixed-precision gemm_grouped below takes it).
template <class T, class TA = T>
struct GemmDesc {
  int m = 0, n = 0, k = 0;
  const TA* a = nullptr;
  int lda = 0;
  const T* b = nullptr;
  int ldb = 0;
  T* c = nullptr;
  int ldc = 0;
};

template <class T>
void gemm_grouped(Op op_a, Op op_b, T alpha, const std::vector<GemmDesc<T>>& group, T beta);

// Throws std::invalid_argument for a negative shape or a leading dimension shorter
// than the stored row (OpenBLAS would print and leave C untouched).
void check_gemm_args(Op op_a, Op op_b, int m, int n, int k, int lda, int ldb, int ldc);

// --- Mixed precision (gemm16.cpp) ---------------------------------------------------
// The same products in precision p: with BF16 / FP16, A and B are rounded to 16 bits
// and multiplied with fp32 accumulation into the fp32 C; FP32 is the plain gemm.
void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm_strided_batched(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const float* a,
                          int lda, std::int64_t stride_a, const float* b, int ldb, std::int64_t stride_b,
                          float beta, float* c, int ldc, std::int64_t stride_c, int batch);
void gemm_grouped(Precision p, Op op_a, Op op_b, float alpha, const std::vector<GemmDesc<float>>& group,
                  float beta);
// The same where A is already held in 16 bits of precision p (bf16 or fp16; FP32 is
// refused with std::invalid_argument): the values a 16-bit GEMM would round A to, so
// the products are exactly those of the fp32 A they were rounded from
// (kernels/operand.hpp keeps activations this way).
void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const std::uint16_t* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm_grouped(Precision p, Op op_a, Op op_b, float alpha,
                  const std::vector<GemmDesc<float, std::uint16_t>>& group, float beta);
// Strided batches where A, B or both are held in 16 bits (TA, TB: std::uint16_t or
// float; instantiated for the three combinations with a 16-bit operand): attention over
// a 16-bit qkv.
template <class TA, class TB>
void gemm_strided_batched(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const TA* a, int lda,
                          std::int64_t stride_a, const TB* b, int ldb, std::int64_t stride_b, float beta, float* c,
                          int ldc, std::int64_t stride_c, int batch);

// What runs a 16-bit GEMM (train.gemm16): Auto takes oneDNN where it has a kernel for
// the precision on this CPU (bf16: AVX512-BF16 or AMX), else Convert (OpenBLAS sgemm on
// operands rounded to 16 bits: the same rounding at fp32 speed).
enum class Gemm16Engine { Auto, OneDNN, Convert };
void set_gemm16_engine(Gemm16Engine e);
// Non-empty when `e` cannot run precision p here (OneDNN without a kernel): the reason.
std::string gemm16_engine_error(Gemm16Engine e, Precision p);
// oneDNN's threads (it runs on libgomp's); default: the BLAS budget when it loads.
void set_gemm16_threads(int n);
// Whether 16-bit GEMMs in p run on oneDNN (with the engine set now).
bool gemm16_uses_onednn(Precision p);
// For the banner: what a GEMM in p runs on, e.g. "oneDNN bf16 matmul (brg:avx512_core_bf16), ...".
std::string gemm16_description(Precision p);

}  // namespace furnace::kernels
