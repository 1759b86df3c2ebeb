// One MoE feed-forward layer: gate, permute token copies into expert-grouped rows,
// run the experts, unpermute and combine weighted by the gate.
//
//   x [n, d] -> router -> xp [rows, d] (grouped by expert) -> experts -> yp [rows, d]
//            -> y [n, d] = sum_j weight[i, j] * yp[slot[i, j]]
// With expert parallelism (ep > 1) the experts of this rank are E / ep of them, and
// a Dispatcher carries xp to their owners and the results back; without it the
// rows go straight to the local experts.
//
// Buffer rows (max_tokens: the most tokens any rank of the ep group feeds a step):
//   send side  xp, yp, dxp, dyp      max_kept_copies(cfg, max_tokens, E)
//   expert side xe, ye, dxe, dye,    ep * max_kept_copies(cfg, max_tokens, E / ep): each of
//     the experts' a, h, da, dh     the ep sources keeps at most that many copies for
//                                   this rank's experts, so with a capacity factor the
//                                   bound is about cf * max_tokens * top_k, whatever ep.
// The backward-only ones (dxp, dyp, dweight, dxe, dye, da, dh, router gradients) are a
// MoeScratch shared by the layers of one model when they are given a MoeScratchSlot.
//
// Dropless (capacity_factor <= 0) that bound is max_tokens * top_k * ep rows: what one
// rank receives when every token of the group picks its experts. buffer_rows > 0 caps
// the expert side at that many rows instead (memory.moe_buffer_mb, see
// buffer_rows_for); a step that sends a rank more runs the exchange and the experts in
// rounds (Dispatcher), forward and backward. The backward runs the rounds last to
// first: the last one finds its rows and hidden activations where the forward left
// them; each earlier one brings its rows again and recomputes a = x w1, h = act(a).
#pragma once
#include <memory>

#include "kernels/views.hpp"
#include "memory/arena.hpp"
#include "moe/dispatch.hpp"
#include "moe/experts.hpp"
#include "moe/router.hpp"
#include "moe/scratch.hpp"

namespace furnace::moe {

struct MoeWeights {
  kernels::View2<float> router;  // [d, E]
  kernels::View3<float> w1;      // [E, d, H1]
  kernels::View3<float> w2;      // [E, H, d]
};

class MoeLayer {
 public:
  // ep_size == 1: one process holds all experts. ep_size > 1: this rank holds
  // cfg.experts / ep_size of them and `exchange` (of ep_size ranks) moves the rows; a
  // Measure build may pass none, as the buffers depend on ep_size only.
  // shared == nullptr: the layer allocates its own backward buffers.
  // precision (train.precision): the experts' GEMMs and the dispatch payload; the
  // router stays fp32 (its softmax and top-k decide where tokens go).
  // stored: what the experts keep their hidden activations in (ExpertFFN).
  MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
           std::int64_t max_tokens, memory::Arenas& arenas, comm::RowExchange* exchange = nullptr,
           int ep_size = 1, MoeScratchSlot* shared = nullptr, std::int64_t buffer_rows = 0,
           kernels::Precision precision = kernels::Precision::FP32,
           kernels::Precision stored = kernels::Precision::FP32);

  void set_reducer(SumReducer reduce) { reduce_ = std::move(reduce); }

  // y = moe(x) (overwrites y).
  void forward(kernels::View2<const float> x, const MoeWeights& w, kernels::View2<float> y);
  // dx += d/dx, grads accumulate into g.
  void backward(kernels::View2<const float> dy, kernels::View2<const float> x, const MoeWeights& w,
                kernels::View2<float> dx, const MoeWeights& g);

  // Loss scaling (fp16): the router's own loss terms (aux, z) are scaled as the loss is.
  void set_loss_scale(float s) { router_.set_loss_scale(s); }
  const RouterStats& stats() const { return router_.stats(); }
  const Router& router() const { return router_; }
  // The expert-parallel dispatch (ep > 1), nullptr without; its rounds() are those of the
  // last forward.
  const Dispatcher* dispatcher() const { return dispatch_.get(); }
  int rounds() const { return dispatch_ ? dispatch_->rounds() : 1; }

 private:
  MoeLayer(const MoeScratchShape& shape, std::int64_t unbounded_rows, const RouterConfig& cfg,
           Activation act, memory::Arenas& arenas, comm::RowExchange* exchange, int ep_size,
           MoeScratchSlot* shared, kernels::Precision precision, kernels::Precision stored);

  int d_;
  std::shared_ptr<MoeScratch> scratch_;
  Router router_;
  std::unique_ptr<Dispatcher> dispatch_;
  ExpertFFN experts_;
  SumReducer reduce_;
  kernels::View2<float> xp_, yp_;  // token copies grouped by expert (send side)
  kernels::View2<float> xe_, ye_;  // expert-side rows (ep > 1)
};

// Bytes per expert-side row (ep > 1) of the buffers whose rows a bounded dropless
// buffer caps: per MoE layer xe, ye, the dispatcher's staging (d floats each), its two
// index permutations and the experts' a, h (H1 floats, H values in `stored`); once per
// model the shared dxe, dye, da, dh.
struct ExpertRowBytes {
  std::uint64_t per_layer = 0, shared = 0;
};
ExpertRowBytes expert_row_bytes(int d_model, int hidden, Activation act,
                                kernels::Precision stored = kernels::Precision::FP32);
// The most rows B such that those buffers of `moe_layers` layers fit in budget_bytes,
// with the arena's 64-byte rounding of each of them: floor((budget - rounding) /
// (moe_layers * per_layer + shared)). 0 when not even one row fits.
std::int64_t buffer_rows_for(std::uint64_t budget_bytes, int moe_layers, int d_model, int hidden,
                             Activation act, kernels::Precision stored = kernels::Precision::FP32);

}  // namespace furnace::moe
