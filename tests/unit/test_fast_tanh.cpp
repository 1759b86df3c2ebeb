// The float ftanh of kernels/math.hpp is a rational approximation (libm's tanhf is
// scalar and slow); these pin down how close it stays to the true tanh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/math.hpp"

namespace furnace::kernels {
namespace {

TEST(FastTanh, RelativeErrorBelowThreeTimesTenToTheMinusSeven) {
  // Every 499th float from the smallest subnormal up to 12 (past the clamp).
  double worst = 0;
  float worst_x = 0;
  for (std::uint32_t bits = 1; bits < 0x41400000u; bits += 499) {
    float x;
    std::memcpy(&x, &bits, sizeof x);
    const double want = std::tanh(double(x));
    const double rel = std::fabs(double(ftanh(x)) - want) / want;
    if (rel > worst) worst = rel, worst_x = x;
  }
  EXPECT_LT(worst, 3e-7) << "at x = " << worst_x;
}

TEST(FastTanh, OddSaturatingAndNanPreserving) {
  for (float x : {1e-30f, 3.9e-4f, 4e-4f, 0.1f, 0.5f, 1.0f, 3.0f, 7.9f, 8.0f, 100.0f})
    EXPECT_EQ(ftanh(-x), -ftanh(x)) << x;
  EXPECT_EQ(ftanh(0.0f), 0.0f);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_NEAR(ftanh(inf), 1.0f, 3e-7f);
  EXPECT_NEAR(ftanh(-inf), -1.0f, 3e-7f);
  EXPECT_LE(ftanh(inf), 1.0f);
  EXPECT_TRUE(std::isnan(ftanh(std::numeric_limits<float>::quiet_NaN())));
}

TEST(FastTanh, DoubleStillUsesTheLibraryTanh) {
  for (double x : {1e-3, 0.3, 2.0, -5.0}) EXPECT_EQ(ftanh(x), std::tanh(x)) << x;
}

}  // namespace
}  // namespace furnace::kernels
