// Counter-based random numbers: element i of a stream is a pure function of
// (key, i). A tensor initialised this way is identical whichever rank fills which
// slice of it, which is what makes every parallel layout start from the same model.
#pragma once
#include <cstdint>
#include <string_view>

#include "kernels/views.hpp"

namespace furnace::kernels {

// 64-bit FNV-1a of a name, mixed with the seed: the key of one tensor's stream.
std::uint64_t stream_key(std::uint64_t seed, std::string_view name);

// x[j] = stddev * N(0,1) sample number (first_index + j) of the stream `key`.
template <class T>
void fill_normal(View1<T> x, std::uint64_t key, std::int64_t first_index, double stddev);

// x[j] = value.
template <class T>
void fill(View1<T> x, T value);

// SplitMix64 finaliser: a good 64-bit mix, usable on device.
KOKKOS_INLINE_FUNCTION std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace furnace::kernels
