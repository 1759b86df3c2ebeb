// One MoE feed-forward layer: gate, permute token copies into expert-grouped rows,
// run the experts, unpermute and combine weighted by the gate.
//
//   x [n, d] -> router -> xp [rows, d] (grouped by expert) -> experts -> yp [rows, d]
//            -> y [n, d] = sum_j weight[i, j] * yp[slot[i, j]]
#pragma once
#include <memory>

#include "kernels/views.hpp"
#include "memory/arena.hpp"
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
  MoeLayer(const RouterConfig& cfg, int d_model, int hidden, Activation act,
           std::int64_t max_tokens, memory::Arena& arena);

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
  ExpertFFN experts_;
  SumReducer reduce_;
  kernels::View2<float> xp_, yp_, dxp_, dyp_, dweight_;
};

}  // namespace furnace::moe
