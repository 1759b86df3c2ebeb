// `furnace bench alltoall`: how close comm::RowExchange (flat and hierarchical) comes to
// one raw MPI_Alltoallv of exactly the same bytes, on the MoE layer's per-layer traffic:
// dispatch (tokens * top_k rows of d_model floats out) then combine (the same rows back).
// All ranks form one ep group (ep = world size).
#pragma once
#include <cstdint>

namespace furnace::app {

struct BenchAllToAllOptions {
  std::int64_t tokens = 4096;  // tokens per rank
  int d_model = 1024;          // floats per row
  int top_k = 2;               // rows per token
  int reps = 20;               // timed iterations of each, median reported
  int ranks_per_node = 0;      // 0: detect nodes (MPI_COMM_TYPE_SHARED)
};

// Collective over MPI_COMM_WORLD (needs MPI initialised, not Kokkos). Rank 0 prints a
// table: ms per dispatch+combine, GB/s of token data (bytes sent + received on all
// ranks / time, time = max over ranks) and the ratio to raw MPI_Alltoallv. Returns 0,
// 1 if flat and hierarchical deliver different bits, 2 for invalid options.
int bench_alltoall(const BenchAllToAllOptions& opt);

}  // namespace furnace::app
