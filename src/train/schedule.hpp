// Learning-rate schedule: linear warm-up to lr, then cosine decay to min_lr at the
// last step. With n = step + 1 (the step number of metrics.jsonl) and T = total:
//   n <= warmup: lr * n / warmup
//   otherwise:   min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,
//                p = (n - 1 - warmup) / (T - 1 - warmup)
// so the first step after warm-up runs at lr and step T at exactly min_lr; a step
// beyond T keeps step T's rate. With warmup >= T the run ends on the ramp.
// tests/unit/test_schedule.cpp checks this against its own statement of it.
#pragma once
#include <algorithm>
#include <cmath>

namespace furnace::train {

struct LrSchedule {
  double lr = 1e-3, min_lr = 1e-4;
  long warmup = 100, total = 1000;

  double at(long step) const {  // step is 0-based
    const long n = std::min(step + 1, total);
    if (n <= warmup) return lr * double(n) / double(warmup);
    const long decay_steps = total - 1 - warmup;  // after the one at the peak
    const double p = decay_steps > 0 ? double(n - 1 - warmup) / double(decay_steps) : 1.0;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * p));
  }
};

}  // namespace furnace::train
