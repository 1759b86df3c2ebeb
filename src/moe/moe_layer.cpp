#include "moe/moe_layer.hpp"

#include <stdexcept>
#include <string>

#include "kernels/routing.hpp"

namespace furnace::moe {

namespace k = furnace::kernels;
using k::View2;

namespace {

// What a rank's experts may receive in one step: each of the ep sources keeps at most
// max_kept_copies(.., E / ep) copies for this rank's experts.
std::int64_t unbounded_expert_rows(const RouterConfig& cfg, std::int64_t max_tokens, int ep) {
  return ep > 1 ? ep * max_kept_copies(cfg, max_tokens, cfg.experts / ep) : 0;
}

MoeScratchShape shape_of(const RouterConfig& cfg, int d, int hidden, Activation act,
                         std::int64_t max_tokens, int ep, std::int64_t buffer_rows) {
  MoeScratchShape s;
  s.d_model = d;
  s.experts = cfg.experts;
  s.top_k = cfg.top_k;
  s.hidden = hidden;
  s.hidden_in = act == Activation::Swiglu ? 2 * hidden : hidden;
  s.tokens = max_tokens;
  s.rows = max_kept_copies(cfg, max_tokens, cfg.experts);
  s.exchange = ep > 1;
  // Without a cap, what any step may bring (Dispatcher::plan checks it); with one, at
  // most that (a larger buffer would never fill).
  const std::int64_t all = unbounded_expert_rows(cfg, max_tokens, ep);
  s.expert_rows = !s.exchange ? s.rows : buffer_rows > 0 ? std::min(all, buffer_rows) : all;
  return s;
}

std::shared_ptr<MoeScratch> make_scratch(const MoeScratchShape& shape, memory::Arenas& arenas,
                                         MoeScratchSlot* shared) {
  return shared ? shared->get(shape, arenas) : std::make_shared<MoeScratch>(shape, arenas);
}

std::unique_ptr<Dispatcher> make_dispatcher(const MoeScratchShape& s, std::int64_t unbounded_rows,
                                            comm::RowExchange* ex, int ep, memory::Arena& comm_arena,
                                            kernels::Precision precision) {
  if (ep == 1) return nullptr;
  if (s.experts % ep != 0)
    throw std::invalid_argument("MoeLayer: " + std::to_string(s.experts) + " experts do not split over " +
                                std::to_string(ep) + " ep ranks");
  return std::make_unique<Dispatcher>(ex, ep, s.experts / ep, s.d_model, s.expert_rows, comm_arena,
                                      /*rounds=*/s.expert_rows < unbounded_rows, precision, s.rows);
}

}  // namespace

ExpertRowBytes expert_row_bytes(int d, int hidden, Activation act, k::Precision stored) {
  const std::uint64_t f = sizeof(float), h = hidden, h1 = act == Activation::Swiglu ? 2 * h : h;
  const std::uint64_t h_bytes = stored == k::Precision::FP32 ? f : sizeof(std::uint16_t);
  return {.per_layer = 3 * d * f + 2 * sizeof(k::index_t) + h1 * f + h * h_bytes, .shared = (2 * d + h1 + h) * f};
}

std::int64_t buffer_rows_for(std::uint64_t budget, int moe_layers, int d, int hidden, Activation act,
                             k::Precision stored) {
  constexpr std::uint64_t kAlign = 64, kPerLayer = 7, kShared = 4;  // arena rounding, buffers
  const std::uint64_t rounding = kAlign * (kPerLayer * moe_layers + kShared);
  const ExpertRowBytes b = expert_row_bytes(d, hidden, act, stored);
  const std::uint64_t row = moe_layers * b.per_layer + b.shared;
  return budget > rounding ? std::int64_t((budget - rounding) / row) : 0;
}

MoeLayer::MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
                   std::int64_t max_tokens, memory::Arenas& arenas, comm::RowExchange* exchange,
                   int ep_size, MoeScratchSlot* shared, std::int64_t buffer_rows, kernels::Precision precision,
                   kernels::Precision stored)
    : MoeLayer(shape_of(cfg, d_model, hidden, act, max_tokens, ep_size, buffer_rows),
               unbounded_expert_rows(cfg, max_tokens, ep_size), cfg, act, arenas, exchange, ep_size, shared,
               precision, stored) {}

MoeLayer::MoeLayer(const MoeScratchShape& shape, std::int64_t unbounded_rows, const RouterConfig& cfg,
                   Activation act, memory::Arenas& arenas, comm::RowExchange* exchange, int ep_size,
                   MoeScratchSlot* shared, kernels::Precision precision, kernels::Precision stored)
    : d_(shape.d_model),
      scratch_(make_scratch(shape, arenas, shared)),
      router_(cfg, shape.d_model, shape.tokens, arenas, &scratch_->router),
      dispatch_(make_dispatcher(shape, unbounded_rows, exchange, ep_size, arenas.communication, precision)),
      experts_(cfg.experts / ep_size, shape.d_model, shape.hidden, act, shape.expert_rows, arenas,
               &scratch_->ffn, stored) {
  experts_.set_precision(precision);
  if (dispatch_) {
    // The expert side of the exchange: received rows (kept for the backward) and results.
    xe_ = arenas.communication.view2<float>(shape.expert_rows, d_);
    ye_ = arenas.communication.view2<float>(shape.expert_rows, d_);
  }
  // Token copies grouped by expert, and their combine (the backward reads both).
  xp_ = arenas.activations.view2<float>(shape.rows, d_);
  yp_ = arenas.activations.view2<float>(shape.rows, d_);
}

void MoeLayer::forward(View2<const float> x, const MoeWeights& w, View2<float> y) {
  router_.forward(x, w.router, reduce_);
  const std::int64_t rows = router_.rows();
  if (rows > std::int64_t(xp_.extent(0)))
    throw std::logic_error("MoeLayer::forward: the router kept " + std::to_string(rows) +
                           " copies, more than the " + std::to_string(xp_.extent(0)) +
                           " the buffers were sized for");
  auto xp = View2<float>(xp_.data(), rows, d_);
  auto yp = View2<float>(yp_.data(), rows, d_);
  k::permute_forward<float>(x, router_.src(), xp);
  if (dispatch_) {
    const int rounds = dispatch_->plan(router_.offsets());
    for (int t = 0; t < rounds; ++t) {
      const auto& offsets = dispatch_->round(t);
      const std::int64_t R = offsets.back();
      auto xe = View2<float>(xe_.data(), R, d_), ye = View2<float>(ye_.data(), R, d_);
      dispatch_->to_experts(xp, xe);
      experts_.forward(xe, offsets, w.w1, w.w2, ye);
      dispatch_->from_experts(ye, yp);
    }
  } else {
    experts_.forward(xp, router_.offsets(), w.w1, w.w2, yp);
  }
  Kokkos::deep_copy(y, 0.0f);
  k::unpermute_forward<float>(yp, router_.slot(), router_.weight(), y);
}

void MoeLayer::backward(View2<const float> dy, View2<const float> x, const MoeWeights& w,
                        View2<float> dx, const MoeWeights& g) {
  const std::int64_t n = x.extent(0), rows = router_.rows();
  const int K = router_.config().top_k;
  auto yp = View2<const float>(yp_.data(), rows, d_);
  auto dyp = View2<float>(scratch_->dyp.data(), rows, d_);
  auto dxp = View2<float>(scratch_->dxp.data(), rows, d_);
  auto dweight = View2<float>(scratch_->dweight.data(), n, K);
  Kokkos::deep_copy(dyp, 0.0f);
  Kokkos::deep_copy(dweight, 0.0f);
  k::unpermute_backward<float>(dy, yp, router_.slot(), router_.weight(), dyp, dweight);
  if (dispatch_) {
    // The same exchanges as the forward, carrying gradients, round by round from the last.
    const int rounds = dispatch_->rounds();
    auto xp = View2<const float>(xp_.data(), rows, d_);
    for (int t = rounds - 1; t >= 0; --t) {
      const auto& offsets = dispatch_->round(t);
      const std::int64_t R = offsets.back();
      auto xe = View2<float>(xe_.data(), R, d_);
      if (t != rounds - 1) {  // the forward left only the last round's rows in xe, a, h
        dispatch_->to_experts(xp, xe);
        experts_.forward_hidden(xe, offsets, w.w1);
      }
      auto dye = View2<float>(scratch_->dye.data(), R, d_), dxe = View2<float>(scratch_->dxe.data(), R, d_);
      dispatch_->to_experts(dyp, dye);
      experts_.backward(dye, xe, w.w1, w.w2, dxe, g.w1, g.w2);
      dispatch_->from_experts(dxe, dxp);
    }
  } else {
    experts_.backward(dyp, View2<const float>(xp_.data(), rows, d_), w.w1, w.w2, dxp, g.w1, g.w2);
  }
  k::permute_backward<float>(dxp, router_.slot(), dx);
  router_.backward(x, w.router, dweight, dx, g.router);
}

}  // namespace furnace::moe
