// A pool of short-lived blocks in one memory space, in power-of-two size classes: a
// released block waits in its class's free list and the next request of that class
// gets it back, so a buffer that one call needs and the next call needs again (an
// exchange's staging rows) is allocated once, not per call, and never behind the
// ledger's back. Every block the pool holds, in use or free, is in the Ledger under the
// pool's category, tier and label, from its first acquire until the pool goes.
//
// Not thread-safe: one pool per owner (a RowExchange), used from one thread.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/views.hpp"
#include "memory/ledger.hpp"

namespace furnace::memory {

template <class Space>
class Pool {
  using Storage = Kokkos::View<std::uint8_t*, Space>;

 public:
  static constexpr std::size_t kMinBytes = 256;  // the smallest class
  static constexpr int kClasses = 48;            // up to 2^55 bytes

  // A block of the pool, handed back to it when destroyed (move-only).
  class Block {
   public:
    Block() = default;
    Block(Block&& o) noexcept { *this = std::move(o); }
    Block& operator=(Block&& o) noexcept {
      if (this != &o) {
        reset();
        pool_ = o.pool_;
        cls_ = o.cls_;
        storage_ = std::move(o.storage_);
        o.pool_ = nullptr;
      }
      return *this;
    }
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() { reset(); }

    template <class T = std::uint8_t>
    T* data() const { return reinterpret_cast<T*>(storage_.data()); }
    std::size_t bytes() const { return pool_ ? class_bytes(cls_) : 0; }
    // Back to the pool now (also what the destructor does).
    void reset() {
      if (pool_) pool_->give_back(cls_, std::move(storage_));
      pool_ = nullptr;
    }

   private:
    friend class Pool;
    Block(Pool* pool, int cls, Storage storage) : pool_(pool), cls_(cls), storage_(std::move(storage)) {}
    Pool* pool_ = nullptr;
    int cls_ = 0;
    Storage storage_;
  };

  Pool(std::string label, Category category, Tier tier, Ledger& ledger)
      : label_(std::move(label)), category_(category), tier_(tier), ledger_(ledger) {}
  ~Pool() {
    if (held_ > 0) ledger_.release(category_, tier_, label_, held_);
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // A block of at least `bytes` (rounded up to its class), uninitialised when reused.
  Block acquire(std::size_t bytes) {
    const int c = class_of(bytes);
    auto& free = free_[c];
    Storage s;
    if (!free.empty()) {
      s = std::move(free.back());
      free.pop_back();
    } else {
      ledger_.add(category_, tier_, label_, class_bytes(c));  // first, so an overflow throws before allocating
      s = Storage(Kokkos::view_alloc(Kokkos::WithoutInitializing, label_ + "::block"), class_bytes(c));
      held_ += class_bytes(c);
    }
    in_use_ += class_bytes(c);
    high_water_ = std::max(high_water_, in_use_);
    return Block(this, c, std::move(s));
  }

  std::size_t bytes_held() const { return held_; }        // in use and free: what the ledger has
  std::size_t bytes_in_use() const { return in_use_; }
  std::size_t high_water() const { return high_water_; }  // the most bytes in use at once

  // The class of a request and its size: 256 B, 512 B, 1 KiB, ...
  static int class_of(std::size_t bytes) {
    int c = 0;
    while (class_bytes(c) < bytes) ++c;
    return c;
  }
  static std::size_t class_bytes(int c) { return kMinBytes << c; }

 private:
  void give_back(int c, Storage s) {
    in_use_ -= class_bytes(c);
    free_[c].push_back(std::move(s));
  }

  std::string label_;
  Category category_;
  Tier tier_;
  Ledger& ledger_;
  std::array<std::vector<Storage>, kClasses> free_;
  std::size_t held_ = 0, in_use_ = 0, high_water_ = 0;
};

}  // namespace furnace::memory
