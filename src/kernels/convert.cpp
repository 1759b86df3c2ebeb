#include "kernels/convert.hpp"

namespace furnace::kernels {

void rows_to_16bit(Precision p, View2<const float> in, View1<const index_t> order, View2<std::uint16_t> out) {
  const std::int64_t d = out.extent(1);
  const bool permute = order.extent(0) > 0;
  Kokkos::parallel_for("kernels::rows_to_16bit", Range(0, out.size()), KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t r = t / d, c = t % d;
    out(r, c) = to_16bit(p, in(permute ? std::int64_t(order(r)) : r, c));
  });
}

void rows_from_16bit(Precision p, View2<const std::uint16_t> in, View1<const index_t> order, View2<float> out) {
  const std::int64_t d = out.extent(1);
  const bool permute = order.extent(0) > 0;
  Kokkos::parallel_for("kernels::rows_from_16bit", Range(0, out.size()), KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t r = t / d, c = t % d;
    out(r, c) = from_16bit(p, in(permute ? std::int64_t(order(r)) : r, c));
  });
}

void round_values(Precision p, View1<float> v) {
  if (p == Precision::FP32) return;
  Kokkos::parallel_for("kernels::round_values", Range(0, v.size()),
                       KOKKOS_LAMBDA(const std::int64_t i) { v(i) = round_to(p, v(i)); });
}

}  // namespace furnace::kernels
