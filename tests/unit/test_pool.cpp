// memory::Pool: power-of-two size classes, a released block reused by the next request
// of its class (no new bytes in the ledger), every held block in the ledger under the
// pool's category, tier and label, and the high-water mark of the bytes in use.
#include <gtest/gtest.h>

#include <utility>

#include "memory/ledger.hpp"
#include "memory/pool.hpp"

namespace furnace::memory {
namespace {

using HostPool = Pool<Kokkos::HostSpace>;
constexpr const char* kLabel = "PoolTest::stage";

TEST(Pool, SizeClasses) {
  EXPECT_EQ(HostPool::class_bytes(HostPool::class_of(0)), 256u);
  EXPECT_EQ(HostPool::class_bytes(HostPool::class_of(256)), 256u);
  EXPECT_EQ(HostPool::class_bytes(HostPool::class_of(257)), 512u);
  EXPECT_EQ(HostPool::class_bytes(HostPool::class_of(3000)), 4096u);
  EXPECT_EQ(HostPool::class_bytes(HostPool::class_of(std::size_t(1) << 30)), std::size_t(1) << 30);
}

TEST(Pool, ReleasedBlockIsReusedWithoutNewBytes) {
  Ledger ledger;
  HostPool pool(kLabel, Category::Communication, Tier::Host, ledger);
  void* first = nullptr;
  {
    auto b = pool.acquire(3000);
    first = b.data();
    EXPECT_EQ(b.bytes(), 4096u);
    EXPECT_EQ(ledger.current(Category::Communication, Tier::Host), 4096u);
  }
  EXPECT_EQ(pool.bytes_in_use(), 0u);
  EXPECT_EQ(ledger.current(Category::Communication, Tier::Host), 4096u) << "a free block stays held";
  auto again = pool.acquire(2500);  // the same class
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(ledger.peak(Category::Communication, Tier::Host), 4096u) << "reuse must not add bytes";
  EXPECT_EQ(pool.bytes_held(), 4096u);
}

TEST(Pool, AccountingAndHighWater) {
  Ledger ledger;
  {
    HostPool pool(kLabel, Category::Communication, Tier::Host, ledger);
    auto a = pool.acquire(1000);    // 1 KiB
    auto b = pool.acquire(1000);    // a second 1 KiB: the first is in use
    EXPECT_NE(a.data(), b.data());
    auto c = pool.acquire(10000);   // 16 KiB
    EXPECT_EQ(pool.high_water(), 18u << 10);
    a.reset();
    b = HostPool::Block();          // moved over: given back
    EXPECT_EQ(pool.bytes_in_use(), 16u << 10);
    auto d = pool.acquire(600);     // reuses a 1 KiB block
    EXPECT_EQ(pool.high_water(), 18u << 10);
    EXPECT_EQ(pool.bytes_held(), 18u << 10);
    EXPECT_EQ(ledger.current(Category::Communication, Tier::Host), 18u << 10);
    EXPECT_EQ(ledger.label_current(kLabel), 18u << 10);
    EXPECT_EQ(ledger.current(Category::Communication, Tier::Device), 0u);
    EXPECT_EQ(ledger.current(Category::Workspace, Tier::Host), 0u);
    HostPool::Block moved = std::move(c);  // the handle moves; the block is still in use
    EXPECT_EQ(pool.bytes_in_use(), 17u << 10);
  }
  // The pool released everything it held; the peak stays.
  EXPECT_EQ(ledger.current(Category::Communication, Tier::Host), 0u);
  EXPECT_EQ(ledger.peak(Category::Communication, Tier::Host), 18u << 10);
  EXPECT_EQ(ledger.label_peak(kLabel), 18u << 10);
}

}  // namespace
}  // namespace furnace::memory
