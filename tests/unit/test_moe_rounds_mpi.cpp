// Dropless MoE in a bounded buffer (MoeLayer's buffer_rows, memory.moe_buffer_mb) under
// mpiexec -n 2 and -n 4: a step whose routing sends a rank more rows than the buffer
// holds runs the exchange and the experts in rounds, forward and backward, and must
// compute what one round with an unbounded buffer computes.
//
// Not bit for bit: OpenBLAS's SGEMM (0.3.21, Haswell kernels here) computes a row of C
// differently depending on where it falls among the rows of the call (the last m mod 12
// rows go through other micro-kernel code; measured relative differences up to 1e-3 on
// entries with cancellation), and a round gives each expert's GEMM fewer rows. The
// weight gradients are sums over the rows, which rounds add in another grouping. So
// the results are compared with the tolerance the distributed tests use against the
// single process (1e-5 relative plus 1e-6 of the largest entry); the exchange itself
// moves bits, so flat and hierarchical rounds agree bit for bit.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "moe_mpi_testing.hpp"

namespace {

using namespace furnace::moe_testing;

constexpr std::uint64_t kAlign = 64;  // memory::Arena rounds every request up to it
std::uint64_t aligned(std::uint64_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

std::int64_t max_over_world(std::int64_t v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  return v;
}

// Entries that differ in any bit, for the report.
std::size_t differing(const std::vector<float>& a, const std::vector<float>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return n;
}

void expect_close_to(const Result& got, const Result& want, const char* what) {
  SCOPED_TRACE(what);
  expect_close(got.y, want.y.data(), want.y.size(), "y");
  expect_close(got.dx, want.dx.data(), want.dx.size(), "dx");
  expect_close(got.grouter, want.grouter.data(), want.grouter.size(), "drouter");
  expect_close(got.gw1, want.gw1.data(), want.gw1.size(), "dw1");
  expect_close(got.gw2, want.gw2.data(), want.gw2.size(), "dw2");
  EXPECT_EQ(got.stats.load, want.stats.load);
  EXPECT_EQ(got.stats.dropped, 0);
}

void expect_same_bits(const Result& a, const Result& b) {
  for (auto [x, y, what] : {std::tuple{&a.y, &b.y, "y"}, std::tuple{&a.dx, &b.dx, "dx"},
                            std::tuple{&a.grouter, &b.grouter, "drouter"}, std::tuple{&a.gw1, &b.gw1, "dw1"},
                            std::tuple{&a.gw2, &b.gw2, "dw2"}})
    EXPECT_EQ(differing(*x, *y), 0u) << what << " differs between flat and hierarchical rounds (rank "
                                     << world_rank() << ")";
}

// The expert-side communication buffers of one layer that owns its backward buffers:
// xe, ye, dxe, dye and the dispatcher's staging (d floats a row), two index maps.
std::uint64_t communication_bytes(const Problem& p, std::int64_t rows) {
  return 5 * aligned(rows * p.d * sizeof(float)) + 2 * aligned(rows * sizeof(furnace::kernels::index_t));
}

TEST(MpiMoeRounds, SkewedStepInRoundsMatchesOneRound) {
  const int P = world_size();
  if (P < 2) GTEST_SKIP() << "needs an exchange (ep = world >= 2)";
  constexpr std::int64_t kBuffer = 7;  // rows: a skewed step here needs >= 3 rounds
  for (int top_k : {1, 2})
    for (bool skewed : {true, false})
      for (bool empty_rank : {false, true}) {
        SCOPED_TRACE("top_k " + std::to_string(top_k) + (skewed ? " all to expert 0" : " random") +
                     (empty_rank ? " rank 1 empty" : ""));
        Problem p;
        p.top_k = top_k;
        p.act = top_k == 2 ? Activation::Swiglu : Activation::Gelu;
        for (int r = 0; r < P; ++r) p.tokens.push_back(11 + 3 * r);
        if (empty_rank) p.tokens[1] = 0;
        p.all_to_expert0 = skewed;
        p.seed = 80 + top_k;
        Data data(p);
        const Result one = distributed(p, data, Algo::Flat, 0);
        const Result flat = distributed(p, data, Algo::Flat, 0, kBuffer);
        const Result hier = distributed(p, data, Algo::Hierarchical, P % 2 == 0 ? P / 2 : 0, kBuffer);
        ASSERT_EQ(one.rounds, 1);
        // The rounds: what the most loaded rank needs, the same on every rank.
        const std::int64_t most = max_over_world(one.peak_round_rows);
        EXPECT_EQ(flat.rounds, (most + kBuffer - 1) / kBuffer);
        EXPECT_EQ(max_over_world(flat.rounds), flat.rounds) << "ranks ran different rounds";
        EXPECT_EQ(hier.rounds, flat.rounds);
        if (skewed && !empty_rank) {  // expert 0's owner receives every token's first copy
          EXPECT_GE(flat.rounds, 3) << "the skewed step must not fit fewer rounds";
        }
        EXPECT_LE(flat.peak_round_rows, kBuffer);
        EXPECT_LE(hier.peak_round_rows, kBuffer);
        // The buffers are the budget's, whatever the routing; the unbounded ones are
        // sized for the worst case, max_tokens * top_k * ep rows.
        EXPECT_EQ(flat.communication_bytes, communication_bytes(p, kBuffer));
        EXPECT_EQ(hier.communication_bytes, communication_bytes(p, kBuffer));
        EXPECT_EQ(one.communication_bytes, communication_bytes(p, p.max_tokens() * top_k * P));
        expect_close_to(flat, one, "flat rounds against one round");
        expect_close_to(hier, one, "hierarchical rounds against one round");
        expect_same_bits(flat, hier);
        if (world_rank() == 0)
          std::printf("top_k %d %s%s: %d rounds of <= %lld rows (one round: %lld rows); entries not bitwise "
                      "equal to one round: y %zu/%zu dx %zu/%zu dw1 %zu/%zu; communication %llu B "
                      "(unbounded %llu B)\n",
                      top_k, skewed ? "skewed" : "random", empty_rank ? ", rank 1 empty" : "", flat.rounds,
                      (long long)kBuffer, (long long)most, differing(flat.y, one.y), one.y.size(),
                      differing(flat.dx, one.dx), one.dx.size(), differing(flat.gw1, one.gw1), one.gw1.size(),
                      (unsigned long long)flat.communication_bytes, (unsigned long long)one.communication_bytes);
      }
}

}  // namespace
