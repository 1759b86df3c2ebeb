// ZeRO-1's ownership plan (memory::ShardPlan): over the ranks of a group every element
// of every tensor of the group's kind is owned exactly once, in whole checksum blocks
// (a Dense tensor, one expert's rows), ascending along the buffer as the buckets'
// reduce-scatter needs; the largest share is within one block of an even split; the
// packed moment buffers hold the owned elements only, and an unsharded plan is the
// parameters' own layout.
#include <gtest/gtest.h>

#include <algorithm>

#include "memory/state_store.hpp"

namespace furnace::memory {
namespace {

// A small MoE-like registry: embedding, per layer norms, attention, router, experts.
void add_model(StateStore& ps, int ep, int ep_rank) {
  ps.add({.name = "wte", .shape = {96, 16}});
  ps.add(expert_slab("big", {64, 32, 40}, ep, ep_rank));  // large: placed on a page (place_tensor)
  for (int l = 0; l < 3; ++l) {
    std::string p = "b";
    p += std::to_string(l);
    ps.add({.name = p + ".ln", .shape = {16}});
    ps.add({.name = p + ".wqkv", .shape = {16, 48}});
    ps.add({.name = p + ".router", .shape = {16, 8}});
    ps.add(expert_slab(p + ".w1", {8, 16, 24}, ep, ep_rank));
    ps.add(expert_slab(p + ".w2", {8, 24, 16}, ep, ep_rank));
  }
}

TEST(ShardPlan, EveryElementOwnedOnceInWholeBlocksAndBalanced) {
  for (int ranks : {1, 2, 3, 4, 7}) {
    StateStore layout;
    add_model(layout, 1, 0);
    std::vector<int> owners(std::size_t(layout.total()) + 64, 0);
    std::int64_t largest = 0, all = 0, block = 0;
    for (int r = 0; r < ranks; ++r) {
      const ShardPlan plan(layout.infos(), {.dense_ranks = ranks, .dense_rank = r, .expert_ranks = ranks,
                                            .expert_rank = r});
      std::int64_t mine = 0, pages = 0;
      for (int i = 0; i < int(layout.infos().size()); ++i) {
        const auto& p = layout.info(i);
        const auto& part = plan.part(i);
        const std::int64_t per_row = p.size / p.shape[0];
        EXPECT_EQ(part.first, part.row0 * per_row);
        EXPECT_EQ(part.count, part.rows * per_row);
        if (p.kind == ParamKind::Dense) {
          EXPECT_TRUE(part.count == 0 || part.count == p.size) << p.name;
        }
        EXPECT_EQ(part.offset % 16, 0);
        EXPECT_LE(part.offset + part.count, plan.total());
        for (std::int64_t e = 0; e < part.count; ++e) ++owners[std::size_t(p.offset + part.first + e)];
        mine += part.count;
        pages += part.count >= kPageAlignFrom;
        if (r == 0) all += p.size, block = std::max(block, p.kind == ParamKind::Dense ? p.size : per_row);
      }
      largest = std::max(largest, mine);
      // Padding: under 16 floats per part, under a page before a large one.
      EXPECT_LE(plan.total(), (mine + 16 * std::int64_t(layout.infos().size()) + kPageFloats * pages + 15) / 16 * 16);
      // The buckets' view: the split of the whole buffer gives this rank's range.
      std::vector<int> counts, displs;
      plan.split(ParamKind::Expert, 0, layout.total(), counts, displs);
      ASSERT_EQ(int(counts.size()), ranks);
      for (int q = 1; q < ranks; ++q) EXPECT_EQ(displs[q], displs[q - 1] + counts[q - 1]);
    }
    for (const auto& p : layout.infos())
      for (std::int64_t e = 0; e < p.size; ++e) ASSERT_EQ(owners[std::size_t(p.offset + e)], 1) << p.name << " ranks " << ranks;
    EXPECT_LE(largest, (all + ranks - 1) / ranks + 2 * block) << ranks << " ranks";
  }
}

TEST(ShardPlan, UnshardedIsTheParameterLayoutAndShardedStoresShrink) {
  Ledger l1, l2;  // outlive the stores, which release their bytes in them
  StateStore one, half;
  add_model(one, 2, 1);
  add_model(half, 2, 1);
  one.allocate(l1, {}, Mode::Measure);
  half.allocate(l2, {}, Mode::Measure, {.dense_ranks = 4, .dense_rank = 1, .expert_ranks = 2, .expert_rank = 1});
  EXPECT_FALSE(one.moments_sharded());
  EXPECT_TRUE(half.moments_sharded());
  Ledger l0;
  StateStore whole;  // ep = 1: "big" is large, on a page in both layouts
  add_model(whole, 1, 0);
  whole.allocate(l0, {}, Mode::Measure);
  for (const StateStore* s : {&one, &whole})
    for (int i = 0; i < int(s->infos().size()); ++i) {
      EXPECT_EQ(s->shards().part(i).offset, s->info(i).offset) << s->info(i).name;
      EXPECT_EQ(s->shards().part(i).count, s->info(i).size);
    }
  EXPECT_EQ(one.family_elems(Family::ExpAvg), one.total());
  EXPECT_LT(2 * half.family_bytes(Family::ExpAvg), one.family_bytes(Family::ExpAvg));
  EXPECT_EQ(l2.current(Category::Optimizer, Tier::Device), 2 * half.family_bytes(Family::ExpAvg));
  EXPECT_EQ(l2.current(Category::Parameters, Tier::Device), l1.current(Category::Parameters, Tier::Device));
}

}  // namespace
}  // namespace furnace::memory
