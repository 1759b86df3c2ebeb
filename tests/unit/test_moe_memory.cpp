// The MoE layer's buffer sizing, measured by train::measure_memory as the trainer does
// (single process: a Measure build needs no RowExchange, so ep is set in the spec):
//   - with a capacity factor the communication bytes per rank do not grow with ep
//     (receive buffers sized from the capacity bound, not tokens * top_k * ep);
//   - a Measure build with ep > 1 and no exchange still counts those buffers;
//   - the MoE layers of one model share one set of backward-only buffers;
//   - a plan whose received rows exceed the buffers throws, before any row moves.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "comm/alltoall.hpp"
#include "comm/groups.hpp"
#include "io/config.hpp"
#include "memory/arena.hpp"
#include "memory/ledger.hpp"
#include "moe/dispatch.hpp"
#include "moe/moe_layer.hpp"
#include "moe/router.hpp"
#include "train/trainer.hpp"

namespace furnace {
namespace {

using memory::Category;
using memory::Tier;

constexpr int kExperts = 8, kTopK = 2, kBatchPerRank = 4;
constexpr double kCapacityFactor = 1.25;
constexpr std::uint64_t kArenaAlign = 64;  // memory::Arena rounds every request up to it

io::Config moe_config(int layers) {
  io::Config c;
  c.model.n_layers = layers;
  c.moe.experts = kExperts;
  c.moe.top_k = kTopK;
  c.moe.every = 1;
  c.moe.capacity_factor = kCapacityFactor;
  return c;
}

// What one rank of an ep group of `ep` ranks holds, measured without any exchange.
memory::Ledger measure(const io::Config& c, int ep) {
  comm::Groups g(MPI_COMM_SELF, 1, 1);
  model::GptSpec s = train::make_spec(c, g.layout());
  s.ep_size = ep;
  s.local_experts = kExperts / ep;
  s.first_expert = 0;
  s.batch = kBatchPerRank;
  s.exchange = nullptr;
  return train::measure_memory(c, s);
}

std::uint64_t communication(const memory::Ledger& l) { return l.peak(Category::Communication, Tier::Device); }
std::uint64_t workspace(const memory::Ledger& l) { return l.peak(Category::Workspace, Tier::Device); }

TEST(MoeMemory, CommunicationBytesDoNotGrowWithEp) {
  const io::Config c = moe_config(2);
  const std::uint64_t ep1 = communication(measure(c, 1)), ep2 = communication(measure(c, 2)),
                      ep4 = communication(measure(c, 4));
  std::printf("communication bytes per rank: ep=1 %llu, ep=2 %llu, ep=4 %llu\n", (unsigned long long)ep1,
              (unsigned long long)ep2, (unsigned long long)ep4);
  EXPECT_EQ(ep1, 0u) << "ep = 1 exchanges nothing";
  EXPECT_GT(ep2, 0u) << "a Measure build without a RowExchange must still count the dispatcher";
  EXPECT_LE(ep4, ep2);
  // Exactly the bound: each of the ep sources keeps at most (E / ep) * C copies for
  // this rank's experts, C = ceil(cf * n * k / E), so a rank receives R = E * C rows of
  // d floats (here (E / ep) * C < n * k for both ep); per layer the staging rows, xe,
  // ye and two index permutations of R, and once per model the shared dxe and dye.
  const std::int64_t n = std::int64_t(kBatchPerRank) * c.model.seq_len;
  const std::int64_t R = kExperts * std::int64_t(std::ceil(kCapacityFactor * n * kTopK / kExperts));
  const auto aligned = [](std::uint64_t b) { return (b + kArenaAlign - 1) / kArenaAlign * kArenaAlign; };
  const std::uint64_t rows = aligned(R * c.model.d_model * sizeof(float));
  const std::uint64_t index = aligned(R * sizeof(kernels::index_t));
  const std::uint64_t expected = c.model.n_layers * (3 * rows + 2 * index) + 2 * rows;
  EXPECT_EQ(ep2, expected);
  EXPECT_EQ(ep4, expected);
}

// A second MoE layer adds no backward buffers: workspace (all backward-only there)
// stays that of one layer, and communication grows by the layer's forward rows only.
TEST(MoeMemory, LayersShareBackwardBuffers) {
  for (int ep : {1, 2}) {
    SCOPED_TRACE("ep " + std::to_string(ep));
    const auto one = measure(moe_config(1), ep), two = measure(moe_config(2), ep);
    EXPECT_EQ(workspace(two), workspace(one));
    if (ep > 1) {
      EXPECT_LT(communication(two), 2 * communication(one));
    }
  }
}

TEST(MoeMemory, PlanBeyondTheBufferThrows) {
  comm::Groups g(MPI_COMM_SELF, 1, 1);
  comm::RowExchange exchange(g, comm::RowExchange::Algorithm::Flat, /*width=*/4);
  memory::Ledger ledger;
  memory::Arenas arenas("dispatch", ledger);
  const std::int64_t max_recv = 5;
  moe::Dispatcher dispatcher(&exchange, 1, 2, 4, max_recv, arenas.communication);
  EXPECT_NO_THROW(dispatcher.plan({0, 3, 5}));
  EXPECT_THROW(dispatcher.plan({0, 3, 6}), std::logic_error);
  moe::Dispatcher measure_only(nullptr, 2, 1, 4, max_recv, arenas.communication);
  EXPECT_THROW(measure_only.plan({0, 1, 2}), std::logic_error);
}

// Dropless: the expert-side buffers are memory.moe_buffer_mb's, B rows, whatever ep
// (unbounded they would be n * top_k * ep rows), and B is the most rows that fit.
TEST(MoeMemory, DroplessBuffersAreTheBudget) {
  io::Config c = moe_config(2);
  c.moe.capacity_factor = 0;
  c.memory.moe_buffer_mb = 0.25;
  const std::uint64_t budget = std::uint64_t(0.25 * (1 << 20));
  const int d = c.model.d_model, H = c.moe.expert_hidden;
  const std::int64_t B = moe::buffer_rows_for(budget, c.model.n_layers, d, H, moe::Activation::Gelu);
  const auto row = moe::expert_row_bytes(d, H, moe::Activation::Gelu);
  const std::uint64_t per_row = c.model.n_layers * row.per_layer + row.shared;
  const std::uint64_t rounding = 64 * (7 * c.model.n_layers + 4);
  ASSERT_GT(B, 0);
  EXPECT_LE(B * per_row + rounding, budget);
  EXPECT_GT((B + 1) * per_row + rounding, budget) << "B is not the most rows that fit";
  const auto aligned = [](std::uint64_t b) { return (b + kArenaAlign - 1) / kArenaAlign * kArenaAlign; };
  const std::uint64_t rows = aligned(B * d * sizeof(float)), index = aligned(B * sizeof(kernels::index_t));
  const std::uint64_t expected = c.model.n_layers * (3 * rows + 2 * index) + 2 * rows;
  const std::uint64_t ep2 = communication(measure(c, 2)), ep4 = communication(measure(c, 4));
  std::printf("dropless, 0.25 MiB: B = %lld rows; communication bytes per rank ep=2 %llu, ep=4 %llu\n",
              (long long)B, (unsigned long long)ep2, (unsigned long long)ep4);
  EXPECT_EQ(ep2, expected);
  EXPECT_EQ(ep4, expected);
  c.memory.moe_buffer_mb = 1 << 20;  // more than the worst case: that, not more
  const std::int64_t worst = 4 * std::int64_t(kBatchPerRank) * c.model.seq_len * kTopK;
  const std::uint64_t wrows = aligned(worst * d * sizeof(float)), windex = aligned(worst * sizeof(kernels::index_t));
  EXPECT_EQ(communication(measure(c, 4)), c.model.n_layers * (3 * wrows + 2 * windex) + 2 * wrows);
}

// The bound the buffers are sized from, on its own.
TEST(MoeMemory, KeptCopiesBound) {
  moe::RouterConfig cfg;
  cfg.experts = 8;
  cfg.top_k = 2;
  cfg.capacity_factor = 1.0;
  EXPECT_EQ(moe::expert_capacity(cfg, 100), 25);              // ceil(1 * 100 * 2 / 8)
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 8), 200);          // every copy fits
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 2), 50);           // 2 experts x C
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 1), 25);
  cfg.capacity_factor = 8.0;                                  // C = 200 > n
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 1), 100);          // a token once per expert
  cfg.capacity_factor = 0;                                    // dropless
  EXPECT_EQ(moe::expert_capacity(cfg, 100), -1);
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 1), 100);          // one copy per token
  EXPECT_EQ(moe::max_kept_copies(cfg, 100, 4), 200);
}

}  // namespace
}  // namespace furnace
