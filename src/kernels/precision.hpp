// The 16-bit number formats of mixed-precision training, and the precision a GEMM
// runs in (train.precision).
//
// bf16 (8-bit exponent, 7-bit mantissa) and fp16 (IEEE binary16: 5-bit exponent,
// 10-bit mantissa) are kept as their bit patterns in std::uint16_t, converted with
// integer and float arithmetic only: the same code on any Kokkos backend and any
// Kokkos version (Kokkos 3.4 has no bhalf_t; Kokkos 4's half types differ between
// backends). Float to 16-bit rounds to nearest, ties to even, as hardware does.
#pragma once
#include <Kokkos_Core.hpp>
#include <cstdint>
#include <cstring>
#include <string>

namespace furnace::kernels {

// fp32: every GEMM in fp32. bf16 / fp16: the model's GEMMs read 16-bit operands and
// accumulate in fp32 (masters, moments, norms, softmax, losses stay fp32).
enum class Precision { FP32, BF16, FP16 };

inline const char* precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : p == Precision::FP16 ? "fp16" : "fp32";
}
// "fp32" | "bf16" | "fp16"; false for anything else.
inline bool parse_precision(const std::string& s, Precision& p) {
  if (s == "fp32") p = Precision::FP32;
  else if (s == "bf16") p = Precision::BF16;
  else if (s == "fp16") p = Precision::FP16;
  else return false;
  return true;
}

KOKKOS_INLINE_FUNCTION std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
KOKKOS_INLINE_FUNCTION float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// --- bf16: the upper half of an fp32 ----------------------------------------------
KOKKOS_INLINE_FUNCTION std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  // Round to nearest even: add just under half an ulp, plus one when the kept lsb is odd.
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  // A NaN stays a (quiet) NaN. A select, not a branch: the packing loops vectorise.
  return std::uint16_t((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x0040u : rounded);
}
KOKKOS_INLINE_FUNCTION float bf16_to_float(std::uint16_t h) { return bits_float(std::uint32_t(h) << 16); }

// --- fp16 (IEEE binary16) -----------------------------------------------------------
// The scaling method of Maratyszcza's FP16 library (MIT): the float multiply rounds the
// mantissa to 10 bits and handles subnormals and overflow (to infinity) at once.
KOKKOS_INLINE_FUNCTION std::uint16_t float_to_fp16(float f) {
  const float to_inf = bits_float(0x77800000u);   // 2^112
  const float to_zero = bits_float(0x08800000u);  // 2^-110
  const std::uint32_t w = float_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  float base = ((f < 0 ? -f : f) * to_inf) * to_zero;
  std::uint32_t bias = shl1_w & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const std::uint32_t bits = float_bits(base);
  const std::uint32_t nonsign = ((bits >> 13) & 0x00007c00u) + (bits & 0x00000fffu);
  return std::uint16_t((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}
KOKKOS_INLINE_FUNCTION float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    const float v = float(man) * bits_float(0x33800000u);
    return sign ? -v : v;
  }
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf, NaN
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// The 16-bit pattern of f in `p` (p != FP32), and its value back as a float.
KOKKOS_INLINE_FUNCTION std::uint16_t to_16bit(Precision p, float f) {
  return p == Precision::BF16 ? float_to_bf16(f) : float_to_fp16(f);
}
KOKKOS_INLINE_FUNCTION float from_16bit(Precision p, std::uint16_t h) {
  return p == Precision::BF16 ? bf16_to_float(h) : fp16_to_float(h);
}
// f rounded to the nearest value of precision p (identity for FP32).
KOKKOS_INLINE_FUNCTION float round_to(Precision p, float f) {
  return p == Precision::FP32 ? f : from_16bit(p, to_16bit(p, f));
}

}  // namespace furnace::kernels
