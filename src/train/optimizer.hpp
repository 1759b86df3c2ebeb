// AdamW over a StateStore: global-norm clipping, then one update per tensor with
// weight decay only where the tensor asks for it (matrices, not norms). Each rank
// updates the part of each tensor whose moments it owns (all of it unless ZeRO-1
// shards them; the caller then all-gathers the parameters).
#pragma once
#include <functional>

#include "memory/state_store.hpp"

namespace furnace::train {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
};

class AdamW {
 public:
  explicit AdamW(const AdamWConfig& cfg) : cfg_(cfg) {}

  // Sum of squared gradients of the owned parts of the tensors of one kind on this
  // rank (the caller reduces over ranks so that every parameter is counted exactly once).
  static double grad_sq_sum(const memory::StateStore& ps, memory::ParamKind kind);
  // Scale all gradients so that the global norm is at most grad_clip; returns the
  // factor applied (1 when no clipping).
  double clip(memory::StateStore& ps, double global_norm) const;
  // One AdamW step (increments the step counter).
  void update(memory::StateStore& ps, double lr);

  long step() const { return step_; }
  void set_step(long s) { step_ = s; }

 private:
  AdamWConfig cfg_;
  long step_ = 0;
};

}  // namespace furnace::train
