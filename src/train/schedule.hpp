// Learning-rate schedule: linear warm-up to lr, then cosine decay to min_lr at the
// last step.
#pragma once
#include <cmath>

namespace furnace::train {

struct LrSchedule {
  double lr = 1e-3, min_lr = 1e-4;
  long warmup = 100, total = 1000;

  double at(long step) const {  // step is 0-based
    if (step < warmup) return lr * double(step + 1) / double(warmup);
    if (total <= warmup) return lr;
    const double t = std::fmin(1.0, double(step - warmup) / double(total - warmup));
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t));
  }
};

}  // namespace furnace::train
