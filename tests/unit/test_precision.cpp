// The 16-bit formats against independent references: fp16 against the compiler's
// _Float16 (IEEE binary16, round to nearest even), bf16 against the nearer of the two
// bf16 neighbours computed in double; every 16-bit pattern round-trips. And the
// dynamic loss scaler's growth and back-off.
#include "kernels/precision.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "testing.hpp"
#include "train/loss_scaler.hpp"

namespace furnace::kernels {
namespace {

// Floats that exercise every rounding case: random bit patterns (all exponents, NaN,
// inf, subnormals), exact halfway points of both formats, and values near their limits.
std::vector<float> probe_floats() {
  std::vector<float> v;
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) v.push_back(bits_float(std::uint32_t(rng())));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint32_t b = h << 16;
    v.push_back(bits_float(b | 0x8000u));  // bf16 halfway: ties to even
    v.push_back(bits_float(b | 0x8001u));
    v.push_back(bits_float(b | 0x7fffu));
  }
  for (float f : {65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.98e-8f, 5.96e-8f, 6.1e-5f, -0.0f, 1e38f, 3.4e38f})
    v.push_back(f), v.push_back(-f);
  return v;
}

bool same_value(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || float_bits(a) == float_bits(b);
}

TEST(Precision, Fp16MatchesTheCompilersFloat16EverywhereAndRoundTripsEveryPattern) {
  for (float f : probe_floats()) {
    const float want = float(static_cast<_Float16>(f));
    ASSERT_TRUE(same_value(fp16_to_float(float_to_fp16(f)), want)) << f << " bits " << std::hex << float_bits(f);
  }
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint16_t bits = std::uint16_t(h);
    _Float16 ref;
    std::memcpy(&ref, &bits, 2);
    ASSERT_TRUE(same_value(fp16_to_float(bits), float(ref))) << std::hex << h;
    if (!std::isnan(fp16_to_float(bits))) {
      ASSERT_EQ(float_to_fp16(fp16_to_float(bits)), bits) << std::hex << h;
    }
  }
}

// The bf16 value nearest to f (ties to the even pattern), by comparing the two
// truncation neighbours in double: an independent statement of the rounding rule.
float nearest_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  // Above the largest bf16, the next value up is 2^128 (IEEE rounds there to infinity).
  const double hi_value = std::isinf(bits_float(hi)) ? std::copysign(0x1p128, double(f)) : double(bits_float(hi));
  const double dlo = std::fabs(double(bits_float(lo)) - f), dhi = std::fabs(hi_value - f);
  if (dlo < dhi) return bits_float(lo);
  if (dhi < dlo) return bits_float(hi);
  return bits_float(((lo >> 16) & 1u) ? hi : lo);
}

TEST(Precision, Bf16RoundsToNearestEvenAndRoundTripsEveryPattern) {
  for (float f : probe_floats()) {
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
      continue;
    }
    if (std::isinf(f)) {
      ASSERT_EQ(bf16_to_float(float_to_bf16(f)), f);
      continue;
    }
    ASSERT_TRUE(same_value(bf16_to_float(float_to_bf16(f)), nearest_bf16(f))) << f << " bits " << std::hex
                                                                             << float_bits(f);
  }
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_float(std::uint16_t(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(float_to_bf16(f), h) << std::hex << h;
    }
  }
}

TEST(Precision, RoundToIsTheIdentityInFp32AndNamesParse) {
  EXPECT_EQ(round_to(Precision::FP32, 1.0f + 0x1p-20f), 1.0f + 0x1p-20f);
  EXPECT_EQ(round_to(Precision::BF16, 1.0f + 0x1p-20f), 1.0f);
  EXPECT_EQ(round_to(Precision::FP16, 70000.0f), std::numeric_limits<float>::infinity());
  Precision p = Precision::FP32;
  for (const char* name : {"fp32", "bf16", "fp16"}) {
    ASSERT_TRUE(parse_precision(name, p));
    EXPECT_STREQ(precision_name(p), name);
  }
  EXPECT_FALSE(parse_precision("fp8", p));
}

}  // namespace
}  // namespace furnace::kernels

namespace furnace::train {
namespace {

TEST(LossScaler, DoublesAfterTheWindowHalvesOnOverflowAndStopsAtOne) {
  LossScaler s(true, 8.0, 3);
  s.finite_step(), s.finite_step();
  EXPECT_EQ(s.scale(), 8.0);
  s.finite_step();  // the third finite step in a row
  EXPECT_EQ(s.scale(), 16.0);
  s.finite_step(), s.finite_step();
  s.overflow();  // resets the window
  EXPECT_EQ(s.scale(), 8.0);
  s.finite_step(), s.finite_step();
  EXPECT_EQ(s.scale(), 8.0);
  for (int i = 0; i < 10; ++i)
    if (s.can_back_off()) s.overflow();
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_FALSE(s.can_back_off());  // a non-finite step at scale 1 is a broken step, not an overflow
  EXPECT_EQ(s.overflows(), 4);
  LossScaler big(true, LossScaler::kMaxScale, 1);
  big.finite_step();
  EXPECT_EQ(big.scale(), LossScaler::kMaxScale);
}

TEST(LossScaler, DisabledStaysAtOne) {
  LossScaler s(false, 65536, 1);
  s.finite_step();
  s.restore(1024, 3);
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_FALSE(s.can_back_off());
}

}  // namespace
}  // namespace furnace::train
