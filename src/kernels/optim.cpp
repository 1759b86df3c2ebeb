// AdamW and the reductions around it. The update repeats torch.optim.AdamW's
// single-tensor path operation by operation (which scalars are formed in double,
// which at the element type, and in what order), so a PyTorch run and ours stay
// together to rounding over many steps, not just to the formula.
#include "kernels/optim.hpp"

#include <cmath>

#include "kernels/math.hpp"

namespace furnace::kernels {
namespace {

// torch.lerp with a scalar weight: the branch keeps it exact at both ends.
template <class T>
KOKKOS_INLINE_FUNCTION T lerp(T self, T end, T weight) {
  return weight < T(0.5) ? self + weight * (end - self) : end - (end - self) * (T(1) - weight);
}

}  // namespace

template <class T>
void adamw_update(View1<T> params, View1<const T> grads, View1<T> m, View1<T> v,
                  const AdamWParams& hp) {
  // Python-side scalars in PyTorch are doubles, converted to T where they meet a tensor.
  const double step = double(hp.step);
  const T decay = T(1 - hp.lr * hp.weight_decay);
  const T w1 = T(1 - hp.beta1), beta2 = T(hp.beta2), w2 = T(1 - hp.beta2), eps = T(hp.eps);
  const T neg_step_size = T(-(hp.lr / (1 - std::pow(hp.beta1, step))));
  const T bias_correction2_sqrt = T(std::sqrt(1 - std::pow(hp.beta2, step)));
  Kokkos::parallel_for(
      "kernels::adamw_update", Range(0, params.extent(0)), KOKKOS_LAMBDA(std::size_t k) {
        const T g = grads(k);
        const T p = params(k) * decay;           // param.mul_(1 - lr * wd)
        const T mk = lerp(m(k), g, w1);          // exp_avg.lerp_(grad, 1 - beta1)
        const T vk = v(k) * beta2 + w2 * g * g;  // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
        const T denom = fsqrt(vk) / bias_correction2_sqrt + eps;
        params(k) = p + neg_step_size * mk / denom;  // param.addcdiv_(m, denom, -step_size)
        m(k) = mk;
        v(k) = vk;
      });
}

// Each index sums a chunk of 8 before adding to the running total: the chunk sums
// are independent, so a CPU overlaps them instead of waiting on one long chain of
// dependent double adds (~4x faster serially); the order is still fixed.
template <class T>
double sum_squares(View1<const T> x) {
  constexpr std::size_t kChunk = 8;
  const std::size_t n = x.extent(0);
  double total = 0;
  Kokkos::parallel_reduce(
      "kernels::sum_squares", Range(0, (n + kChunk - 1) / kChunk),
      KOKKOS_LAMBDA(std::size_t c, double& s) {
        const std::size_t end = c * kChunk + kChunk < n ? c * kChunk + kChunk : n;
        double part = 0;
        for (std::size_t k = c * kChunk; k < end; ++k) part += double(x(k)) * double(x(k));
        s += part;
      },
      total);
  return total;
}

template <class T>
void scale(View1<T> x, T s) {
  Kokkos::parallel_for(
      "kernels::scale", Range(0, x.extent(0)), KOKKOS_LAMBDA(std::size_t k) { x(k) *= s; });
}

#define FURNACE_OPTIM(T)                                                                           \
  template void adamw_update<T>(View1<T>, View1<const T>, View1<T>, View1<T>, const AdamWParams&); \
  template double sum_squares<T>(View1<const T>);                                                  \
  template void scale<T>(View1<T>, T);
FURNACE_OPTIM(float)
FURNACE_OPTIM(double)

}  // namespace furnace::kernels
