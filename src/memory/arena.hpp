// Bump allocators over large pooled Kokkos allocations, one per byte category.
// Activations, communication buffers and workspace of the model are carved from them
// once at set-up, so a training step never allocates, and every byte is in the
// Ledger under its category, which is what the memory report, the budgets and
// `furnace plan` count.
//
// Measure mode allocates nothing: views come back with their extents over a null
// pointer (touching one is a bug) and the Ledger records the exact bytes asked for.
// The trainer builds the model once this way to check the budgets, then reserve()s
// each arena exactly that much, so the real build holds no chunk slack either.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/operand.hpp"
#include "kernels/views.hpp"
#include "memory/ledger.hpp"

namespace furnace::memory {

enum class Mode { Allocate, Measure };

class Arena {
 public:
  Arena(std::string label, Category category, Ledger& ledger, Mode mode = Mode::Allocate,
        std::size_t chunk_bytes = std::size_t(64) << 20);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Uninitialised, 64-byte aligned storage for n elements of T, valid as long as the arena.
  // Sizes are checked (std::overflow_error) before they are multiplied out.
  template <class T>
  T* allocate(std::size_t n) {
    return static_cast<T*>(allocate_bytes(checked_product(n, sizeof(T), label_)));
  }
  template <class T>
  kernels::View1<T> view1(std::size_t n) {
    return kernels::View1<T>(allocate<T>(n), n);
  }
  template <class T>
  kernels::View2<T> view2(std::size_t r, std::size_t c) {
    return kernels::View2<T>(allocate<T>(checked_product(r, c, label_)), r, c);
  }
  // A matrix only GEMMs read, in fp32 or in the 16 bits of `stored` (kernels/operand.hpp).
  kernels::GemmOperand operand(kernels::Precision stored, std::size_t r, std::size_t c) {
    kernels::GemmOperand o;
    o.stored = stored;
    if (o.is_16bit())
      o.h16 = view2<std::uint16_t>(r, c);
    else
      o.f32 = view2<float>(r, c);
    return o;
  }
  template <class T>
  kernels::View4<T> view4(std::size_t a, std::size_t b, std::size_t c, std::size_t d) {
    const std::size_t n = checked_product(checked_product(checked_product(a, b, label_), c, label_), d, label_);
    return kernels::View4<T>(allocate<T>(n), a, b, c, d);
  }

  // One chunk of exactly `bytes` for the allocations to come (what a Measure build of
  // the same objects asked for); later requests that do not fit get chunks as usual.
  void reserve(std::size_t bytes);

  const std::string& label() const { return label_; }
  Category category() const { return category_; }
  Mode mode() const { return mode_; }
  std::size_t bytes_used() const { return used_; }
  std::size_t bytes_reserved() const { return reserved_; }  // what the Ledger holds for it

 private:
  void* allocate_bytes(std::size_t bytes);

  std::string label_;
  Category category_;
  Ledger& ledger_;
  Mode mode_;
  std::size_t chunk_bytes_;
  std::vector<Kokkos::View<std::uint8_t*, kernels::MemSpace>> chunks_;
  std::size_t chunk_size_ = 0;  // of the last chunk
  std::size_t offset_ = 0;      // within the last chunk
  std::size_t used_ = 0, reserved_ = 0;
};

// The model's three arenas: what the backward reads back (per layer), the token
// exchange's buffers, and scratch whose lifetime is one kernel sequence (shared by
// the layers, since one layer runs at a time).
struct Arenas {
  Arenas(const std::string& owner, Ledger& ledger, Mode mode = Mode::Allocate);
  Arena activations, communication, workspace;
  // Each arena reserve()s the bytes `measured` holds under its label.
  void reserve(const Ledger& measured);
};

}  // namespace furnace::memory
