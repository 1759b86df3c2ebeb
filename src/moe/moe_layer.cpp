#include "moe/moe_layer.hpp"

#include "kernels/routing.hpp"

namespace furnace::moe {

namespace k = furnace::kernels;
using k::View2;

namespace {

std::unique_ptr<Dispatcher> make_dispatcher(comm::RowExchange* ex, int ep, const RouterConfig& cfg,
                                            int d, std::int64_t max_tokens, memory::Arena& comm_arena) {
  if (!ex || ep == 1) return nullptr;
  return std::make_unique<Dispatcher>(*ex, ep, cfg.experts / ep, d, max_tokens * cfg.top_k, comm_arena);
}

}  // namespace

MoeLayer::MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
                   std::int64_t max_tokens, memory::Arenas& arenas, comm::RowExchange* exchange,
                   int ep_size)
    : d_(d_model),
      router_(cfg, d_model, max_tokens, arenas),
      dispatch_(make_dispatcher(exchange, ep_size, cfg, d_model, max_tokens, arenas.communication)),
      experts_(cfg.experts / (dispatch_ ? ep_size : 1), d_model, hidden, act,
               dispatch_ ? dispatch_->max_recv_rows() : max_tokens * cfg.top_k, arenas) {
  const std::int64_t max_rows = max_tokens * cfg.top_k;
  if (dispatch_) {
    const std::int64_t R = dispatch_->max_recv_rows();
    // The expert side of the exchange: received rows (kept for the backward) and results.
    auto& comm = arenas.communication;
    xe_ = comm.view2<float>(R, d_model);
    ye_ = comm.view2<float>(R, d_model);
    dxe_ = comm.view2<float>(R, d_model);
    dye_ = comm.view2<float>(R, d_model);
  }
  // Token copies grouped by expert, and their combine (the backward reads both).
  xp_ = arenas.activations.view2<float>(max_rows, d_model);
  yp_ = arenas.activations.view2<float>(max_rows, d_model);
  dxp_ = arenas.workspace.view2<float>(max_rows, d_model);
  dyp_ = arenas.workspace.view2<float>(max_rows, d_model);
  dweight_ = arenas.workspace.view2<float>(max_tokens, cfg.top_k);
}

void MoeLayer::forward(View2<const float> x, const MoeWeights& w, View2<float> y) {
  router_.forward(x, w.router, reduce_);
  const std::int64_t rows = router_.rows();
  auto xp = View2<float>(xp_.data(), rows, d_);
  auto yp = View2<float>(yp_.data(), rows, d_);
  k::permute_forward<float>(x, router_.src(), xp);
  if (dispatch_) {
    expert_offsets_ = dispatch_->plan(router_.offsets());
    const std::int64_t R = expert_offsets_.back();
    auto xe = View2<float>(xe_.data(), R, d_), ye = View2<float>(ye_.data(), R, d_);
    dispatch_->to_experts(xp, xe);
    experts_.forward(xe, expert_offsets_, w.w1, w.w2, ye);
    dispatch_->from_experts(ye, yp);
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
  auto dyp = View2<float>(dyp_.data(), rows, d_);
  auto dxp = View2<float>(dxp_.data(), rows, d_);
  auto dweight = View2<float>(dweight_.data(), n, K);
  Kokkos::deep_copy(dyp, 0.0f);
  Kokkos::deep_copy(dweight, 0.0f);
  k::unpermute_backward<float>(dy, yp, router_.slot(), router_.weight(), dyp, dweight);
  if (dispatch_) {
    // The same exchanges as the forward, carrying gradients.
    const std::int64_t R = expert_offsets_.back();
    auto dye = View2<float>(dye_.data(), R, d_), dxe = View2<float>(dxe_.data(), R, d_);
    dispatch_->to_experts(dyp, dye);
    experts_.backward(dye, View2<const float>(xe_.data(), R, d_), w.w1, w.w2, dxe, g.w1, g.w2);
    dispatch_->from_experts(dxe, dxp);
  } else {
    experts_.backward(dyp, View2<const float>(xp_.data(), rows, d_), w.w1, w.w2, dxp, g.w1, g.w2);
  }
  k::permute_backward<float>(dxp, router_.slot(), dx);
  router_.backward(x, w.router, dweight, dx, g.router);
}

}  // namespace furnace::moe
