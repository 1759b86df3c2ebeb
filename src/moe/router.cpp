#include "moe/router.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/gemm.hpp"
#include "kernels/routing.hpp"
#include "kernels/softmax.hpp"

namespace furnace::moe {

namespace k = furnace::kernels;
using k::View1;
using k::View2;

std::int64_t expert_capacity(const RouterConfig& cfg, std::int64_t tokens) {
  if (cfg.capacity_factor <= 0) return -1;
  return std::int64_t(std::ceil(cfg.capacity_factor * tokens * cfg.top_k / cfg.experts));
}

std::int64_t max_kept_copies(const RouterConfig& cfg, std::int64_t tokens, int experts) {
  const std::int64_t cap = expert_capacity(cfg, tokens);
  const std::int64_t per_expert = cap < 0 ? tokens : std::min(cap, tokens);
  return std::min(tokens * cfg.top_k, experts * per_expert);
}

Router::Router(const RouterConfig& cfg, int d_model, std::int64_t max_tokens, memory::Arenas& arenas,
               const RouterGradBuffers* shared)
    : cfg_(cfg), d_(d_model) {
  const int E = cfg.experts, K = cfg.top_k;
  // The routing decision and what its backward reads; the gradients are scratch.
  auto& act = arenas.activations;
  logits_ = act.view2<float>(max_tokens, E);
  probs_ = act.view2<float>(max_tokens, E);
  weight_ = act.view2<float>(max_tokens, K);
  idx_ = act.view2<k::index_t>(max_tokens, K);
  slot_ = act.view2<k::index_t>(max_tokens, K);
  src_ = act.view1<k::index_t>(max_tokens * K);
  demand_ = act.view1<k::index_t>(E);
  counts_ = act.view1<k::index_t>(E);
  offsets_ = act.view1<k::index_t>(E + 1);
  prob_sum_ = act.view1<float>(E);
  if (shared) {
    if (std::int64_t(shared->dprobs.extent(0)) < max_tokens || int(shared->dprobs.extent(1)) != E ||
        std::int64_t(shared->dlogits.extent(0)) < max_tokens || int(shared->dlogits.extent(1)) != E)
      throw std::logic_error("Router: the shared gradient buffers are smaller than [max_tokens, experts]");
    dprobs_ = shared->dprobs;
    dlogits_ = shared->dlogits;
  } else {
    dprobs_ = arenas.workspace.view2<float>(max_tokens, E);
    dlogits_ = arenas.workspace.view2<float>(max_tokens, E);
  }
  offsets_host_.assign(E + 1, 0);
}

void Router::forward(View2<const float> x, View2<const float> w, const SumReducer& reduce) {
  const int E = cfg_.experts, K = cfg_.top_k;
  n_ = x.extent(0);
  auto logits = View2<float>(logits_.data(), n_, E);
  auto probs = View2<float>(probs_.data(), n_, E);
  auto weight = View2<float>(weight_.data(), n_, K);
  auto idx = View2<k::index_t>(idx_.data(), n_, K);
  auto slot = View2<k::index_t>(slot_.data(), n_, K);
  k::gemm<float>(k::Op::N, k::Op::N, n_, E, d_, 1.0f, x.data(), d_, w.data(), E, 0.0f,
                 logits.data(), E);
  k::softmax_forward<float>(logits, probs);
  k::topk_forward<float>(probs, K, idx, weight);
  const std::int64_t cap = expert_capacity(cfg_, n_);
  k::assign_slots(idx, E, static_cast<int>(cap), demand_, counts_, offsets_, slot, src_);

  // Global statistics for the auxiliary losses: [demand | prob_sum | n | z_sum].
  k::router_prob_sum<float>(probs, prob_sum_);
  auto demand_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), demand_);
  auto offsets_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), offsets_);
  auto psum_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), prob_sum_);
  std::vector<double> g(2 * E + 2);
  for (int e = 0; e < E; ++e) {
    g[e] = demand_h(e);
    g[E + e] = psum_h(e);
  }
  g[2 * E] = double(n_);
  g[2 * E + 1] = k::z_loss_sum<float>(logits);
  if (reduce) reduce(g.data(), int(g.size()));
  tokens_total_ = g[2 * E];
  stats_.aux_loss = 0;
  stats_.z_loss = 0;
  stats_.load.assign(g.begin(), g.begin() + E);
  for (int e = 0; e <= E; ++e) offsets_host_[e] = offsets_h(e);
  stats_.dropped = std::int64_t(n_) * K - offsets_host_[E];
  if (tokens_total_ == 0) return;  // no token anywhere: no auxiliary loss
  for (int e = 0; e < E; ++e)
    stats_.aux_loss += (g[e] / (tokens_total_ * K)) * (g[E + e] / tokens_total_);
  stats_.aux_loss *= E;
  stats_.z_loss = g[2 * E + 1] / tokens_total_;
}

void Router::backward(View2<const float> x, View2<const float> w, View2<const float> dweight,
                      View2<float> dx, View2<float> dw) {
  const int E = cfg_.experts, K = cfg_.top_k;
  auto logits = View2<const float>(logits_.data(), n_, E);
  auto probs = View2<const float>(probs_.data(), n_, E);
  auto dprobs = View2<float>(dprobs_.data(), n_, E);
  auto dlogits = View2<float>(dlogits_.data(), n_, E);
  auto idx = View2<const k::index_t>(idx_.data(), n_, K);
  Kokkos::deep_copy(dprobs, 0.0f);
  Kokkos::deep_copy(dlogits, 0.0f);
  k::topk_backward<float>(idx, dweight, dprobs);
  if (cfg_.aux_loss_coef != 0) {
    // demand is the global count so that every rank differentiates the same loss.
    auto demand = View1<k::index_t>(demand_.data(), E);
    auto demand_h = Kokkos::create_mirror_view(demand);
    for (int e = 0; e < E; ++e) demand_h(e) = static_cast<k::index_t>(stats_.load[e]);
    Kokkos::deep_copy(demand, demand_h);
    k::load_balance_backward<float>(demand, K, tokens_total_, float(cfg_.aux_loss_coef) * loss_scale_, dprobs);
  }
  k::softmax_backward<float>(probs, dprobs, dlogits);
  if (cfg_.z_loss_coef != 0)
    k::z_loss_backward<float>(logits, float(cfg_.z_loss_coef) * loss_scale_, tokens_total_, dlogits);
  // dw += x^T dlogits ; dx += dlogits w^T
  k::gemm<float>(k::Op::T, k::Op::N, d_, E, n_, 1.0f, x.data(), d_, dlogits.data(), E, 1.0f,
                 dw.data(), E);
  k::gemm<float>(k::Op::N, k::Op::T, n_, d_, E, 1.0f, dlogits.data(), E, w.data(), E, 1.0f,
                 dx.data(), d_);
}

}  // namespace furnace::moe
