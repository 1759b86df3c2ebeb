#include "train/optimizer.hpp"

#include "kernels/optim.hpp"

namespace furnace::train {

double AdamW::grad_sq_sum(const memory::StateStore& ps, memory::ParamKind kind, const std::vector<double>* offloaded) {
  double s = 0;
  for (int i = 0; i < int(ps.infos().size()); ++i)
    if (ps.info(i).kind == kind)
      s += ps.offloaded(i, memory::Family::Grad) ? offloaded->at(std::size_t(i)) : kernels::sum_squares<float>(ps.owned(memory::Family::Grad, i));
  return s;
}

double AdamW::clip_factor(double global_norm) const {
  if (cfg_.grad_clip <= 0 || global_norm <= cfg_.grad_clip) return 1.0;
  return cfg_.grad_clip / (global_norm + 1e-6);
}

double AdamW::clip(memory::StateStore& ps, double global_norm, double unscale) const {
  const double f = clip_factor(global_norm) * unscale;
  if (f == 1.0) return f;
  if (!ps.offloads()) {
    kernels::scale<float>(ps.grads(), float(f));
    return f;
  }
  // Elementwise, so tensor by tensor gives the same bits; offloaded groups are scaled
  // when they come in for their update (scale_tensor).
  for (int i = 0; i < int(ps.infos().size()); ++i)
    if (!ps.offloaded(i, memory::Family::Grad)) scale_tensor(ps, i, f);
  return f;
}

void AdamW::scale_tensor(memory::StateStore& ps, int i, double factor) {
  kernels::scale<float>(ps.slice(ps.grads(), i), float(factor));
}

void AdamW::update(memory::StateStore& ps, double lr) {
  ++step_;
  lr_ = lr;
  for (int i = 0; i < int(ps.infos().size()); ++i)
    if (!ps.offloaded(i)) update_tensor(ps, i);
}

void AdamW::update_tensor(memory::StateStore& ps, int i) const {
  if (ps.shards().part(i).count == 0) return;  // another rank's moments (ZeRO-1)
  using memory::Family;
  const kernels::AdamWParams hp{.lr = lr_, .beta1 = cfg_.beta1, .beta2 = cfg_.beta2, .eps = cfg_.eps,
                                .weight_decay = ps.info(i).decay ? cfg_.weight_decay : 0.0, .step = step_};
  kernels::adamw_update<float>(ps.owned(Family::Param, i), ps.owned(Family::Grad, i), ps.owned(Family::ExpAvg, i),
                               ps.owned(Family::ExpAvgSq, i), hp);
}

}  // namespace furnace::train
