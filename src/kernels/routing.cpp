// MoE routing kernels. Every kernel is deterministic: each output element is written
// by one thread that sums its terms in a fixed order, so there are no atomics.
#include "kernels/routing.hpp"

#include <cstdint>

#include "kernels/math.hpp"

namespace furnace::kernels {
namespace {

// logsumexp of row i, max-subtracted, carried in double.
template <class T>
KOKKOS_INLINE_FUNCTION acc_t row_logsumexp(View2<const T> x, std::int64_t i) {
  const int cols = int(x.extent(1));
  acc_t m = x(i, 0);
  for (int e = 1; e < cols; ++e) m = fmax(m, acc_t(x(i, e)));
  acc_t s = 0;
  for (int e = 0; e < cols; ++e) s += fexp(acc_t(x(i, e)) - m);
  return m + flog(s);
}

}  // namespace

template <class T>
void topk_forward(View2<const T> probs, int k, View2<index_t> idx, View2<T> weight) {
  const int experts = int(probs.extent(1));
  Kokkos::parallel_for("kernels::topk_forward", Range(0, probs.extent(0)),
                       KOKKOS_LAMBDA(const std::int64_t i) {
    // Choice j is the best expert ranked strictly after choice j-1 in the order
    // (value descending, id ascending): O(k E), no scratch, ties to the lower id.
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < experts; ++e) {
        const T p = probs(i, e);
        if (j > 0) {
          const T prev = weight(i, j - 1);
          if (p > prev || (p == prev && e <= idx(i, j - 1))) continue;  // already ranked
        }
        if (best < 0 || p > probs(i, best)) best = e;
      }
      idx(i, j) = best;
      weight(i, j) = probs(i, best);
    }
  });
}

template <class T>
void topk_backward(View2<const index_t> idx, View2<const T> dweight, View2<T> dprobs) {
  const int k = int(idx.extent(1));
  // The k experts of a row are distinct, so a row's scatter never collides.
  Kokkos::parallel_for("kernels::topk_backward", Range(0, idx.extent(0)),
                       KOKKOS_LAMBDA(const std::int64_t i) {
    for (int j = 0; j < k; ++j) dprobs(i, idx(i, j)) += dweight(i, j);
  });
}

void assign_slots(View2<const index_t> idx, int experts, int capacity, View1<index_t> demand,
                  View1<index_t> counts, View1<index_t> offsets, View2<index_t> slot,
                  View1<index_t> src) {
  const int n = int(idx.extent(0)), k = int(idx.extent(1));
  // Pass 1, one thread per expert: scan the copies in priority order (j-major, then
  // token order) and give each kept copy its rank within the expert. Work is
  // O(E n k), but the result does not depend on the thread count.
  Kokkos::parallel_for("kernels::assign_slots", Range(0, experts), KOKKOS_LAMBDA(const int e) {
    index_t want = 0, kept = 0;
    for (int j = 0; j < k; ++j)
      for (int i = 0; i < n; ++i) {
        if (idx(i, j) != e) continue;
        ++want;
        slot(i, j) = (capacity < 0 || kept < capacity) ? kept++ : -1;
      }
    demand(e) = want;
    counts(e) = kept;
  });
  Kokkos::parallel_scan("kernels::assign_slots_offsets", Range(0, experts),
                        KOKKOS_LAMBDA(const int e, index_t& run, const bool final) {
    if (final) offsets(e) = run;
    run += counts(e);
    if (final && e == experts - 1) offsets(experts) = run;
  });
  // Pass 2, per token: ranks become rows of the grouped buffer; record their source.
  Kokkos::parallel_for("kernels::assign_slots_rows", Range(0, n), KOKKOS_LAMBDA(const int i) {
    for (int j = 0; j < k; ++j) {
      const index_t e = idx(i, j);
      if (e < 0 || e >= experts) {  // not an expert (caller bug): never routed
        slot(i, j) = -1;
      } else if (slot(i, j) >= 0) {
        slot(i, j) += offsets(e);
        src(slot(i, j)) = i;
      }
    }
  });
}

template <class T>
void permute_forward(View2<const T> x, View1<const index_t> src, View2<T> xp) {
  const std::int64_t d = xp.extent(1);
  Kokkos::parallel_for("kernels::permute_forward", Range(0, xp.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    xp(t / d, t % d) = x(src(t / d), t % d);
  });
}

template <class T>
void permute_backward(View2<const T> dxp, View2<const index_t> slot, View2<T> dx) {
  const std::int64_t d = dx.extent(1);
  const int k = int(slot.extent(1));
  Kokkos::parallel_for("kernels::permute_backward", Range(0, dx.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t i = t / d, c = t % d;
    for (int j = 0; j < k; ++j)
      if (slot(i, j) >= 0) dx(i, c) += dxp(slot(i, j), c);
  });
}

template <class T>
void unpermute_forward(View2<const T> yp, View2<const index_t> slot, View2<const T> weight,
                       View2<T> y) {
  const std::int64_t d = y.extent(1);
  const int k = int(slot.extent(1));
  Kokkos::parallel_for("kernels::unpermute_forward", Range(0, y.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t i = t / d, c = t % d;
    for (int j = 0; j < k; ++j)
      if (slot(i, j) >= 0) y(i, c) += weight(i, j) * yp(slot(i, j), c);
  });
}

template <class T>
void unpermute_backward(View2<const T> dy, View2<const T> yp, View2<const index_t> slot,
                        View2<const T> weight, View2<T> dyp, View2<T> dweight) {
  const std::int64_t d = dy.extent(1);
  const int k = int(slot.extent(1));
  // Each grouped row belongs to exactly one copy (i, j): a gather per token, no conflicts.
  Kokkos::parallel_for("kernels::unpermute_backward", Range(0, dy.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t i = t / d, c = t % d;
    for (int j = 0; j < k; ++j)
      if (slot(i, j) >= 0) dyp(slot(i, j), c) += weight(i, j) * dy(i, c);
  });
  Kokkos::parallel_for("kernels::unpermute_backward_weight", Range(0, slot.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    const std::int64_t i = t / k, r = slot(i, t % k);
    if (r < 0) return;  // a dropped copy did not reach y
    acc_t s = 0;
    for (std::int64_t c = 0; c < d; ++c) s += acc_t(dy(i, c)) * yp(r, c);
    dweight(i, t % k) += T(s);
  });
}

template <class T>
void router_prob_sum(View2<const T> probs, View1<T> prob_sum) {
  const std::int64_t n = probs.extent(0);
  // One thread per expert sums its column in token order.
  Kokkos::parallel_for("kernels::router_prob_sum", Range(0, probs.extent(1)),
                       KOKKOS_LAMBDA(const int e) {
    acc_t s = 0;
    for (std::int64_t i = 0; i < n; ++i) s += probs(i, e);
    prob_sum(e) = T(s);
  });
}

template <class T>
void load_balance_backward(View1<const index_t> demand, int k, double tokens_total, T coef,
                           View2<T> dprobs) {
  const int experts = int(dprobs.extent(1));
  // d(aux)/d(probs[i, e]) = E * f_e / tokens_total, f_e = demand[e] / (tokens_total * k).
  const double per_demand = double(coef) * experts / (double(k) * tokens_total * tokens_total);
  Kokkos::parallel_for("kernels::load_balance_backward", Range(0, dprobs.size()),
                       KOKKOS_LAMBDA(const std::int64_t t) {
    const int e = int(t % experts);
    dprobs(t / experts, e) += T(per_demand * demand(e));
  });
}

template <class T>
double z_loss_sum(View2<const T> logits) {
  double total = 0;
  Kokkos::parallel_reduce("kernels::z_loss_sum", Range(0, logits.extent(0)),
                          KOKKOS_LAMBDA(const std::int64_t i, double& sum) {
    const acc_t lse = row_logsumexp(logits, i);
    sum += lse * lse;
  }, total);
  return total;
}

template <class T>
void z_loss_backward(View2<const T> logits, T coef, double tokens_total, View2<T> dlogits) {
  const int experts = int(logits.extent(1));
  const acc_t scale = 2 * acc_t(coef) / tokens_total;
  Kokkos::parallel_for("kernels::z_loss_backward", Range(0, logits.extent(0)),
                       KOKKOS_LAMBDA(const std::int64_t i) {
    const acc_t lse = row_logsumexp(logits, i);
    for (int e = 0; e < experts; ++e)
      dlogits(i, e) += T(scale * lse * fexp(acc_t(logits(i, e)) - lse));
  });
}

#define FURNACE_INSTANTIATE(T)                                                                   \
  template void topk_forward<T>(View2<const T>, int, View2<index_t>, View2<T>);                  \
  template void topk_backward<T>(View2<const index_t>, View2<const T>, View2<T>);                \
  template void permute_forward<T>(View2<const T>, View1<const index_t>, View2<T>);              \
  template void permute_backward<T>(View2<const T>, View2<const index_t>, View2<T>);             \
  template void unpermute_forward<T>(View2<const T>, View2<const index_t>, View2<const T>,       \
                                     View2<T>);                                                  \
  template void unpermute_backward<T>(View2<const T>, View2<const T>, View2<const index_t>,      \
                                      View2<const T>, View2<T>, View2<T>);                       \
  template void router_prob_sum<T>(View2<const T>, View1<T>);                                    \
  template void load_balance_backward<T>(View1<const index_t>, int, double, T, View2<T>);        \
  template double z_loss_sum<T>(View2<const T>);                                                 \
  template void z_loss_backward<T>(View2<const T>, T, double, View2<T>);
FURNACE_INSTANTIATE(float)
FURNACE_INSTANTIATE(double)
#undef FURNACE_INSTANTIATE

}  // namespace furnace::kernels
