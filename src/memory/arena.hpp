// A bump allocator over large pooled Kokkos allocations. Activations, scratch and
// routing buffers of the model are carved from it once at set-up, so a training step
// never allocates, and the arena's byte count is what `plan` reports for them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/views.hpp"

namespace furnace::memory {

class Arena {
 public:
  explicit Arena(std::string label, std::size_t chunk_bytes = std::size_t(64) << 20);

  // Uninitialised, 64-byte aligned storage for n elements of T, valid as long as the arena.
  template <class T>
  T* allocate(std::size_t n) {
    return static_cast<T*>(allocate_bytes(n * sizeof(T)));
  }
  template <class T>
  kernels::View1<T> view1(std::size_t n) {
    return kernels::View1<T>(allocate<T>(n), n);
  }
  template <class T>
  kernels::View2<T> view2(std::size_t r, std::size_t c) {
    return kernels::View2<T>(allocate<T>(r * c), r, c);
  }
  template <class T>
  kernels::View4<T> view4(std::size_t a, std::size_t b, std::size_t c, std::size_t d) {
    return kernels::View4<T>(allocate<T>(a * b * c * d), a, b, c, d);
  }

  std::size_t bytes_used() const { return used_; }
  std::size_t bytes_reserved() const { return reserved_; }

 private:
  void* allocate_bytes(std::size_t bytes);

  std::string label_;
  std::size_t chunk_bytes_;
  std::vector<Kokkos::View<std::uint8_t*, kernels::MemSpace>> chunks_;
  std::size_t offset_ = 0;  // within the last chunk
  std::size_t used_ = 0, reserved_ = 0;
};

}  // namespace furnace::memory
