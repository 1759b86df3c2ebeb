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
  MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
           std::int64_t max_tokens, memory::Arenas& arenas, comm::RowExchange* exchange = nullptr,
           int ep_size = 1, MoeScratchSlot* shared = nullptr);

  void set_reducer(SumReducer reduce) { reduce_ = std::move(reduce); }

  // y = moe(x) (overwrites y).
  void forward(kernels::View2<const float> x, const MoeWeights& w, kernels::View2<float> y);
  // dx += d/dx, grads accumulate into g.
  void backward(kernels::View2<const float> dy, kernels::View2<const float> x, const MoeWeights& w,
                kernels::View2<float> dx, const MoeWeights& g);

  const RouterStats& stats() const { return router_.stats(); }
  const Router& router() const { return router_; }

 private:
  MoeLayer(const MoeScratchShape& shape, const RouterConfig& cfg, Activation act,
           memory::Arenas& arenas, comm::RowExchange* exchange, int ep_size, MoeScratchSlot* shared);

  int d_;
  std::shared_ptr<MoeScratch> scratch_;
  Router router_;
  std::unique_ptr<Dispatcher> dispatch_;
  ExpertFFN experts_;
  SumReducer reduce_;
  kernels::View2<float> xp_, yp_;  // token copies grouped by expert (send side)
  kernels::View2<float> xe_, ye_;  // expert-side rows (ep > 1)
  std::vector<std::int64_t> expert_offsets_;
};

}  // namespace furnace::moe
