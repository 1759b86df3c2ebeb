// The gradient reduction (comm::GradSync) at 1, 2 and 4 ranks: every element summed
// over the ranks, unsharded (allreduce) and with ZeRO-1's sharded moments (each rank's
// part reduce-scattered into its home), on tensors of very uneven sizes: a later rank
// owning a larger part than rank 0 once made MPICH's in-place reduce-scatter abort.
#include <gtest/gtest.h>

#include <cmath>

#include "comm/grad_sync.hpp"
#include "mpi_testing.hpp"

namespace furnace::comm {
namespace {

using furnace::testing::world_rank;
using furnace::testing::world_size;

float value(std::int64_t i, int rank) { return float((i % 97) + 1) * float(rank + 1) * 0.25f; }

// bucket_bytes: 4 MiB puts all three tensors in one bucket, split between owners when
// sharded; 1 KiB gives each tensor a bucket of its own, which its one owner holds whole
// (GradSync::sole_owner: an allreduce, and a broadcast for gather_params).
void check_reduction(bool sharded, kernels::Precision wire, std::size_t bucket_bytes = std::size_t(4) << 20) {
  const int p = world_size(), r = world_rank();
  Groups groups(MPI_COMM_WORLD, 1, 0);
  memory::Ledger ledger;
  memory::StateStore ps;
  // Whole Dense tensors are owned by one rank each: rank 0 gets the small one.
  ps.add({.name = "small", .shape = {10}});
  ps.add({.name = "large", .shape = {300, 1000}});
  ps.add({.name = "middle", .shape = {37, 50}});
  memory::ShardLayout zero;
  if (sharded) zero = {.dense_ranks = p, .dense_rank = r, .expert_ranks = p, .expert_rank = r};
  ps.allocate(ledger, {}, memory::Mode::Allocate, zero);
  auto g = ps.grads();
  for (std::int64_t i = 0; i < ps.total(); ++i) g(i) = value(i, r);
  GradSync sync(ps, groups, bucket_bytes, wire, &ledger);
  sync.begin();
  for (int t = int(ps.infos().size()) - 1; t >= 0; --t) sync.ready(t);
  sync.finish();
  const float tol = wire == kernels::Precision::BF16 ? 1e-2f : 0.0f;
  for (int t = 0; t < int(ps.infos().size()); ++t) {
    const auto& info = ps.info(t);
    const auto part = ps.shards().part(t);
    const std::int64_t first = sharded ? part.first : 0, count = sharded ? part.count : info.size;
    for (std::int64_t e = first; e < first + count; ++e) {
      const std::int64_t i = info.offset + e;
      float want = 0;
      for (int q = 0; q < p; ++q) want += value(i, q);
      ASSERT_NEAR(g(i), want, tol * std::fabs(want)) << info.name << "[" << e << "] rank " << r;
    }
  }
  if (sharded && p > 1) {
    EXPECT_EQ(ledger.label_current(GradSync::kScatterLabel),
              GradSync::scatter_bytes(ps, GradSync::plan(ps.infos(), bucket_bytes, p, p), wire));
    // A rank may own no part (4 ranks, 3 whole tensors: rank 3 has none) and need no
    // buffer; the ranks that own parts of a split bucket must have one, and sole
    // owners' buckets need none.
    unsigned long local = ledger.label_current(GradSync::kScatterLabel), largest = 0;
    MPI_Allreduce(&local, &largest, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (bucket_bytes >= ps.total() * sizeof(float))
      EXPECT_GT(largest, 0ul);
    else
      EXPECT_EQ(largest, 0ul);
  }
  // ZeRO-1's gather: each owner's updated parameters reach every rank.
  auto w = ps.params();
  for (int t = 0; t < int(ps.infos().size()); ++t) {
    const auto& info = ps.info(t);
    const auto part = ps.shards().part(t);
    for (std::int64_t e = 0; e < info.size; ++e)
      w(info.offset + e) = sharded && (e < part.first || e >= part.first + part.count) ? -1.f : value(info.offset + e, 7);
  }
  sync.gather_params();
  for (int t = 0; t < int(ps.infos().size()); ++t) {
    const auto& info = ps.info(t);
    for (std::int64_t e = 0; e < info.size; ++e)
      ASSERT_EQ(w(info.offset + e), value(info.offset + e, 7)) << info.name << "[" << e << "] rank " << r;
  }
}

TEST(MpiGradSync, AllreduceSumsEveryElement) { check_reduction(false, kernels::Precision::FP32); }
TEST(MpiGradSync, ZeroReduceScatterOfUnevenPartsSumsEachOwnersPart) { check_reduction(true, kernels::Precision::FP32); }
TEST(MpiGradSync, Bf16WireReduceScatterOfUnevenParts) { check_reduction(true, kernels::Precision::BF16); }
TEST(MpiGradSync, ZeroSoleOwnerBucketsAllreduceAndBroadcast) {
  check_reduction(true, kernels::Precision::FP32, 1024);
}
TEST(MpiGradSync, Bf16WireSoleOwnerBuckets) { check_reduction(true, kernels::Precision::BF16, 1024); }

}  // namespace
}  // namespace furnace::comm
