#include "memory/arena.hpp"

#include <algorithm>

namespace furnace::memory {

Arena::Arena(std::string label, std::size_t chunk_bytes)
    : label_(std::move(label)), chunk_bytes_(chunk_bytes) {}

void* Arena::allocate_bytes(std::size_t bytes) {
  constexpr std::size_t kAlign = 64;
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  if (chunks_.empty() || offset_ + bytes > chunks_.back().extent(0)) {
    // A request larger than a chunk gets a chunk of its own size.
    const std::size_t size = std::max(bytes, chunk_bytes_);
    chunks_.emplace_back(Kokkos::view_alloc(label_ + "::chunk", Kokkos::WithoutInitializing), size);
    offset_ = 0;
    reserved_ += size;
  }
  void* p = chunks_.back().data() + offset_;
  offset_ += bytes;
  used_ += bytes;
  return p;
}

}  // namespace furnace::memory
