// Expert-parallel dispatch: moves the expert-grouped token copies of this rank to
// the ranks that own their experts and brings the results back.
//
//   xp [rows, d]  grouped by global expert = by destination rank, then local expert
//     -> exchange -> xr [R, d] grouped by source rank, then local expert
//     -> reorder  -> xe [R, d] grouped by local expert, then source rank (one GEMM per expert)
// and the same steps in reverse for the results and for the gradients.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/alltoall.hpp"
#include "kernels/views.hpp"
#include "memory/arena.hpp"

namespace furnace::moe {

class Dispatcher {
 public:
  // max_recv_rows: the most rows any step can bring to this rank (MoeLayer derives it
  // from the router's capacity). The buffers depend on the sizes only, so a Measure
  // build without a RowExchange (exchange == nullptr) counts the same bytes as the
  // real one; the exchange is needed only to run.
  Dispatcher(comm::RowExchange* exchange, int ep_size, int local_experts, int d_model,
             std::int64_t max_recv_rows, memory::Arena& comm_arena);

  // From the global expert offsets [E+1] of this rank's grouped copies: exchanges
  // counts and prepares the plan. Returns the local expert offsets [El+1] of the
  // rows this rank will compute. Throws std::logic_error when the peers send more
  // than max_recv_rows (the sizing bound was wrong), before any row moves.
  const std::vector<std::int64_t>& plan(const std::vector<std::int64_t>& global_offsets);
  std::int64_t recv_rows_total() const { return expert_offsets_.back(); }
  std::int64_t max_recv_rows() const { return max_recv_; }

  // xp [send rows, d] -> xe [recv rows, d] (expert-major).
  void to_experts(kernels::View2<const float> xp, kernels::View2<float> xe);
  // ye [recv rows, d] (expert-major) -> yp [send rows, d].
  void from_experts(kernels::View2<const float> ye, kernels::View2<float> yp);

 private:
  comm::RowExchange* exchange_;
  int ep_, el_, d_;
  std::int64_t max_recv_;
  std::vector<std::int64_t> send_rows_, recv_rows_, expert_offsets_;
  kernels::View1<kernels::index_t> to_expert_order_, to_source_order_;
  kernels::View2<float> staging_;  // [max_recv, d], rows in source-rank order
};

}  // namespace furnace::moe
