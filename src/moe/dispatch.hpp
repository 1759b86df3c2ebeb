// Expert-parallel dispatch: moves the expert-grouped token copies of this rank to
// the ranks that own their experts and brings the results back.
//
//   xp [rows, d]  grouped by global expert = by destination rank, then local expert
//     -> exchange -> xr [R, d] grouped by source rank, then local expert
//     -> reorder  -> xe [R, d] grouped by local expert, then source rank (one GEMM per expert)
// and the same steps in reverse for the results and for the gradients.
//
// Rounds (dropless with a bounded buffer, memory.moe_buffer_mb): when the ep group
// sends some rank more rows than its buffers hold (B = max_recv_rows), the exchange
// runs in rounds. Receiver q lines up the rows it is sent, source rank by source rank
// (each source's block in its own order); round t moves the rows at positions
// [t B, (t + 1) B) of that line, so every source sends, per round, the next part of
// its block for q (a prefix over the rounds done so far) and no rank receives more
// than B rows. The rounds are max over the ranks of ceil(received / B), agreed with one
// allreduce, so every rank enters every round's exchanges.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/alltoall.hpp"
#include "kernels/precision.hpp"
#include "kernels/views.hpp"
#include "memory/arena.hpp"

namespace furnace::moe {

class Dispatcher {
 public:
  // max_recv_rows: the most rows one round brings to this rank (what the expert-side
  // buffers hold). rounds == false: MoeLayer sized them from the router's capacity, a
  // bound no step exceeds; a plan beyond it throws. rounds == true: a step may need
  // more (a bounded dropless buffer), and plan splits the exchange into rounds. The
  // buffers depend on the sizes only, so a Measure build without a RowExchange
  // (exchange == nullptr) counts the same bytes as the real one; the exchange is
  // needed only to run.
  // payload != FP32 (train.precision = bf16 | fp16): rows travel as 16-bit values, half
  // the bytes, through 16-bit staging plus a send-side buffer of max_send_rows rows.
  // The rows to the experts lose nothing (the experts' GEMMs round them to 16 bits as
  // they read them); the results coming back are 16-bit values (ExpertFFN rounds its
  // outputs to them in every layout).
  Dispatcher(comm::RowExchange* exchange, int ep_size, int local_experts, int d_model,
             std::int64_t max_recv_rows, memory::Arena& comm_arena, bool rounds = false,
             kernels::Precision payload = kernels::Precision::FP32, std::int64_t max_send_rows = 0);

  // From the global expert offsets [E+1] of this rank's grouped copies: exchanges counts
  // (and, with rounds allowed, agrees on their number over the ep group). Returns the
  // number of rounds, >= 1, the same on every rank of the group. Without rounds, throws
  // std::logic_error when the peers send more than max_recv_rows (the sizing bound was
  // wrong), before any row moves.
  int plan(const std::vector<std::int64_t>& global_offsets);
  int rounds() const { return rounds_; }
  // Selects round t (0 <= t < rounds()) of the last plan for to_experts / from_experts.
  // Returns the local expert offsets [El+1] of the rows this rank computes in it.
  const std::vector<std::int64_t>& round(int t);
  std::int64_t max_recv_rows() const { return max_recv_; }
  std::int64_t recv_rows_total() const { return expert_offsets_.back(); }  // of the round
  // The most rows a round of the last plan brought this rank so far (<= max_recv_rows).
  std::int64_t peak_round_rows() const { return peak_round_rows_; }

  // The round's rows of xp [send rows, d] -> xe [round rows, d] (expert-major).
  void to_experts(kernels::View2<const float> xp, kernels::View2<float> xe);
  // ye [round rows, d] (expert-major) -> the round's rows of yp [send rows, d].
  void from_experts(kernels::View2<const float> ye, kernels::View2<float> yp);

 private:
  comm::RowExchange* exchange_;
  int ep_, el_, d_;
  std::int64_t max_recv_;
  bool rounds_allowed_;
  int rounds_ = 0, round_ = -1;
  std::int64_t peak_round_rows_ = 0;
  // Of the plan: counts [peer * el + j] sent and received; where each destination's
  // block starts in xp; where this rank's rows stand in each destination's line, and
  // where each source's rows stand in this rank's line (see the header comment).
  std::vector<std::int64_t> sent_, received_, block_start_, pos_at_dest_, pos_of_source_;
  // Of the round: rows per peer and their offsets in the send-side and staging buffers.
  std::vector<std::int64_t> send_rows_, send_off_, recv_rows_, recv_off_, expert_offsets_;
  kernels::View1<kernels::index_t> to_expert_order_, to_source_order_;
  kernels::Precision payload_;
  kernels::View2<float> staging_;  // [max_recv, d], rows in source-rank order (fp32 payload)
  kernels::View2<std::uint16_t> staging16_, send16_;  // [max_recv, d] and [max_send, d] (16-bit payload)
  // The round's rows of each peer (send_off_, send_rows_) between the send side's fp32
  // rows and send16_, at the same row offsets.
  void send_side_to_16bit(kernels::View2<const float> xp);
  void send_side_from_16bit(kernels::View2<float> yp);
};

}  // namespace furnace::moe
