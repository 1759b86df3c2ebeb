// GELU (tanh form) and SwiGLU. Formulas and their evaluation order follow PyTorch's
// CPU kernels (gelu(approximate="tanh"), silu and their backwards), so the reference
// tests in tests/reference agree to rounding.
#include "kernels/activations.hpp"

#include "kernels/rowwise.hpp"

namespace furnace::kernels {
namespace {

// sqrt(2/pi) written as PyTorch does, M_SQRT2 * M_2_SQRTPI * 0.5, and kappa.
constexpr double kGeluBeta = 1.41421356237309504880 * 1.12837916709551257390 * 0.5;
constexpr double kGeluKappa = 0.044715;

// PyTorch's silu is a / (1 + exp(-a)), not a * sigmoid(a); keep its rounding.
template <class T>
KOKKOS_INLINE_FUNCTION T silu(T a) {
  return a / (T(1) + fexp(-a));
}

}  // namespace

template <class T>
void gelu_forward(View1<const T> x, View1<T> y) {
  Kokkos::parallel_for(
      "kernels::gelu_forward", Range(0, x.extent(0)), KOKKOS_LAMBDA(std::size_t k) {
        const T v = x(k);
        const T inner = T(kGeluBeta) * (v + T(kGeluKappa) * (v * v * v));
        y(k) = T(0.5) * v * (T(1) + ftanh(inner));
      });
}

template <class T>
void gelu_backward(View1<const T> x, View1<const T> dy, View1<T> dx) {
  Kokkos::parallel_for(
      "kernels::gelu_backward", Range(0, x.extent(0)), KOKKOS_LAMBDA(std::size_t k) {
        const T v = x(k), v2 = v * v;
        const T th = ftanh(T(kGeluBeta) * (v + T(kGeluKappa) * (v2 * v)));
        const T left_derivative = T(0.5) * (T(1) + th);
        const T inner_derivative = T(kGeluBeta) * (T(1) + T(3) * T(kGeluKappa) * v2);
        const T right_derivative = T(0.5) * v * (T(1) - th * th) * inner_derivative;
        dx(k) += dy(k) * (left_derivative + right_derivative);
      });
}

// Rows are handled by teams so that on a GPU a team reads a row's gate and up
// halves coalesced; a flat index would need a division per element.
template <class T>
void swiglu_forward(View2<const T> x, View2<T> y) {
  const int h = int(y.extent(1));
  Kokkos::parallel_for(
      "kernels::swiglu_forward", row_teams(y.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        team_for(t, h, [&](int j) { y(i, j) = silu(x(i, j)) * x(i, h + j); });
      });
}

// d gate = (dy * up) * s * (1 + a * (1 - s)) with s = sigmoid(a) (torch's
// silu_backward applied to dy * up);  d up = dy * silu(a).
template <class T>
void swiglu_backward(View2<const T> x, View2<const T> dy, View2<T> dx) {
  const int h = int(dy.extent(1));
  Kokkos::parallel_for(
      "kernels::swiglu_backward", row_teams(dy.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        team_for(t, h, [&](int j) {
          const T a = x(i, j), s = T(1) / (T(1) + fexp(-a)), g = dy(i, j);
          dx(i, j) += g * x(i, h + j) * s * (T(1) + a * (T(1) - s));
          dx(i, h + j) += g * silu(a);
        });
      });
}

#define FURNACE_ACTIVATIONS(T)                                              \
  template void gelu_forward<T>(View1<const T>, View1<T>);                  \
  template void gelu_backward<T>(View1<const T>, View1<const T>, View1<T>); \
  template void swiglu_forward<T>(View2<const T>, View2<T>);                \
  template void swiglu_backward<T>(View2<const T>, View2<const T>, View2<T>);
FURNACE_ACTIVATIONS(float)
FURNACE_ACTIVATIONS(double)

}  // namespace furnace::kernels
