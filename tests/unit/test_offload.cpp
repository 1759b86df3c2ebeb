// memory.experts = nvme, below the trainer: a Reservation's committed pages read as
// zero and lose their contents when decommitted; a StateStore that offloads a kind
// puts each such tensor on pages of its own, groups consecutive ones, keeps only the
// rest in its ledger entries, and refuses to offload after registration; an
// StateOffload's groups come back from the files with the values the seed gave them
// (the same as a store that never offloaded) and with what was written last, gradients
// come in as zeros without a read, and a write over a queued read is refused.
#include "memory/state_offload.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "temp_dir.hpp"

namespace furnace::memory {
namespace {
namespace fs = std::filesystem;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("furnace_offload") {}
};

TEST(Reservation, CommittedPagesReadZeroAndDecommitDropsThem) {
  const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
  Reservation r(8 * page);
  r.commit(2 * page, 3 * page);
  auto* f = reinterpret_cast<float*>(r.data() + 2 * page);
  for (std::size_t i = 0; i < 3 * page / 4; ++i) ASSERT_EQ(f[i], 0.0f);
  f[0] = 1.5f, f[3 * page / 4 - 1] = -2.0f;
  EXPECT_EQ(f[0], 1.5f);
  r.decommit(2 * page, 3 * page);
  r.commit(2 * page, 3 * page);
  EXPECT_EQ(f[0], 0.0f);
  EXPECT_EQ(f[3 * page / 4 - 1], 0.0f);
  EXPECT_THROW(r.commit(1, page), std::logic_error);          // not on a page
  EXPECT_THROW(r.commit(6 * page, 4 * page), std::logic_error);  // past the end
}

// Dense, Expert, Expert, Dense, Expert: two groups of offloaded tensors.
void register_tensors(StateStore& ps) {
  ps.add({.name = "d0", .shape = {5, 7}, .init_std = 0.02});
  ps.add({.name = "e1", .shape = {2, 3, 100}, .kind = ParamKind::Expert, .init_std = 0.02});
  ps.add({.name = "e2", .shape = {2, 50, 3}, .kind = ParamKind::Expert, .init_std = 0.02});
  ps.add({.name = "d3", .shape = {9}, .init_std = -1, .init_value = 1.0f});
  ps.add({.name = "e4", .shape = {1, 2000}, .kind = ParamKind::Expert, .init_std = 0.02});
}

TEST(StateStoreOffload, OffloadedTensorsHavePagesOfTheirOwnInGroups) {
  Ledger ledger;
  StateStore ps;
  ps.offload(StateStore::Offload::Experts);
  register_tensors(ps);
  ps.allocate(ledger);
  ASSERT_EQ(ps.offload_groups().size(), 2u);
  const auto& g0 = ps.offload_groups()[0];
  const auto& g1 = ps.offload_groups()[1];
  EXPECT_EQ(g0.first, 1);
  EXPECT_EQ(g0.last, 2);
  EXPECT_EQ(g1.first, 4);
  EXPECT_EQ(g1.last, 4);
  for (int i : {1, 2, 4}) {
    EXPECT_TRUE(ps.offloaded(i));
    EXPECT_EQ(ps.info(i).offset % kPageFloats, 0) << ps.info(i).name;
  }
  EXPECT_FALSE(ps.offloaded(0));
  EXPECT_FALSE(ps.offloaded(3));
  for (const auto& g : ps.offload_groups()) {
    EXPECT_EQ(g.begin % kPageFloats, 0);
    EXPECT_EQ(g.end % kPageFloats, 0);
  }
  EXPECT_GE(ps.info(3).offset, g0.end);  // the next tensor starts past the group's pages
  // The ledger holds what is always in memory; a group counts while committed.
  const std::uint64_t resident = std::uint64_t(ps.total() - g0.elems() - g1.elems()) * 4;
  EXPECT_EQ(ps.family_bytes(Family::Param), resident);
  EXPECT_EQ(ledger.current(Category::Parameters, Tier::Device), resident);
  ps.commit(Family::Param, 0);
  EXPECT_EQ(ledger.current(Category::Parameters, Tier::Device), resident + std::uint64_t(g0.elems()) * 4);
  ps.decommit(Family::Param, 0);
  EXPECT_EQ(ledger.current(Category::Parameters, Tier::Device), resident);

  StateStore late;
  late.add({.name = "x", .shape = {3}});
  EXPECT_THROW(late.offload(StateStore::Offload::Experts), std::logic_error);
}

TEST(StateOffload, GroupsComeBackWithTheirValues) {
  TempDir dir;
  Ledger ledger;
  StateStore ps;
  ps.offload(StateStore::Offload::Experts);
  register_tensors(ps);
  ps.allocate(ledger);
  ps.initialize(7);
  StateOffload off(ps, {.dir = dir.path}, ledger);
  off.initialize(7);
  EXPECT_EQ(off.group_of(0), -1);
  EXPECT_EQ(off.group_of(2), 0);
  EXPECT_EQ(off.group_of(4), 1);
  // Nothing in memory after initialize; the files hold the seed's values.
  for (int g = 0; g < 2; ++g) EXPECT_FALSE(ps.committed(Family::Param, g));

  Ledger plain_ledger;
  StateStore plain;  // the same tensors, never offloaded
  register_tensors(plain);
  plain.allocate(plain_ledger);
  plain.initialize(7);
  auto same_as_plain = [&](int i) {
    auto a = ps.slice(ps.params(), i), b = plain.slice(plain.params(), i);
    return std::memcmp(a.data(), b.data(), std::size_t(a.size()) * 4) == 0;
  };
  off.prefetch(1, {Family::Param});
  off.bring(0, {Family::Param, Family::ExpAvg});
  EXPECT_TRUE(same_as_plain(1));
  EXPECT_TRUE(same_as_plain(2));
  EXPECT_EQ(ps.slice(ps.exp_avg(), 1)(0), 0.0f);
  EXPECT_TRUE(same_as_plain(0));  // resident tensors were initialised by the store itself

  // A change written out survives eviction; one not written does not.
  ps.slice(ps.params(), 2)(5) = 42.0f;
  ps.slice(ps.exp_avg(), 1)(0) = -3.0f;
  off.write(0, {Family::Param});
  off.bring(1, {Family::Param});  // evicts group 0 (its exp_avg change is lost)
  EXPECT_FALSE(ps.committed(Family::Param, 0));
  EXPECT_TRUE(same_as_plain(4));
  off.bring(0, {Family::Param, Family::ExpAvg});
  EXPECT_EQ(ps.slice(ps.params(), 2)(5), 42.0f);
  EXPECT_EQ(ps.slice(ps.exp_avg(), 1)(0), 0.0f);

  // Gradients come in as zeros, also over stale values in memory.
  off.bring_zeroed(0, Family::Grad);
  ps.slice(ps.grads(), 1)(0) = 9.0f;
  off.bring_zeroed(0, Family::Grad);
  EXPECT_EQ(ps.slice(ps.grads(), 1)(0), 0.0f);

  // Writing a region whose read is still queued would be undone by that read.
  off.prefetch(1, {Family::ExpAvg});
  off.bring(1, {Family::Param});
  EXPECT_THROW(off.write(1, {Family::ExpAvg}), std::logic_error);
  off.flush();
  const auto t = off.traffic();
  EXPECT_GT(t.bytes_read, 0u);
  EXPECT_GT(t.bytes_written, 0u);
}

}  // namespace
}  // namespace furnace::memory

namespace furnace::memory {
namespace {

TEST(StateStoreOffload, MomentsGroupsCoverEveryTensorOnPageBoundaries) {
  Ledger ledger;
  StateStore ps;
  ps.offload(StateStore::Offload::Moments, 500 * sizeof(float));  // a group is full at 500 floats
  register_tensors(ps);
  ps.allocate(ledger);
  // 35, 600 | 300, 9, 2000: the first group is full after the second tensor, so the
  // third starts the next one, on a page.
  ASSERT_EQ(ps.offload_groups().size(), 2u);
  const auto& g0 = ps.offload_groups()[0];
  const auto& g1 = ps.offload_groups()[1];
  EXPECT_EQ(g0.first, 0);
  EXPECT_EQ(g0.last, 1);
  EXPECT_EQ(g1.first, 2);
  EXPECT_EQ(g1.last, 4);
  EXPECT_EQ(g0.begin, 0);
  EXPECT_EQ(g0.end, g1.begin);
  EXPECT_EQ(g1.begin % kPageFloats, 0);
  EXPECT_EQ(g1.end, ps.total());
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(ps.offloaded(i, Family::ExpAvg));
    EXPECT_TRUE(ps.offloaded(i, Family::ExpAvgSq));
    EXPECT_FALSE(ps.offloaded(i, Family::Param));
    EXPECT_FALSE(ps.offloaded(i, Family::Grad));
  }
  // Parameters and gradients stay in memory, whole; the moments hold nothing resident.
  EXPECT_EQ(ps.family_bytes(Family::Param), std::uint64_t(ps.total()) * 4);
  EXPECT_EQ(ps.family_bytes(Family::ExpAvg), 0u);
  EXPECT_THROW(ps.commit(Family::Grad, 0), std::logic_error);
  ps.slice(ps.grads(), 4)(0) = 1.0f;  // in memory: no fault
}

}  // namespace
}  // namespace furnace::memory
