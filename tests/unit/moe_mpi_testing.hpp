// The expert-parallel MoeLayer tests' shared set-up (test_moe_mpi.cpp, test_moe_rounds_mpi.cpp):
// a problem, its tensors (identical on every rank), one forward + backward of a layer,
// the single-process reference, the distributed layer with ep = world, and a
// tolerance comparison.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "comm/alltoall.hpp"
#include "comm/groups.hpp"
#include "memory/arena.hpp"
#include "moe/moe_layer.hpp"
#include "mpi_testing.hpp"
#include "testing.hpp"

namespace furnace::moe_testing {

using furnace::comm::Groups;
using furnace::comm::RowExchange;
using furnace::moe::Activation;
using furnace::moe::MoeLayer;
using furnace::moe::MoeWeights;
using furnace::moe::RouterConfig;
using furnace::testing::random_tensor;
using furnace::testing::world_rank;
using furnace::testing::world_size;
using furnace::testing::Tensor;
using Algo = RowExchange::Algorithm;
namespace k = furnace::kernels;


struct Problem {
  int d = 16, hidden = 24, experts = 8, top_k = 2;
  Activation act = Activation::Gelu;
  double capacity_factor = 0;  // unlimited
  double aux_coef = 0.01, z_coef = 0.001;
  std::vector<std::int64_t> tokens;  // per world rank
  bool all_to_expert0 = false;       // make expert 0 every token's first choice
  std::uint64_t seed = 1;
  k::Precision precision = k::Precision::FP32;  // the experts' GEMMs and the dispatch payload

  int h1() const { return act == Activation::Swiglu ? 2 * hidden : hidden; }
  std::int64_t total() const { return std::accumulate(tokens.begin(), tokens.end(), std::int64_t(0)); }
  std::int64_t begin(int r) const {
    return std::accumulate(tokens.begin(), tokens.begin() + r, std::int64_t(0));
  }
  std::int64_t max_tokens() const { return std::max<std::int64_t>(1, *std::max_element(tokens.begin(), tokens.end())); }
  RouterConfig router_config() const {
    RouterConfig c;
    c.experts = experts;
    c.top_k = top_k;
    c.capacity_factor = capacity_factor;
    c.aux_loss_coef = aux_coef;
    c.z_loss_coef = z_coef;
    return c;
  }
};

// The full tensors, identical on every rank (fixed seeds).
struct Data {
  Tensor<float> x, dy, router, w1, w2;
  explicit Data(const Problem& p)
      : x(random_tensor<float>(p.total() * p.d, p.seed * 10 + 1)),
        dy(random_tensor<float>(p.total() * p.d, p.seed * 10 + 2)),
        router(random_tensor<float>(std::size_t(p.d) * p.experts, p.seed * 10 + 3, 0.1)),
        w1(random_tensor<float>(std::size_t(p.experts) * p.d * p.h1(), p.seed * 10 + 4, 0.2)),
        w2(random_tensor<float>(std::size_t(p.experts) * p.hidden * p.d, p.seed * 10 + 5, 0.2)) {
    if (p.all_to_expert0) {
      // Feature 0 is a constant 1 and only expert 0 reads it (weight 5): its logit
      // leads the others (noise std ~0.4) by ~5, so it is every token's top choice.
      for (std::int64_t i = 0; i < p.total(); ++i) x[i * p.d] = 1.0f;
      for (int e = 0; e < p.experts; ++e) router[e] = e == 0 ? 5.0f : 0.0f;
    }
  }
};

struct Result {
  std::vector<float> y, dx, grouter, gw1, gw2;  // gw*: the experts this run held
  furnace::moe::RouterStats stats;
  int rounds = 1;                           // of the dispatch (ep > 1)
  std::int64_t peak_round_rows = 0;         // the most rows one round brought this rank
  std::uint64_t communication_bytes = 0;    // carved from the communication arena
};

// Forward + backward of `layer` on tokens [first, first + n) of `data`, with the
// experts [e0, e0 + el) of the full weights.
inline Result run_layer(MoeLayer& layer, const Problem& p, Data& data, std::int64_t first, std::int64_t n,
                 int e0, int el) {
  const int d = p.d, E = p.experts, H = p.hidden, H1 = p.h1();
  // The local experts: a contiguous slice of the full [E, ...] tensors.
  Tensor<float> w1(std::size_t(el) * d * H1), w2(std::size_t(el) * H * d);
  std::copy_n(data.w1.data.begin() + std::size_t(e0) * d * H1, w1.size(), w1.data.begin());
  std::copy_n(data.w2.data.begin() + std::size_t(e0) * H * d, w2.size(), w2.data.begin());
  Tensor<float> gr(std::size_t(d) * E), g1(w1.size()), g2(w2.size());
  MoeWeights w{data.router.v2(d, E), w1.v3(el, d, H1), w2.v3(el, H, d)};
  MoeWeights g{gr.v2(d, E), g1.v3(el, d, H1), g2.v3(el, H, d)};
  Result out;
  out.y.assign(n * d, -7.0f);
  out.dx.assign(n * d, 0.0f);
  auto x = k::View2<const float>(data.x.data.data() + first * d, n, d);
  auto dy = k::View2<const float>(data.dy.data.data() + first * d, n, d);
  layer.forward(x, w, k::View2<float>(out.y.data(), n, d));
  layer.backward(dy, x, w, k::View2<float>(out.dx.data(), n, d), g);
  Kokkos::fence();
  out.grouter = gr.data;
  out.gw1 = g1.data;
  out.gw2 = g2.data;
  out.stats = layer.stats();
  out.rounds = layer.rounds();
  if (const auto* dispatch = layer.dispatcher()) out.peak_round_rows = dispatch->peak_round_rows();
  return out;
}

// One process, all experts, over tokens [first, first + n) (all tokens by default).
inline Result reference(const Problem& p, Data& data, std::int64_t first = 0, std::int64_t n = -1) {
  if (n < 0) n = p.total();
  furnace::memory::Ledger ledger;
  furnace::memory::Arenas arenas("moe-ref", ledger);
  MoeLayer layer(p.router_config(), p.d, p.hidden, p.act, std::max<std::int64_t>(n, 1), arenas, nullptr, 1,
                 nullptr, 0, p.precision);
  return run_layer(layer, p, data, first, n, 0, p.experts);
}

// ep = world; this rank feeds its own tokens and holds its E/ep experts. buffer_rows > 0
// caps the expert-side buffers (MoeLayer's bounded dropless buffer).
inline Result distributed(const Problem& p, Data& data, Algo algo, int ranks_per_node,
                          std::int64_t buffer_rows = 0) {
  const int P = world_size(), me = world_rank();
  Groups groups(MPI_COMM_WORLD, P, ranks_per_node);
  RowExchange exchange(groups, algo, p.d);
  if (algo == Algo::Hierarchical && P == 4) {  // 2 nodes x 2 ranks: really two phases
    EXPECT_EQ(exchange.algorithm(), Algo::Hierarchical) << exchange.note();
  }
  furnace::memory::Ledger ledger;
  furnace::memory::Arenas arenas("moe-ep", ledger);
  MoeLayer layer(p.router_config(), p.d, p.hidden, p.act, p.max_tokens(), arenas, &exchange, P,
                 /*shared=*/nullptr, buffer_rows, p.precision);
  MPI_Comm world = groups.world();
  layer.set_reducer([world](double* v, int n) {  // as src/train/trainer.cpp does
    furnace::comm::allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, world);
  });
  const int el = p.experts / P;
  Result out = run_layer(layer, p, data, p.begin(me), p.tokens[me], me * el, el);
  out.communication_bytes = arenas.communication.bytes_used();  // the ledger holds whole chunks
  return out;
}

inline void allreduce_sum(std::vector<float>& v) {
  MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

// |a - b| <= 1e-5 * |b| + a floor of 1e-6 of the tensor's largest entry (for entries
// that are sums with cancellation).
//
// sixteen_bit: the layer rounds to 16 bits (train.precision = bf16 | fp16), where an
// fp32 GEMM's last-bit difference (another blocking) now and then lands a value on the
// other side of a 16-bit rounding step: such an entry differs by one 16-bit step (2^-8
// relative for bf16). Then at most 3% of the entries may miss the fp32 bound, none by
// more than 1e-2 relative; a 16-bit rounding left out makes most entries miss it.
inline void expect_close(const float* a, const float* b, std::size_t n, const std::string& what,
                         bool sixteen_bit = false) {
  float big = 0;
  for (std::size_t i = 0; i < n; ++i) big = std::max(big, std::fabs(b[i]));
  int bad = 0, missed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double err = std::fabs(double(a[i]) - double(b[i]));
    const bool within = err <= 1e-5 * std::fabs(b[i]) + 1e-6 * big;
    missed += !within;
    const bool ok = sixteen_bit ? err <= 1e-2 * std::fabs(b[i]) + 1e-3 * big : within;
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << "rank " << world_rank() << " " << what << "[" << i << "] = " << a[i]
                    << ", reference " << b[i];
  }
  EXPECT_EQ(bad, 0) << what << " (rank " << world_rank() << ")";
  if (sixteen_bit) {
    EXPECT_LE(missed, 0.03 * double(n)) << what << ": entries beyond 1e-5 (rank " << world_rank() << ")";
  }
}

inline void expect_close(const std::vector<float>& a, const float* b, std::size_t n, const std::string& what,
                         bool sixteen_bit = false) {
  ASSERT_EQ(a.size(), n) << what;
  expect_close(a.data(), b, n, what, sixteen_bit);
}

}  // namespace furnace::moe_testing
