// MoE routing kernels: top-k, slot assignment, permute / unpermute and the router's
// auxiliary losses, against plain loops, hand-worked cases and finite differences.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/routing.hpp"
#include "testing.hpp"

namespace furnace {
namespace {

using kernels::index_t;
using testing::Tensor;

// ---------------------------------------------------------------- top-k

TEST(Routing, TopkMatchesStableSortWithTiesToLowerId) {
  const int n = 5, E = 4;
  auto probs = testing::random_tensor<float>(n * E, 1);
  for (int e = 0; e < E; ++e) probs[1 * E + e] = 0.25f;  // a row of ties
  probs[2 * E + 3] = probs[2 * E + 1];                    // a tie between 1 and 3
  probs[3 * E + 2] = probs[3 * E + 0] = 5.0f;             // a tie for first place
  for (int k : {1, 2, E}) {
    Tensor<index_t> idx(n * k, -7);
    Tensor<float> weight(n * k, -7.0f);
    kernels::topk_forward<float>(probs.v2(n, E), k, idx.v2(n, k), weight.v2(n, k));
    for (int i = 0; i < n; ++i) {
      std::vector<int> order(E);
      std::iota(order.begin(), order.end(), 0);
      // Stable: equal values keep ascending expert order.
      std::stable_sort(order.begin(), order.end(),
                       [&](int a, int b) { return probs[i * E + a] > probs[i * E + b]; });
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(idx[i * k + j], order[j]) << "k=" << k << " row " << i << " choice " << j;
        EXPECT_EQ(weight[i * k + j], probs[i * E + order[j]]) << "k=" << k << " row " << i;
      }
    }
  }
}

TEST(Routing, TopkBackwardMatchesFiniteDifferences) {
  const int n = 6, E = 5, k = 2;
  auto probs = testing::random_tensor<double>(n * E, 2);  // no ties: differentiable
  auto r = testing::random_tensor<double>(n * k, 3);
  Tensor<index_t> idx(n * k);
  Tensor<double> weight(n * k);
  auto loss = [&] {
    kernels::topk_forward<double>(probs.v2(n, E), k, idx.v2(n, k), weight.v2(n, k));
    return testing::dot(weight, r);
  };
  loss();
  const auto dprobs0 = testing::random_tensor<double>(n * E, 4);
  Tensor<double> dprobs = dprobs0;
  kernels::topk_backward<double>(idx.v2(n, k), r.v2(n, k), dprobs.v2(n, E));
  std::vector<double> grad(n * E);
  for (int i = 0; i < n * E; ++i) grad[i] = dprobs[i] - dprobs0[i];
  testing::expect_gradient_matches(probs.data, grad, loss, "dprobs");
}

// ---------------------------------------------------------------- slot assignment

struct Routed {
  int n, experts, k;
  Tensor<index_t> idx, demand, counts, offsets, slot, src;
  Routed(std::vector<index_t> choices, int n_, int experts_, int k_, int capacity)
      : n(n_), experts(experts_), k(k_), idx(0), demand(experts, -7), counts(experts, -7),
        offsets(experts + 1, -7), slot(n * k, -7), src(n * k, -7) {
    idx.data = std::move(choices);
    kernels::assign_slots(idx.v2(n, k), experts, capacity, demand.v1(), counts.v1(),
                          offsets.v1(), slot.v2(n, k), src.v1());
  }
  int rows() const { return offsets[experts]; }
};

// Each token picks k distinct experts at random.
std::vector<index_t> random_choices(int n, int experts, int k, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<index_t> idx;
  for (int i = 0; i < n; ++i) {
    std::vector<index_t> e(experts);
    std::iota(e.begin(), e.end(), 0);
    std::shuffle(e.begin(), e.end(), gen);
    idx.insert(idx.end(), e.begin(), e.begin() + k);
  }
  return idx;
}

// The GShard rule written out: first choices in token order, then second choices...
void expect_matches_reference(const Routed& r, int capacity) {
  std::vector<int> want_demand(r.experts, 0), rank(r.n * r.k, -1);
  for (int j = 0; j < r.k; ++j)
    for (int i = 0; i < r.n; ++i) {
      const int e = r.idx[i * r.k + j];
      if (capacity < 0 || want_demand[e] < capacity) rank[i * r.k + j] = want_demand[e];
      ++want_demand[e];
    }
  int offset = 0;
  for (int e = 0; e < r.experts; ++e) {
    const int kept = capacity < 0 ? want_demand[e] : std::min(want_demand[e], capacity);
    EXPECT_EQ(r.demand[e], want_demand[e]) << "expert " << e;
    EXPECT_EQ(r.counts[e], kept) << "expert " << e;
    EXPECT_EQ(r.offsets[e], offset) << "expert " << e;
    offset += kept;
  }
  EXPECT_EQ(r.offsets[r.experts], offset);
  for (int c = 0; c < r.n * r.k; ++c) {
    const int e = r.idx[c], want = rank[c] < 0 ? -1 : r.offsets[e] + rank[c];
    EXPECT_EQ(r.slot[c], want) << "copy " << c;
    if (want >= 0) {
      EXPECT_EQ(r.src[want], c / r.k) << "row " << want;
    }
  }
}

TEST(Routing, AssignSlotsHandWorkedGShardPriority) {
  // Capacity 2. First choices: t0->e0, t1->e0, t2->e1. Second choices: t0->e1 fits,
  // t1->e1 is dropped (e1 full), t2->e0 is dropped (e0 full).
  Routed r({0, 1, 0, 1, 1, 0}, 3, 2, 2, 2);
  EXPECT_EQ(r.demand.data, (std::vector<index_t>{3, 3}));
  EXPECT_EQ(r.counts.data, (std::vector<index_t>{2, 2}));
  EXPECT_EQ(r.offsets.data, (std::vector<index_t>{0, 2, 4}));
  EXPECT_EQ(r.slot.data, (std::vector<index_t>{0, 3, 1, -1, 2, -1}));
  EXPECT_EQ(std::vector<index_t>(r.src.data.begin(), r.src.data.begin() + 4),
            (std::vector<index_t>{0, 1, 2, 0}));
}

TEST(Routing, AssignSlotsAllToOneExpertCountsDrops) {
  Routed r({1, 1, 1, 1, 1}, 5, 3, 1, 3);  // experts 0 and 2 get nothing
  EXPECT_EQ(r.demand.data, (std::vector<index_t>{0, 5, 0}));
  EXPECT_EQ(r.counts.data, (std::vector<index_t>{0, 3, 0}));
  EXPECT_EQ(r.offsets.data, (std::vector<index_t>{0, 0, 3, 3}));
  EXPECT_EQ(r.slot.data, (std::vector<index_t>{0, 1, 2, -1, -1}));
  EXPECT_EQ(std::vector<index_t>(r.src.data.begin(), r.src.data.begin() + 3),
            (std::vector<index_t>{0, 1, 2}));
}

TEST(Routing, AssignSlotsMatchesReferenceLoop) {
  struct Case { int n, experts, k; };
  for (Case c : {Case{37, 5, 2}, Case{1, 4, 1}, Case{1, 3, 3}, Case{9, 4, 4}, Case{20, 1, 1}})
    for (int capacity : {-1, 0, 1, 3, 9, 1000}) {
      SCOPED_TRACE(::testing::Message() << "n=" << c.n << " E=" << c.experts << " k=" << c.k
                                        << " capacity=" << capacity);
      Routed r(random_choices(c.n, c.experts, c.k, 5), c.n, c.experts, c.k, capacity);
      expect_matches_reference(r, capacity);
    }
}

// ---------------------------------------------------------------- permute / unpermute

// 23 tokens, 4 experts, top-2, capacity 10: some copies are dropped.
Routed dropping_routing() {
  Routed r(random_choices(23, 4, 2, 6), 23, 4, 2, 10);
  EXPECT_LT(r.rows(), 23 * 2) << "the test wants dropped copies";
  EXPECT_GT(r.rows(), 0);
  return r;
}

TEST(Routing, PermuteForwardGathersAndBackwardIsItsGradient) {
  const int d = 3;
  Routed r = dropping_routing();
  auto x = testing::random_tensor<double>(r.n * d, 7);
  auto w = testing::random_tensor<double>(r.rows() * d, 8);  // loss = dot(xp, w)
  Tensor<double> xp(r.rows() * d, -7);
  auto loss = [&] {
    kernels::permute_forward<double>(x.v2(r.n, d), r.src.v1(), xp.v2(r.rows(), d));
    return testing::dot(xp, w);
  };
  loss();
  for (int row = 0; row < r.rows(); ++row)
    for (int c = 0; c < d; ++c) EXPECT_EQ(xp[row * d + c], x[r.src[row] * d + c]);
  const auto dx0 = testing::random_tensor<double>(r.n * d, 9);
  Tensor<double> dx = dx0;
  kernels::permute_backward<double>(w.v2(r.rows(), d), r.slot.v2(r.n, r.k), dx.v2(r.n, d));
  std::vector<double> grad(dx.size());
  for (std::size_t i = 0; i < grad.size(); ++i) grad[i] = dx[i] - dx0[i];
  testing::expect_gradient_matches(x.data, grad, loss, "dx");
}

TEST(Routing, UnpermuteForwardMatchesLoopAndBackwardMatchesFiniteDifferences) {
  const int d = 3;
  Routed r = dropping_routing();
  const int k = r.k;
  auto yp = testing::random_tensor<double>(r.rows() * d, 10);
  auto weight = testing::random_tensor<double>(r.n * k, 11);
  auto w = testing::random_tensor<double>(r.n * d, 12);  // loss = dot(y, w)
  Tensor<double> y(r.n * d);
  auto run = [&] {
    std::fill(y.data.begin(), y.data.end(), 0.0);
    kernels::unpermute_forward<double>(yp.v2(r.rows(), d), r.slot.v2(r.n, k),
                                       weight.v2(r.n, k), y.v2(r.n, d));
  };
  auto loss = [&] { run(); return testing::dot(y, w); };
  run();
  for (int i = 0; i < r.n; ++i)
    for (int c = 0; c < d; ++c) {
      double want = 0;
      for (int j = 0; j < k; ++j)
        if (int s = r.slot[i * k + j]; s >= 0) want += weight[i * k + j] * yp[s * d + c];
      EXPECT_NEAR(y[i * d + c], want, 1e-14) << "token " << i;
    }
  const auto dyp0 = testing::random_tensor<double>(yp.size(), 13);
  const auto dweight0 = testing::random_tensor<double>(weight.size(), 14);
  Tensor<double> dyp = dyp0, dweight = dweight0;
  kernels::unpermute_backward<double>(w.v2(r.n, d), yp.v2(r.rows(), d), r.slot.v2(r.n, k),
                                      weight.v2(r.n, k), dyp.v2(r.rows(), d),
                                      dweight.v2(r.n, k));
  std::vector<double> g_yp(dyp.size()), g_w(dweight.size());
  for (std::size_t i = 0; i < g_yp.size(); ++i) g_yp[i] = dyp[i] - dyp0[i];
  for (std::size_t i = 0; i < g_w.size(); ++i) g_w[i] = dweight[i] - dweight0[i];
  testing::expect_gradient_matches(yp.data, g_yp, loss, "dyp");
  testing::expect_gradient_matches(weight.data, g_w, loss, "dweight");
}

// ---------------------------------------------------------------- auxiliary losses

TEST(Routing, RouterProbSumMatchesLoop) {
  const int n = 9, E = 4;
  auto probs = testing::random_tensor<float>(n * E, 15);
  Tensor<float> sum(E, -7.0f);
  kernels::router_prob_sum<float>(probs.v2(n, E), sum.v1());
  for (int e = 0; e < E; ++e) {
    double want = 0;
    for (int i = 0; i < n; ++i) want += probs[i * E + e];
    EXPECT_NEAR(sum[e], want, 1e-5) << "expert " << e;
  }
}

TEST(Routing, LoadBalanceBackwardMatchesFiniteDifferences) {
  const int n = 7, E = 4, k = 2;
  const double coef = 0.3, tokens_total = 3.0 * n;  // as if summed over three ranks
  auto probs = testing::random_tensor<double>(n * E, 16);
  Tensor<index_t> demand(E);
  demand.data = {5, 0, 6, 3};
  Tensor<double> prob_sum(E);
  // aux = coef * E * sum_e f_e P_e, f_e = demand / (T k) held constant, P_e = prob_sum / T.
  auto loss = [&] {
    kernels::router_prob_sum<double>(probs.v2(n, E), prob_sum.v1());
    double aux = 0;
    for (int e = 0; e < E; ++e)
      aux += demand[e] / (tokens_total * k) * prob_sum[e] / tokens_total;
    return coef * E * aux;
  };
  const auto dprobs0 = testing::random_tensor<double>(n * E, 17);
  Tensor<double> dprobs = dprobs0;
  kernels::load_balance_backward<double>(demand.v1(), k, tokens_total, coef, dprobs.v2(n, E));
  std::vector<double> grad(n * E);
  for (int i = 0; i < n * E; ++i) grad[i] = dprobs[i] - dprobs0[i];
  testing::expect_gradient_matches(probs.data, grad, loss, "dprobs");
}

TEST(Routing, ZLossSumMatchesLoopAndBackwardMatchesFiniteDifferences) {
  const int n = 6, E = 5;
  const double coef = 0.7, tokens_total = n;
  auto logits = testing::random_tensor<double>(n * E, 18, 3.0);
  logits[0] = 40.0;  // a large logit: the kernel must subtract the max
  auto z_sum = [&] { return kernels::z_loss_sum<double>(logits.v2(n, E)); };
  double want = 0;
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int e = 0; e < E; ++e) s += std::exp(logits[i * E + e]);
    want += std::log(s) * std::log(s);
  }
  EXPECT_NEAR(z_sum(), want, 1e-10 * want);
  Tensor<float> logits_f(n * E);  // the float instantiation agrees to float precision
  for (int i = 0; i < n * E; ++i) logits_f[i] = float(logits[i]);
  EXPECT_NEAR(kernels::z_loss_sum<float>(logits_f.v2(n, E)), want, 1e-5 * want);
  const auto dlogits0 = testing::random_tensor<double>(n * E, 20);
  Tensor<double> dlogits = dlogits0;
  kernels::z_loss_backward<double>(logits.v2(n, E), coef, tokens_total, dlogits.v2(n, E));
  std::vector<double> grad(n * E);
  for (int i = 0; i < n * E; ++i) grad[i] = dlogits[i] - dlogits0[i];
  auto loss = [&] { return coef * z_sum() / tokens_total; };
  testing::expect_gradient_matches(logits.data, grad, loss, "dlogits");
}

}  // namespace
}  // namespace furnace
