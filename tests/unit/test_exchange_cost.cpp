// comm/exchange_cost: the alpha-beta model of the token exchange against hand-computed
// times, the choice comm.alltoall = "auto" makes with it, and the link measurement at
// 1, 2 and 4 ranks (every rank gets the same positive numbers).
#include <gtest/gtest.h>

#include "comm/exchange_cost.hpp"
#include "mpi_testing.hpp"

namespace {

using furnace::comm::choose_exchange;
using furnace::comm::ExchangeShape;
using furnace::comm::flat_exchange_time;
using furnace::comm::hierarchical_exchange_time;
using furnace::comm::Link;
using Algorithm = furnace::comm::RowExchange::Algorithm;

constexpr double kMiB = 1 << 20;

TEST(ExchangeCost, FlatMatchesHandComputedTimes) {
  // ep 8 on 2 nodes of 4: 3 local peers (2 x 3 messages), 4 remote (2 x 4 messages).
  const Link intra{1e-6, 10e9}, inter{10e-6, 1e9};
  const ExchangeShape s{.ep = 8, .ranks_per_node = 4, .bytes = 8 * kMiB};
  const double local = 6 * 1e-6 + 8 * kMiB * 3 / 8 / 10e9;
  const double remote = 8 * 10e-6 + 4 * 8 * kMiB * 4 / 8 / 1e9;  // the node's 4 ranks share its link
  EXPECT_NEAR(flat_exchange_time(s, intra, inter), std::max(local, remote), 1e-12 * remote);
  const double hier = 6 * 1e-6 + 8 * kMiB * 3 / 4 / 10e9 + 1 * 10e-6 + 4 * 8 * kMiB / 2 / 1e9 + 2 * 8 * kMiB / 5e9;
  EXPECT_NEAR(hierarchical_exchange_time(s, intra, inter, 5e9), hier, 1e-12 * hier);
}

TEST(ExchangeCost, AutoPicksHierarchicalWhenInterNodeLatencyDominates) {
  // Small messages to many nodes: flat pays ep - L inter-node latencies, hierarchical N - 1.
  const ExchangeShape s{.ep = 256, .ranks_per_node = 8, .bytes = 64 * 1024};
  const auto c = choose_exchange(s, {0.5e-6, 20e9}, {20e-6, 10e9}, 50e9);
  EXPECT_EQ(c.algorithm, Algorithm::Hierarchical) << c.reason;
  EXPECT_LT(c.hierarchical_s, c.flat_s);
  EXPECT_NE(c.reason.find("hierarchical"), std::string::npos);
}

TEST(ExchangeCost, AutoPicksFlatWhenTheStagingCopyDominates) {
  // Large rows, cheap latency and a slow copy: the two extra copies are the cost.
  const ExchangeShape s{.ep = 4, .ranks_per_node = 2, .bytes = 64 * kMiB};
  const auto c = choose_exchange(s, {1e-6, 5e9}, {2e-6, 4e9}, 1e9);
  EXPECT_EQ(c.algorithm, Algorithm::Flat) << c.reason;
  EXPECT_GT(c.hierarchical_s, c.flat_s);
}

TEST(ExchangeCost, AutoIsFlatWhereHierarchicalWouldRunFlat) {
  const Link slow_inter{1e-3, 1e6};
  for (const ExchangeShape s : {ExchangeShape{.ep = 4, .ranks_per_node = 4, .bytes = 1e6},    // one node
                                ExchangeShape{.ep = 4, .ranks_per_node = 1, .bytes = 1e6}}) {  // 1 rank/node
    const auto c = choose_exchange(s, {1e-6, 1e10}, slow_inter, 1e10);
    EXPECT_EQ(c.algorithm, Algorithm::Flat) << c.reason;
    EXPECT_EQ(c.hierarchical_s, 0.0);
    EXPECT_NE(c.reason.find("would run flat"), std::string::npos) << c.reason;
  }
}

TEST(MpiExchangeCost, MeasuredLinksAgreeOnEveryRank) {
  furnace::comm::Groups g(MPI_COMM_WORLD, 1, 0);
  const auto m = furnace::comm::measure_links(g);
  EXPECT_GT(m.copy_bandwidth, 0);
  if (furnace::testing::world_size() > 1) {
    EXPECT_TRUE(m.has_intra);  // every rank of this job is on one host
    EXPECT_GT(m.intra.latency_s, 0);
    EXPECT_GT(m.intra.bandwidth, 0);
  }
  double mine[3] = {m.intra.latency_s, m.intra.bandwidth, m.copy_bandwidth}, lo[3], hi[3];
  MPI_Allreduce(mine, lo, 3, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(mine, hi, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lo[i], hi[i]) << "value " << i << " differs between ranks";
}

}  // namespace
