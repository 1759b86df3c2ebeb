// Address space for a state family whose parts move between memory and the nvme tier
// (memory.experts = nvme): the whole family is reserved at once with no memory behind
// it, and page ranges are committed while their tensors are in memory. Every tensor
// keeps one address for the whole run, so the model's views, the optimizer and the
// gradient reductions work on it unchanged; a range not committed faults on any
// access instead of reading stale values.
#pragma once
#include <cstddef>

namespace furnace::memory {

class Reservation {
 public:
  Reservation() = default;
  // Throws std::runtime_error (one line) when the address space cannot be reserved.
  explicit Reservation(std::size_t bytes);
  ~Reservation();
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;

  std::byte* data() const { return data_; }
  std::size_t size() const { return bytes_; }

  // [offset, offset + bytes), page-aligned: readable and writable; pages read as zero
  // until written (fresh, or decommitted before).
  void commit(std::size_t offset, std::size_t bytes);
  // The range's pages go back to the system (its contents are lost) and become
  // inaccessible again.
  void decommit(std::size_t offset, std::size_t bytes);

 private:
  void check_range(std::size_t offset, std::size_t bytes, const char* who) const;
  std::byte* base_ = nullptr;  // the mapping (data_ is on a 2 MiB boundary inside it)
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0, mapped_ = 0;
};

}  // namespace furnace::memory
