// AdamW over a StateStore: global-norm clipping, then one update per tensor with
// weight decay only where the tensor asks for it (matrices, not norms). Each rank
// updates the part of each tensor whose moments it owns (all of it unless ZeRO-1
// shards them; the caller then all-gathers the parameters).
#pragma once
#include <functional>
#include <vector>

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
  // Offloaded tensors (not in memory now) contribute offloaded[i], their sum of squares
  // taken while they were (the same number: sum_squares of the same bits).
  static double grad_sq_sum(const memory::StateStore& ps, memory::ParamKind kind,
                            const std::vector<double>* offloaded = nullptr);
  // The factor that brings the global norm to at most grad_clip (1: no clipping).
  double clip_factor(double global_norm) const;
  // Scale the gradients in memory by clip_factor; returns it. Offloaded tensors are
  // the caller's (scale_tensor, when they are in memory).
  // `unscale` multiplies the same pass (fp16: 1 / the loss scale).
  double clip(memory::StateStore& ps, double global_norm, double unscale = 1.0) const;
  static void scale_tensor(memory::StateStore& ps, int i, double factor);
  // One AdamW step (increments the step counter) of every tensor in memory; offloaded
  // ones then get update_tensor, with this step's settings, once they are in memory.
  void update(memory::StateStore& ps, double lr);
  void update_tensor(memory::StateStore& ps, int i) const;

  long step() const { return step_; }
  void set_step(long s) { step_ = s; }

 private:
  AdamWConfig cfg_;
  long step_ = 0;
  double lr_ = 0;  // of the current step
};

}  // namespace furnace::train
