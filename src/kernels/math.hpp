// Portable device math. Kokkos 3.4 has its math functions only in
// Kokkos::Experimental; from 3.7 on they live in Kokkos:: (and the Experimental
// names are deprecated, later removed), and std:: functions are not callable on
// GPUs. Kernels call these wrappers so they compile unchanged on every Kokkos.
#pragma once
#include <Kokkos_Core.hpp>

namespace furnace::kernels {

#if KOKKOS_VERSION >= 30700
namespace kmath = ::Kokkos;
#else
namespace kmath = ::Kokkos::Experimental;
#endif

template <class T>
KOKKOS_INLINE_FUNCTION T fexp(T x) {
  return kmath::exp(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T flog(T x) {
  return kmath::log(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T fsqrt(T x) {
  return kmath::sqrt(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T ftanh(T x) {
  return kmath::tanh(x);
}
template <class T>
KOKKOS_INLINE_FUNCTION T fmax(T a, T b) {
  return kmath::fmax(a, b);
}

// float tanh without a libm call: Eigen's odd rational minimax p(x)/q(x), degrees 13/6,
// clamped at +-7.905 as Eigen does (tanh is within 3e-7 of +-1 beyond). At most 5 ulp
// from tanhf (relative error < 3e-7), odd, NaN in -> NaN out, and branch-free, so a
// loop over it vectorises: glibc's tanhf is ~25 ns a call, scalar, which made GELU cost
// more than the expert GEMMs around it. Double keeps the library tanh.
KOKKOS_INLINE_FUNCTION float ftanh(float x) {
  const float c = 7.90531110763549805f;
  const float xc = x < -c ? -c : (x > c ? c : x);
  const float x2 = xc * xc;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  // Below 4e-4, tanh(x) rounds to x; the rational would be ~2 ulp off there.
  return (x < 4e-4f && x > -4e-4f) ? x : xc * p / q;
}

// Sums over rows and columns are carried in double whatever the element type, so
// a 2048-row or 50k-vocabulary reduction loses nothing visible at fp32.
using acc_t = double;

}  // namespace furnace::kernels
