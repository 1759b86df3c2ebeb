// `furnace bench kernels`: how close the expert feed-forward (moe::ExpertFFN,
// forward + backward) comes to plain cblas_sgemm calls of exactly its GEMM shapes.
// The ratio is the overhead of everything around the GEMMs: grouping, the activation
// (GELU's elementwise cost counts against ExpertFFN), zeroing, dispatch.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/experts.hpp"

namespace furnace::app {

// One expert layer: `tokens` tokens each routed to `top_k` experts, the tokens * top_k
// rows split evenly over `experts` experts of d_model -> hidden -> d_model.
struct ExpertBenchShape {
  std::int64_t tokens = 2048;  // batch 16 x seq 128
  int top_k = 2;
  int experts = 8;
  int d_model = 256;
  int hidden = 512;
  moe::Activation activation = moe::Activation::Gelu;

  std::int64_t rows() const { return tokens * top_k; }
  std::string label() const;  // e.g. "E8 d256 h512 rows4096"
};

// The shapes benchmarked by default: the default model's experts, and a wide layer
// (d_model 1024, hidden 4096) where the GEMMs dominate everything else.
std::vector<ExpertBenchShape> default_expert_bench_shapes();

// "d_model=1024,hidden=4096" style; keys tokens, top_k, experts, d_model, hidden,
// act (gelu|swiglu); unnamed keys keep their defaults. Throws std::invalid_argument
// naming the bad key or value.
ExpertBenchShape parse_expert_bench_shape(std::string_view spec);

struct BenchKernelsOptions {
  int reps = 5;                                                     // timed runs of each, median reported
  std::vector<ExpertBenchShape> shapes = default_expert_bench_shapes();  // empty: the defaults
  bool csv = false;                                                 // CSV instead of a table
};

// Runs the benchmark and prints the result on stdout (rank 0 only when MPI is up; every
// rank runs, so the numbers are per rank under the load of all). Needs Kokkos
// initialised. Returns the process exit code (0, or 2 for invalid options).
int bench_kernels(const BenchKernelsOptions& opt);

}  // namespace furnace::app
