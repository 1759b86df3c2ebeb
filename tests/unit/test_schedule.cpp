// The learning-rate schedule against its definition, written here independently of
// src/train/schedule.hpp: training step n = 1 .. T (n = step + 1, as metrics.jsonl
// counts) uses
//   n <= W:  lr * n / W                                       (linear warm-up)
//   n >  W:  min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,   p = (n - 1 - W) / (T - 1 - W)
// so the first step after warm-up runs at the peak, the last step (n = T) at exactly
// min_lr, and any step beyond the end keeps the last step's rate. Spot values where
// the cosine is exact (0, 1/2, 1), and the shape (monotone phases, point symmetry of
// the cosine half-wave) are checked too, so a wrong formula cannot hide in the
// closed form alone.
#include "train/schedule.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace furnace::train {
namespace {

double definition(double lr, double min_lr, long warmup, long total, long step) {
  const long n = std::min(step + 1, total);  // beyond the end: the last step's rate
  if (n <= warmup) return lr * double(n) / double(warmup);
  const long decay_steps = total - 1 - warmup;  // steps after the first post-warm-up one
  const double p = decay_steps > 0 ? double(n - 1 - warmup) / double(decay_steps) : 1.0;
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
}

LrSchedule make(double lr, double min_lr, long warmup, long total) {
  return LrSchedule{.lr = lr, .min_lr = min_lr, .warmup = warmup, .total = total};
}

TEST(LrSchedule, MatchesTheDefinitionAtEveryStep) {
  for (long warmup : {0L, 1L, 3L, 10L, 99L, 100L, 150L})
    for (long total : {1L, 2L, 7L, 100L, 101L, 1000L}) {
      const auto s = make(3e-3, 3e-4, warmup, total);
      for (long step = 0; step < total + 5; ++step)
        EXPECT_NEAR(s.at(step), definition(3e-3, 3e-4, warmup, total, step), 1e-15)
            << "warmup " << warmup << " total " << total << " step " << step;
    }
}

TEST(LrSchedule, ExactValuesAtTheEnds) {
  const auto s = make(1.0, 0.1, 4, 13);  // warm-up steps 0..3, decay over steps 4..12
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);        // first step: lr / warmup
  EXPECT_DOUBLE_EQ(s.at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);         // warm-up reaches the peak
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);         // the first decay step starts at the peak
  EXPECT_DOUBLE_EQ(s.at(8), 0.55);        // halfway: (lr + min_lr) / 2
  EXPECT_DOUBLE_EQ(s.at(12), 0.1);        // the last step (n = T) runs at min_lr
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);        // beyond the end: stays there
  EXPECT_DOUBLE_EQ(s.at(1000000), 0.1);
}

TEST(LrSchedule, NoWarmupStartsAtThePeak) {
  const auto s = make(2.0, 0.0, 0, 11);
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(5), 1.0);
  EXPECT_NEAR(s.at(10), 0.0, 1e-15);
}

TEST(LrSchedule, DegenerateRuns) {
  EXPECT_DOUBLE_EQ(make(1.0, 0.1, 0, 1).at(0), 0.1);  // one step: it is the last one
  EXPECT_DOUBLE_EQ(make(1.0, 0.1, 1, 2).at(0), 1.0);  // warm-up ends at the peak ...
  EXPECT_DOUBLE_EQ(make(1.0, 0.1, 1, 2).at(1), 0.1);  // ... and the last step is min_lr
  // Warm-up longer than the run: the run ends part-way up the ramp, and stays there.
  const auto s = make(1.0, 0.1, 10, 5);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);
  EXPECT_DOUBLE_EQ(s.at(7), 0.5);
}

TEST(LrSchedule, ShapeIsARampThenACosineHalfWave) {
  const double lr = 3e-3, min_lr = 3e-4;
  const long warmup = 7, total = 57;
  const auto s = make(lr, min_lr, warmup, total);
  for (long step = 1; step < warmup; ++step) EXPECT_GT(s.at(step), s.at(step - 1)) << step;
  for (long step = warmup + 1; step < total; ++step) EXPECT_LT(s.at(step), s.at(step - 1)) << step;
  for (long step = 0; step < total; ++step) {
    EXPECT_LE(s.at(step), lr) << step;
    EXPECT_GE(s.at(step), step < warmup ? 0.0 : min_lr) << step;
  }
  // The cosine half-wave is point-symmetric about its midpoint: steps k after the
  // start of the decay and k before its end average to (lr + min_lr) / 2.
  const long first = warmup, last = total - 1;
  for (long k = 0; k <= (last - first) / 2; ++k)
    EXPECT_NEAR(s.at(first + k) + s.at(last - k), lr + min_lr, 1e-15) << k;
}

}  // namespace
}  // namespace furnace::train
