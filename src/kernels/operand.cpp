#include "kernels/operand.hpp"

#include <stdexcept>

#include "kernels/convert.hpp"

namespace furnace::kernels {

View2<float> GemmOperand::target(View2<float> staging, std::int64_t n) const {
  if (!is_16bit()) return View2<float>(f32.data(), n, f32.extent(1));
  if (std::int64_t(staging.extent(0)) * std::int64_t(staging.extent(1)) < n * cols())
    throw std::logic_error("GemmOperand::target: the staging buffer is smaller than the operand");
  return View2<float>(staging.data(), n, h16.extent(1));
}

void GemmOperand::store(View2<const float> staging, std::int64_t n) const {
  if (!is_16bit()) return;
  rows_to_16bit(stored, View2<const float>(staging.data(), n, h16.extent(1)), {},
                View2<std::uint16_t>(h16.data(), n, h16.extent(1)));
}

void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const GemmOperand& a,
          std::int64_t a_row0, const float* b, int ldb, float beta, float* c, int ldc) {
  const int lda = int(a.cols());
  if (!a.is_16bit()) return gemm(p, op_a, op_b, m, n, k, alpha, a.f32.data() + a_row0 * lda, lda, b, ldb, beta, c, ldc);
  if (a.stored != p)
    throw std::logic_error(std::string("gemm: an operand stored in ") + precision_name(a.stored) + " read by a " +
                           precision_name(p) + " GEMM");
  gemm(p, op_a, op_b, m, n, k, alpha, a.h16.data() + a_row0 * lda, lda, b, ldb, beta, c, ldc);
}

}  // namespace furnace::kernels
