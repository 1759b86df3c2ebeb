// RowExchange under mpiexec -n 1/2/4: every received float names its source, destination,
// row and column, so a misplaced row fails with its coordinates; flat and hierarchical
// must agree bit for bit.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "comm/alltoall.hpp"
#include "kernels/random.hpp"

namespace {

using furnace::comm::Groups;
using furnace::comm::RowExchange;
using Algo = RowExchange::Algorithm;
using RowsFn = std::function<std::int64_t(int src, int dst)>;  // ep ranks

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

std::uint32_t mix(std::uint64_t x) { return static_cast<std::uint32_t>(furnace::kernels::splitmix64(x)); }

// An exact float (< 2^24) for row `row`, column `col` of the block src -> dst of ep group g.
float value(int g, int src, int dst, std::int64_t row, int col) {
  const std::uint64_t key = ((((std::uint64_t(g) * 64 + src) * 64 + dst) << 24) + row) * 4096 + col;
  return static_cast<float>(mix(key) & 0xFFFFFF);
}

RowsFn random_rows(std::uint64_t seed, int max_rows) {
  return [=](int s, int d) { return std::int64_t(mix(seed * 1000003 + s * 257 + d) % (max_rows + 1)); };
}

// Runs one exchange with `ex` and checks every value; returns what arrived.
std::vector<float> run_and_check(const Groups& g, RowExchange& ex, const RowsFn& rows) {
  const int P = g.ep(), me = g.ep_rank(), w = ex.width(), grp = g.dp_rank();
  std::vector<std::int64_t> send_rows(P), recv_rows(P);
  std::int64_t ns = 0, nr = 0;
  for (int p = 0; p < P; ++p) {
    send_rows[p] = rows(me, p);
    recv_rows[p] = rows(p, me);
    ns += send_rows[p];
    nr += recv_rows[p];
  }
  std::vector<float> send(ns * w), recv(nr * w, -1.0f);
  std::int64_t at = 0;
  for (int d = 0; d < P; ++d)
    for (std::int64_t r = 0; r < send_rows[d]; ++r, ++at)
      for (int c = 0; c < w; ++c) send[at * w + c] = value(grp, me, d, r, c);
  ex.exchange(send.data(), send_rows, recv.data(), recv_rows);
  at = 0;
  int bad = 0;
  for (int s = 0; s < P; ++s)
    for (std::int64_t r = 0; r < recv_rows[s]; ++r, ++at)
      for (int c = 0; c < w; ++c)
        if (recv[at * w + c] != value(grp, s, me, r, c) && ++bad <= 5)
          ADD_FAILURE() << "ep rank " << me << ": row " << r << " col " << c << " from " << s
                        << " wrong";
  EXPECT_EQ(bad, 0);
  return recv;
}

// Flat and hierarchical on the same counts: both correct, and identical bits.
void both_agree(int ep, int ranks_per_node, const RowsFn& rows, int width = 5) {
  Groups g(MPI_COMM_WORLD, ep, ranks_per_node);
  RowExchange flat(g, Algo::Flat, width), hier(g, Algo::Hierarchical, width);
  EXPECT_EQ(flat.algorithm(), Algo::Flat);
  const auto a = run_and_check(g, flat, rows);
  const auto b = run_and_check(g, hier, rows);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

// The layouts a world of n ranks can take: (ep, ranks_per_node) pairs.
std::vector<std::pair<int, int>> layouts() {
  const int n = world_size();
  std::vector<std::pair<int, int>> out = {{n, 0}, {n, 1}};
  if (n % 2 == 0) out.push_back({n, n / 2});
  if (n == 4) out.insert(out.end(), {{2, 0}, {2, 1}, {2, 2}});
  return out;
}

TEST(MpiAllToAll, RandomRowsFlatAndHierarchicalAgree) {
  for (auto [ep, rpn] : layouts())
    for (std::uint64_t seed : {1, 2, 3}) {
      SCOPED_TRACE("ep " + std::to_string(ep) + " rpn " + std::to_string(rpn) + " seed " +
                   std::to_string(seed));
      both_agree(ep, rpn, random_rows(seed, 37));
    }
}

TEST(MpiAllToAll, ReusedExchangerAcrossSizes) {
  // Staging buffers grow and shrink between calls; widths 1 and 64.
  for (int width : {1, 64}) {
    const int n = world_size();
    Groups g(MPI_COMM_WORLD, n, n % 2 == 0 ? n / 2 : 0);
    RowExchange flat(g, Algo::Flat, width), hier(g, Algo::Hierarchical, width);
    for (int max_rows : {50, 0, 3, 200, 1}) {
      const auto rows = random_rows(100 + max_rows, max_rows);
      const auto a = run_and_check(g, flat, rows);
      const auto b = run_and_check(g, hier, rows);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
    }
  }
}

TEST(MpiAllToAll, TwoForcedNodesRunHierarchical) {
  const int n = world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks";
  Groups g(MPI_COMM_WORLD, 4, 2);
  RowExchange hier(g, Algo::Hierarchical, 3);
  EXPECT_EQ(hier.algorithm(), Algo::Hierarchical);
  EXPECT_EQ(hier.nodes(), 2);
  EXPECT_EQ(hier.ranks_per_node(), 2);
  run_and_check(g, hier, random_rows(7, 20));
}

TEST(MpiAllToAll, UnevenNodesFallBackToFlat) {
  const int n = world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks";
  Groups g(MPI_COMM_WORLD, 4, 3);  // nodes {0,1,2} and {3}
  RowExchange hier(g, Algo::Hierarchical, 3);
  EXPECT_EQ(hier.algorithm(), Algo::Flat);
  EXPECT_EQ(hier.requested(), Algo::Hierarchical);
  EXPECT_FALSE(hier.note().empty());
  run_and_check(g, hier, random_rows(8, 20));
}

TEST(MpiAllToAll, AllRowsToOneRank) {
  for (auto [ep, rpn] : layouts()) {
    const int last = ep - 1;
    both_agree(ep, rpn, [=](int s, int d) { return d == last ? 100 + s : 0; });
  }
}

TEST(MpiAllToAll, OneRankSendsAndReceivesNothing) {
  for (auto [ep, rpn] : layouts()) {
    const auto base = random_rows(11, 30);
    both_agree(ep, rpn, [=](int s, int d) { return s == 0 || d == 0 ? 0 : base(s, d) + 1; });
  }
}

TEST(MpiAllToAll, ZeroRowsEverywhere) {
  for (auto [ep, rpn] : layouts()) both_agree(ep, rpn, [](int, int) { return 0; });
}

TEST(MpiAllToAll, ExchangeCounts) {
  for (auto [ep, rpn] : layouts()) {
    Groups g(MPI_COMM_WORLD, ep, rpn);
    for (Algo algo : {Algo::Flat, Algo::Hierarchical}) {
      RowExchange ex(g, algo, 4);
      const int slots = 3, me = ex.ep_rank(), P = ex.ep_size();
      auto count = [&](int s, int d, int slot) {
        return std::int64_t(mix(g.dp_rank() * 7919 + s * 131 + d * 17 + slot) % 1000);
      };
      std::vector<std::int64_t> send(P * slots);
      for (int d = 0; d < P; ++d)
        for (int s = 0; s < slots; ++s) send[d * slots + s] = count(me, d, s);
      const auto recv = ex.exchange_counts(send, slots);
      ASSERT_EQ(recv.size(), send.size());
      for (int src = 0; src < P; ++src)
        for (int s = 0; s < slots; ++s) EXPECT_EQ(recv[src * slots + s], count(src, me, s));
    }
  }
}

}  // namespace
