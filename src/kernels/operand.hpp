// A matrix that only GEMMs read (a norm's output entering a projection, qkv, attention's
// output, the experts' hidden activations), kept in the precision those GEMMs run in.
//
// A 16-bit GEMM rounds its operands to 16 bits as it reads them (gemm16.cpp), so
// keeping the rounded bits instead of the fp32 values changes no result and halves
// the bytes the backward reads back (memory.activations = "auto"). Under fp32, or with
// memory.activations = "fp32", it is the fp32 matrix itself.
//
// A kernel that produces one writes fp32 into target(staging), a scratch matrix of
// the same shape; store() then rounds the staged values into the 16-bit storage. With
// fp32 storage the target is the operand itself and store() does nothing.
#pragma once
#include <cstdint>

#include "kernels/gemm.hpp"
#include "kernels/precision.hpp"
#include "kernels/views.hpp"

namespace furnace::kernels {

struct GemmOperand {
  Precision stored = Precision::FP32;  // FP32: f32 holds the values; BF16 / FP16: h16
  View2<float> f32;                    // [rows, cols] when stored == FP32
  View2<std::uint16_t> h16;            // [rows, cols] otherwise

  bool is_16bit() const { return stored != Precision::FP32; }
  std::int64_t rows() const { return is_16bit() ? h16.extent(0) : f32.extent(0); }
  std::int64_t cols() const { return is_16bit() ? h16.extent(1) : f32.extent(1); }
  std::size_t bytes() const { return is_16bit() ? h16.size() * 2 : f32.size() * 4; }

  // Where a kernel writes the first `rows` rows: this matrix, or `staging` (at least
  // [rows, cols] of fp32 scratch) when the storage is 16-bit.
  View2<float> target(View2<float> staging, std::int64_t rows) const;
  // Rounds the first `rows` staged rows into the storage (nothing for fp32 storage).
  void store(View2<const float> staging, std::int64_t rows) const;
};

// C = alpha op(A) op(B) + beta C in precision p, where A is rows [a_row0, ...) of a
// GemmOperand (its leading dimension its column count). 16-bit storage must be in p:
// a 16-bit operand is never widened into an fp32 GEMM.
void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const GemmOperand& a,
          std::int64_t a_row0, const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace furnace::kernels
