// One MoE feed-forward layer: gate, permute token copies into expert-grouped rows,
// run the experts, unpermute and combine weighted by the gate.
//
//   x [n, d] -> router -> xp [rows, d] (grouped by expert) -> experts -> yp [rows, d]
//            -> y [n, d] = sum_j weight[i, j] * yp[slot[i, j]]
// With expert parallelism (ep > 1) the experts of this rank are E / ep of them, and
// a Dispatcher carries xp to their owners and the results back; without it the
// rows go straight to the local experts.
#pragma once
#include <memory>

#include "kernels/views.hpp"
#include "memory/arena.hpp"
#include "moe/dispatch.hpp"
#include "moe/experts.hpp"
#include "moe/router.hpp"

namespace furnace::moe {

struct MoeWeights {
  kernels::View2<float> router;  // [d, E]
  kernels::View3<float> w1;      // [E, d, H1]
  kernels::View3<float> w2;      // [E, H, d]
};

class MoeLayer {
 public:
  // exchange == nullptr: one process holds all experts.
  MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
           std::int64_t max_tokens, memory::Arenas& arenas, comm::RowExchange* exchange = nullptr,
           int ep_size = 1);

  void set_reducer(SumReducer reduce) { reduce_ = std::move(reduce); }

  // y = moe(x) (overwrites y).
  void forward(kernels::View2<const float> x, const MoeWeights& w, kernels::View2<float> y);
  // dx += d/dx, grads accumulate into g.
  void backward(kernels::View2<const float> dy, kernels::View2<const float> x, const MoeWeights& w,
                kernels::View2<float> dx, const MoeWeights& g);

  const RouterStats& stats() const { return router_.stats(); }
  const Router& router() const { return router_; }

 private:
  int d_;
  Router router_;
  std::unique_ptr<Dispatcher> dispatch_;
  ExpertFFN experts_;
  SumReducer reduce_;
  kernels::View2<float> xp_, yp_, dxp_, dyp_, dweight_;
  kernels::View2<float> xe_, ye_, dxe_, dye_;  // expert-side rows (ep > 1)
  std::vector<std::int64_t> expert_offsets_;
};

}  // namespace furnace::moe
