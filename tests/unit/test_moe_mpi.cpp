// Expert-parallel MoeLayer under mpiexec -n 1/2/4: with ep = world ranks, each rank
// holding E/ep experts and feeding its own tokens, the layer must compute what one
// process holding all experts computes over the concatenation of every rank's tokens:
// the same y and dx rows, the same expert-weight gradients (each owner's slice), the
// same router-weight gradient once the ranks' partial gradients are summed, and the
// same (global) auxiliary-loss statistics. The reference runs redundantly on every
// rank. At -n 1 ep = 1 and the layer runs without a dispatcher; the equivalence is then
// trivial, but the cases still run (only the "empty rank 1" case needs 2 ranks).
//
// Row order: the owner of expert e groups the received copies by source rank, then
// in each source's token order, which is the order of the concatenated batch; so the
// expert GEMMs see the same rows in the same order as the reference, and the results
// differ at most by GEMM blocking (different m) and by the order of the cross-rank
// sum of the router gradient.
#include "moe_mpi_testing.hpp"

namespace {

using namespace furnace::moe_testing;

// The distributed result against the all-token reference.
void expect_matches_reference(const Problem& p, const Result& dist, const Result& ref) {
  const int me = world_rank(), el = p.experts / world_size();
  const std::size_t d = p.d, b = p.begin(me), n = p.tokens[me];
  const std::size_t s1 = std::size_t(d) * p.h1(), s2 = std::size_t(p.hidden) * d;
  const bool h = p.precision != k::Precision::FP32;
  expect_close(dist.y, ref.y.data() + b * d, n * d, "y", h);
  expect_close(dist.dx, ref.dx.data() + b * d, n * d, "dx", h);
  expect_close(dist.gw1, ref.gw1.data() + me * el * s1, el * s1, "dw1", h);
  expect_close(dist.gw2, ref.gw2.data() + me * el * s2, el * s2, "dw2", h);
  auto gr = dist.grouter;  // partial: this rank's tokens only
  allreduce_sum(gr);
  expect_close(gr, ref.grouter.data(), ref.grouter.size(), "drouter (summed over ranks)", h);
  EXPECT_NEAR(dist.stats.aux_loss, ref.stats.aux_loss, 1e-6 * std::fabs(ref.stats.aux_loss));
  EXPECT_NEAR(dist.stats.z_loss, ref.stats.z_loss, 1e-6 * std::fabs(ref.stats.z_loss));
  EXPECT_EQ(dist.stats.load, ref.stats.load);
  EXPECT_EQ(dist.stats.dropped, 0);
  EXPECT_EQ(ref.stats.dropped, 0);
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
      << what << " differs between flat and hierarchical (rank " << world_rank() << ")";
}

// Flat (ranks_per_node 0: the real nodes) and hierarchical (two forced nodes when the
// world is even; at -n 4 that is 2 x 2 and really runs two phases) against the
// reference, and against each other bit for bit.
void check_flat_and_hierarchical(const Problem& p) {
  Data data(p);
  const Result ref = reference(p, data);
  const int P = world_size();
  const Result flat = distributed(p, data, Algo::Flat, 0);
  {
    SCOPED_TRACE("flat");
    expect_matches_reference(p, flat, ref);
  }
  const Result hier = distributed(p, data, Algo::Hierarchical, P % 2 == 0 ? P / 2 : 0);
  {
    SCOPED_TRACE("hierarchical");
    expect_matches_reference(p, hier, ref);
  }
  expect_same_bits(flat.y, hier.y, "y");
  expect_same_bits(flat.dx, hier.dx, "dx");
  expect_same_bits(flat.grouter, hier.grouter, "drouter");
  expect_same_bits(flat.gw1, hier.gw1, "dw1");
  expect_same_bits(flat.gw2, hier.gw2, "dw2");
}

std::vector<std::int64_t> uneven_tokens(int base) {
  std::vector<std::int64_t> t(world_size());
  for (int r = 0; r < world_size(); ++r) t[r] = base + 3 * r;
  return t;
}

TEST(MpiMoeLayer, RandomRoutingMatchesSingleProcess) {
  for (Activation act : {Activation::Gelu, Activation::Swiglu})
    for (int top_k : {1, 2}) {
      SCOPED_TRACE(std::string(act == Activation::Gelu ? "gelu" : "swiglu") + " top_k " +
                   std::to_string(top_k));
      Problem p;
      p.act = act;
      p.top_k = top_k;
      p.tokens = uneven_tokens(13);
      p.seed = 3 + top_k;
      check_flat_and_hierarchical(p);
    }
}

// bf16 and fp16: the rows travel as 16-bit values (half the bytes) and the results
// match one process in the same precision, whose experts round their outputs to the
// same 16-bit values; so the layout changes nothing in 16 bits either.
TEST(MpiMoeLayer, SixteenBitPayloadMatchesSingleProcessInTheSamePrecision) {
  for (k::Precision prec : {k::Precision::BF16, k::Precision::FP16}) {
    SCOPED_TRACE(k::precision_name(prec));
    Problem p;
    p.tokens = uneven_tokens(20);
    p.precision = prec;
    check_flat_and_hierarchical(p);
  }
}

TEST(MpiMoeLayer, AllTokensToOneExpert) {
  for (int top_k : {1, 2}) {
    SCOPED_TRACE("top_k " + std::to_string(top_k));
    Problem p;
    p.top_k = top_k;
    p.tokens = uneven_tokens(11);
    p.all_to_expert0 = true;
    p.seed = 20 + top_k;
    {
      Data data(p);
      const Result ref = reference(p, data);
      ASSERT_EQ(ref.stats.load[0], double(p.total())) << "expert 0 must be every token's top choice";
    }
    check_flat_and_hierarchical(p);
  }
}

TEST(MpiMoeLayer, RankWithoutTokens) {
  const int P = world_size();
  if (P < 2) GTEST_SKIP() << "needs 2 ranks (rank 1 has no tokens)";
  for (int top_k : {1, 2})
    for (bool one_expert : {false, true}) {
      SCOPED_TRACE("top_k " + std::to_string(top_k) + (one_expert ? " all to expert 0" : " random"));
      Problem p;
      p.top_k = top_k;
      p.tokens = uneven_tokens(9);
      p.tokens[1] = 0;
      p.all_to_expert0 = one_expert;
      p.seed = 40 + top_k;
      check_flat_and_hierarchical(p);
    }
}

// With a capacity limit the decision is per source rank, as in DeepSpeed-MoE and
// Megatron-LM: each rank's router computes C = ceil(cf * n_local * k / E) from its own
// token count and drops, per expert, the copies of its own tokens beyond C before any
// exchange (no global count of the copies an expert receives). So the distributed
// layer on rank r computes exactly what a single process computes on rank r's tokens
// alone with the same capacity factor: same y, dx (auxiliary losses off, so the router
// backward uses no global statistic), router gradient and drop count; the owner's
// expert gradients are the sum over ranks of those per-rank gradients.
TEST(MpiMoeLayer, CapacityIsPerSourceRank) {
  const int P = world_size(), me = world_rank();
  for (int top_k : {1, 2})
    for (bool empty_rank : {false, true}) {
      if (empty_rank && P < 2) continue;
      SCOPED_TRACE("top_k " + std::to_string(top_k) + (empty_rank ? " rank 1 empty" : ""));
      Problem p;
      p.top_k = top_k;
      p.capacity_factor = 1.0;
      p.aux_coef = 0;
      p.z_coef = 0;
      p.tokens = uneven_tokens(10);
      if (empty_rank) p.tokens[1] = 0;
      p.all_to_expert0 = true;
      p.seed = 60 + top_k;
      Data data(p);
      const Result mine = reference(p, data, p.begin(me), p.tokens[me]);  // my tokens alone
      for (auto [algo, rpn] : {std::pair{Algo::Flat, 0}, std::pair{Algo::Hierarchical, P % 2 == 0 ? P / 2 : 0}}) {
        SCOPED_TRACE(algo == Algo::Flat ? "flat" : "hierarchical");
        const Result dist = distributed(p, data, algo, rpn);
        const std::size_t n = p.tokens[me], d = p.d, el = p.experts / P;
        const std::size_t s1 = d * p.h1(), s2 = std::size_t(p.hidden) * d;
        expect_close(dist.y, mine.y.data(), n * d, "y");
        expect_close(dist.dx, mine.dx.data(), n * d, "dx");
        expect_close(dist.grouter, mine.grouter.data(), mine.grouter.size(), "drouter");
        auto g1 = mine.gw1, g2 = mine.gw2;  // full [E, ...] per rank -> summed
        allreduce_sum(g1);
        allreduce_sum(g2);
        expect_close(dist.gw1, g1.data() + me * el * s1, el * s1, "dw1");
        expect_close(dist.gw2, g2.data() + me * el * s2, el * s2, "dw2");
        EXPECT_EQ(dist.stats.dropped, mine.stats.dropped);

        // Drops summed over the ranks, against the per-rank capacity: rank r's router
        // keeps at most cap_r = ceil(cf * n_r * k / E) copies per expert of the demand
        // of its own tokens (the local reference's load is that per-rank demand).
        const auto cap = [&](std::int64_t n_r) {
          return std::int64_t(std::ceil(p.capacity_factor * n_r * top_k / p.experts));
        };
        std::int64_t dropped = dist.stats.dropped, expected = 0;
        for (double demand : mine.stats.load)
          expected += std::max<std::int64_t>(0, std::int64_t(demand) - cap(p.tokens[me]));
        MPI_Allreduce(MPI_IN_PLACE, &dropped, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &expected, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        EXPECT_EQ(dropped, expected);
        // Every token's first choice is expert 0, which keeps cap_r of rank r's n_r
        // first choices; with k = 1 nothing else is routed, so that is every drop.
        std::int64_t first_choice_drops = 0;
        for (std::int64_t n_r : p.tokens) first_choice_drops += n_r - std::min(n_r, cap(n_r));
        if (top_k == 1)
          EXPECT_EQ(dropped, first_choice_drops);
        else
          EXPECT_GE(dropped, first_choice_drops);
        EXPECT_GT(dropped, 0);
        // The router's load statistic is the global demand, before the cut.
        auto load = mine.stats.load;
        MPI_Allreduce(MPI_IN_PLACE, load.data(), int(load.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        EXPECT_EQ(dist.stats.load, load);
      }
    }
}

}  // namespace
