#include "train/optimizer.hpp"

#include "kernels/optim.hpp"

namespace furnace::train {

double AdamW::grad_sq_sum(const memory::StateStore& ps, memory::ParamKind kind) {
  double s = 0;
  for (int i = 0; i < int(ps.infos().size()); ++i)
    if (ps.info(i).kind == kind) s += kernels::sum_squares<float>(ps.owned(memory::Family::Grad, i));
  return s;
}

double AdamW::clip(memory::StateStore& ps, double global_norm) const {
  if (cfg_.grad_clip <= 0 || global_norm <= cfg_.grad_clip) return 1.0;
  const double f = cfg_.grad_clip / (global_norm + 1e-6);
  kernels::scale<float>(ps.grads(), float(f));
  return f;
}

void AdamW::update(memory::StateStore& ps, double lr) {
  ++step_;
  kernels::AdamWParams hp{.lr = lr, .beta1 = cfg_.beta1, .beta2 = cfg_.beta2, .eps = cfg_.eps,
                          .weight_decay = 0, .step = step_};
  using memory::Family;
  for (int i = 0; i < int(ps.infos().size()); ++i) {
    if (ps.shards().part(i).count == 0) continue;  // another rank's moments (ZeRO-1)
    hp.weight_decay = ps.info(i).decay ? cfg_.weight_decay : 0.0;
    kernels::adamw_update<float>(ps.owned(Family::Param, i), ps.owned(Family::Grad, i),
                                 ps.owned(Family::ExpAvg, i), ps.owned(Family::ExpAvgSq, i), hp);
  }
}

}  // namespace furnace::train
