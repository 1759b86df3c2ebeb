// The MoE gate: router projection, softmax, top-k, capacity-limited slot
// assignment, and the GShard load-balancing and ST-MoE z auxiliary losses.
//
//   r = x @ w_router            x [n, d], w_router [d, E] -> r [n, E]
//   p = softmax(r)              [n, E]
//   idx, weight = topk(p, k)    [n, k]; weight = p at idx (not renormalised)
//   slot, src, offsets          copies grouped by expert, capacity C per expert
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/views.hpp"
#include "memory/arena.hpp"

namespace furnace::moe {

struct RouterConfig {
  int experts = 8, top_k = 2;
  double capacity_factor = 2.0;  // <= 0: unlimited
  double aux_loss_coef = 0.01, z_loss_coef = 0.001;
};

// Sums a small vector over the ranks whose tokens share one router decision
// (identity in a single process). The aux loss uses global statistics, so that the
// loss does not depend on how the batch is split over ranks.
using SumReducer = std::function<void(double* values, int count)>;

// C, the most copies one expert keeps of a forward over `tokens` tokens:
// ceil(capacity_factor * tokens * top_k / experts); -1 when unlimited. The router
// cuts with exactly this value, so the buffer bounds below hold by construction.
std::int64_t expert_capacity(const RouterConfig& cfg, std::int64_t tokens);
// The most copies of at most `tokens` tokens that a group of `experts` of the
// router's experts can keep together: at most tokens * top_k in all, and each expert
// keeps at most min(C, tokens), a token's top_k experts being distinct. Sizes the
// rows of the MoE layer's buffers.
std::int64_t max_kept_copies(const RouterConfig& cfg, std::int64_t tokens, int experts);

struct RouterStats {
  double aux_loss = 0, z_loss = 0;   // unweighted values
  std::int64_t dropped = 0;          // copies cut by capacity (this rank)
  std::vector<double> load;          // demand per expert, global
};

// The router's backward-only buffers, [max_tokens, experts] each; MoE layers of one
// model share one pair (one layer runs at a time).
struct RouterGradBuffers {
  kernels::View2<float> dprobs, dlogits;
};

class Router {
 public:
  // shared == nullptr: the router allocates its own gradient buffers from the workspace.
  Router(const RouterConfig& cfg, int d_model, std::int64_t max_tokens, memory::Arenas& arenas,
         const RouterGradBuffers* shared = nullptr);

  void forward(kernels::View2<const float> x, kernels::View2<const float> w,
               const SumReducer& reduce);
  // dweight [n, k] from the combine step; dx += ..., dw += ...
  void backward(kernels::View2<const float> x, kernels::View2<const float> w,
                kernels::View2<const float> dweight, kernels::View2<float> dx,
                kernels::View2<float> dw);

  // Results of the last forward, sized to its n tokens (not to max_tokens).
  kernels::View2<const kernels::index_t> slot() const {
    return kernels::View2<const kernels::index_t>(slot_.data(), n_, cfg_.top_k);
  }
  kernels::View1<const kernels::index_t> src() const {
    return kernels::View1<const kernels::index_t>(src_.data(), rows());
  }
  kernels::View2<const float> weight() const {
    return kernels::View2<const float>(weight_.data(), n_, cfg_.top_k);
  }
  const std::vector<std::int64_t>& offsets() const { return offsets_host_; }  // [E+1]
  std::int64_t rows() const { return offsets_host_.back(); }
  const RouterStats& stats() const { return stats_; }
  const RouterConfig& config() const { return cfg_; }
  // The backward multiplies the aux and z-loss gradients by s, as the loss gradient
  // it receives is (fp16 loss scaling); 1 otherwise.
  void set_loss_scale(float s) { loss_scale_ = s; }

 private:
  RouterConfig cfg_;
  float loss_scale_ = 1.0f;
  int d_;
  std::int64_t n_ = 0;            // tokens in the last forward
  double tokens_total_ = 0;       // tokens over the reducing ranks
  kernels::View2<float> logits_, probs_, dprobs_, dlogits_, weight_;
  kernels::View2<kernels::index_t> idx_, slot_;
  kernels::View1<kernels::index_t> src_, demand_, counts_, offsets_;
  kernels::View1<float> prob_sum_;
  std::vector<std::int64_t> offsets_host_;
  RouterStats stats_;
};

}  // namespace furnace::moe
