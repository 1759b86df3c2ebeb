// Row-wise softmax and cross-entropy, one team per row. Every row is shifted by its
// maximum before exp, so logits of any size (1000, 1e30) give finite results.
#include "kernels/softmax.hpp"

#include "kernels/rowwise.hpp"

namespace furnace::kernels {
namespace {

// The stable normaliser of row i: its max and sum_j exp(x_ij - max).
template <class T>
struct RowNorm {
  T max;
  acc_t sum;
};
template <class T>
KOKKOS_INLINE_FUNCTION RowNorm<T> row_norm(const Member& t, const View2<const T>& x, int i) {
  const int c = int(x.extent(1));
  const T m = team_max<T>(t, c, [&](int j) { return x(i, j); });
  return {m, team_sum(t, c, [&](int j) { return fexp(x(i, j) - m); })};
}

KOKKOS_INLINE_FUNCTION bool valid_target(index_t target, std::size_t classes) {
  return target >= 0 && std::size_t(target) < classes;
}

}  // namespace

template <class T>
void softmax_forward(View2<const T> x, View2<T> y) {
  const int c = int(x.extent(1));
  Kokkos::parallel_for(
      "kernels::softmax_forward", row_teams(x.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const RowNorm<T> r = row_norm(t, x, i);
        const T inv = T(1 / r.sum);
        team_for(t, c, [&](int j) { y(i, j) = fexp(x(i, j) - r.max) * inv; });
      });
}

template <class T>
void softmax_backward(View2<const T> y, View2<const T> dy, View2<T> dx) {
  const int c = int(y.extent(1));
  Kokkos::parallel_for(
      "kernels::softmax_backward", row_teams(y.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const T s = T(team_sum(t, c, [&](int j) { return dy(i, j) * y(i, j); }));
        team_for(t, c, [&](int j) { dx(i, j) += y(i, j) * (dy(i, j) - s); });
      });
}

template <class T>
int cross_entropy_forward(View2<const T> logits, View1<const index_t> targets, View1<T> losses) {
  const std::size_t classes = logits.extent(1);
  int bad = 0;
  Kokkos::parallel_reduce(
      "kernels::cross_entropy_forward", row_teams(logits.extent(0)),
      KOKKOS_LAMBDA(const Member& t, int& bad_rows) {
        const int i = t.league_rank();
        const index_t target = targets(i);
        if (!valid_target(target, classes)) {
          // One thread per team reports, or the count would scale with team size.
          Kokkos::single(Kokkos::PerTeam(t), [&] {
            losses(i) = T(0);
            ++bad_rows;
          });
          return;
        }
        const RowNorm<T> r = row_norm(t, logits, i);
        const acc_t lse = acc_t(r.max) + flog(r.sum);
        Kokkos::single(Kokkos::PerTeam(t), [&] { losses(i) = T(lse - acc_t(logits(i, target))); });
      },
      bad);
  return bad;
}

template <class T>
void cross_entropy_backward(View2<const T> logits, View1<const index_t> targets, T scale,
                            View2<T> dlogits) {
  const int c = int(logits.extent(1));
  Kokkos::parallel_for(
      "kernels::cross_entropy_backward", row_teams(logits.extent(0)),
      KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const index_t target = targets(i);
        if (!valid_target(target, std::size_t(c))) return;  // its loss was 0: no gradient
        const RowNorm<T> r = row_norm(t, logits, i);
        const T inv = T(1 / r.sum);
        team_for(t, c, [&](int j) {
          const T p = fexp(logits(i, j) - r.max) * inv;
          dlogits(i, j) += scale * (j == target ? p - T(1) : p);
        });
      });
}

#define FURNACE_SOFTMAX(T)                                                               \
  template void softmax_forward<T>(View2<const T>, View2<T>);                            \
  template void softmax_backward<T>(View2<const T>, View2<const T>, View2<T>);           \
  template int cross_entropy_forward<T>(View2<const T>, View1<const index_t>, View1<T>); \
  template void cross_entropy_backward<T>(View2<const T>, View1<const index_t>, T, View2<T>);
FURNACE_SOFTMAX(float)
FURNACE_SOFTMAX(double)

}  // namespace furnace::kernels
