// LayerNorm and RMSNorm: one team per row for the row statistics and dx, then
// add_column_sums for dw/db (threads own columns: deterministic, no atomics).
#include "kernels/norms.hpp"

#include "kernels/rowwise.hpp"

namespace furnace::kernels {

template <class T>
void layernorm_forward(View2<const T> x, View1<const T> w, View1<const T> b, T eps, View2<T> y,
                       View1<T> mean, View1<T> rstd) {
  const int d = int(x.extent(1));
  Kokkos::parallel_for(
      "kernels::layernorm_forward", row_teams(x.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const acc_t mu = team_sum(t, d, [&](int j) { return x(i, j); }) / d;
        // Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2,
        // which cancels catastrophically when |mean| >> std.
        auto deviation2 = [&](int j) { return (x(i, j) - mu) * (x(i, j) - mu); };
        const acc_t var = team_sum(t, d, deviation2) / d;
        const T m = T(mu), r = T(1 / fsqrt(var + acc_t(eps)));
        team_for(t, d, [&](int j) { y(i, j) = (x(i, j) - m) * r * w(j) + b(j); });
        Kokkos::single(Kokkos::PerTeam(t), [&] {
          mean(i) = m;
          rstd(i) = r;
        });
      });
}

// With xhat = (x - mean) * rstd and g = dy * w (per row, means over the d columns):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
template <class T>
void layernorm_backward(View2<const T> dy, View2<const T> x, View1<const T> w, View1<const T> mean,
                        View1<const T> rstd, View2<T> dx, View1<T> dw, View1<T> db) {
  const int n = int(x.extent(0)), d = int(x.extent(1));
  Kokkos::parallel_for(
      "kernels::layernorm_backward", row_teams(n), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const T m = mean(i), r = rstd(i);
        const T g_mean = T(team_sum(t, d, [&](int j) { return dy(i, j) * w(j); }) / d);
        const T gx_mean =
            T(team_sum(t, d, [&](int j) { return dy(i, j) * w(j) * (x(i, j) - m) * r; }) / d);
        team_for(t, d, [&](int j) {
          const T xhat = (x(i, j) - m) * r;
          dx(i, j) += r * (dy(i, j) * w(j) - g_mean - xhat * gx_mean);
        });
      });
  add_column_sums(
      "kernels::layernorm_backward_dw", n, dw,
      KOKKOS_LAMBDA(int i, int j) { return dy(i, j) * (x(i, j) - mean(i)) * rstd(i); });
  add_column_sums(
      "kernels::layernorm_backward_db", n, db, KOKKOS_LAMBDA(int i, int j) { return dy(i, j); });
}

template <class T>
void rmsnorm_forward(View2<const T> x, View1<const T> w, T eps, View2<T> y, View1<T> rstd) {
  const int d = int(x.extent(1));
  Kokkos::parallel_for(
      "kernels::rmsnorm_forward", row_teams(x.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const acc_t ms = team_sum(t, d, [&](int j) { return acc_t(x(i, j)) * x(i, j); }) / d;
        const T r = T(1 / fsqrt(ms + acc_t(eps)));
        team_for(t, d, [&](int j) { y(i, j) = x(i, j) * r * w(j); });
        Kokkos::single(Kokkos::PerTeam(t), [&] { rstd(i) = r; });
      });
}

// y = x * rstd * w with rstd = (mean(x^2) + eps)^(-1/2), g = dy * w:
//   dx = rstd * (g - x * rstd^2 * mean(g * x)).
template <class T>
void rmsnorm_backward(View2<const T> dy, View2<const T> x, View1<const T> w, View1<const T> rstd,
                      View2<T> dx, View1<T> dw) {
  const int n = int(x.extent(0)), d = int(x.extent(1));
  Kokkos::parallel_for(
      "kernels::rmsnorm_backward", row_teams(n), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank();
        const T r = rstd(i);
        const T gx_mean = T(team_sum(t, d, [&](int j) { return dy(i, j) * w(j) * x(i, j); }) / d);
        const T c = r * r * gx_mean;
        team_for(t, d, [&](int j) { dx(i, j) += r * (dy(i, j) * w(j) - x(i, j) * c); });
      });
  add_column_sums(
      "kernels::rmsnorm_backward_dw", n, dw,
      KOKKOS_LAMBDA(int i, int j) { return dy(i, j) * x(i, j) * rstd(i); });
}

#define FURNACE_NORMS(T)                                                                          \
  template void layernorm_forward<T>(View2<const T>, View1<const T>, View1<const T>, T, View2<T>, \
                                     View1<T>, View1<T>);                                         \
  template void layernorm_backward<T>(View2<const T>, View2<const T>, View1<const T>,             \
                                      View1<const T>, View1<const T>, View2<T>, View1<T>,         \
                                      View1<T>);                                                  \
  template void rmsnorm_forward<T>(View2<const T>, View1<const T>, T, View2<T>, View1<T>);        \
  template void rmsnorm_backward<T>(View2<const T>, View2<const T>, View1<const T>,               \
                                    View1<const T>, View2<T>, View1<T>);
FURNACE_NORMS(float)
FURNACE_NORMS(double)

}  // namespace furnace::kernels
