#include "kernels/random.hpp"

#include "kernels/math.hpp"

namespace furnace::kernels {

std::uint64_t stream_key(std::uint64_t seed, std::string_view name) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return splitmix64(h ^ splitmix64(seed));
}

template <class T>
void fill_normal(View1<T> x, std::uint64_t key, std::int64_t first_index, double stddev) {
  Kokkos::parallel_for(
      "kernels::fill_normal", Range(0, x.extent(0)), KOKKOS_LAMBDA(const std::int64_t j) {
        // Box-Muller on two 53-bit uniforms derived from the element's counter.
        const std::uint64_t c = static_cast<std::uint64_t>(first_index + j);
        const std::uint64_t a = splitmix64(key ^ (2 * c));
        const std::uint64_t b = splitmix64(key ^ (2 * c + 1));
        const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
        const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;          // [0, 1)
        const double r = fsqrt(-2.0 * flog(u1));
        x(j) = static_cast<T>(stddev * r * kmath::cos(6.283185307179586 * u2));
      });
}

template <class T>
void fill(View1<T> x, T value) {
  Kokkos::parallel_for(
      "kernels::fill", Range(0, x.extent(0)), KOKKOS_LAMBDA(const std::int64_t j) { x(j) = value; });
}

template void fill_normal<float>(View1<float>, std::uint64_t, std::int64_t, double);
template void fill_normal<double>(View1<double>, std::uint64_t, std::int64_t, double);
template void fill<float>(View1<float>, float);
template void fill<double>(View1<double>, double);
template void fill<index_t>(View1<index_t>, index_t);

}  // namespace furnace::kernels
