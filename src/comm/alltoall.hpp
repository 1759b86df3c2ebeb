// The expert-parallel token exchange: moves rows of `width` floats between the ranks of
// an ep group. comm knows no model; the MoE layer decides which rows go where.
//
// Layout contract (both directions of the MoE layer use it):
//   send  rows grouped by destination ep rank, in ep-rank order (send_rows[d] rows to d)
//   recv  rows grouped by source ep rank, in ep-rank order (recv_rows[s] rows from s)
// so the reverse exchange (combine) is the same call with the roles swapped.
//
// Algorithms (identical output, bit for bit):
//   Flat          one MPI_Alltoallv on the ep communicator.
//   Hierarchical  Tutel-style 2D exchange: an intra-node all-to-all that gathers on
//                 local rank j everything bound for local index j on any node, then an
//                 inter-node all-to-all among ranks of equal local index, so each node
//                 pair exchanges L times fewer, L times larger messages. It needs the ep
//                 group to be equal-size, contiguous blocks of ranks per node; otherwise
//                 it runs Flat (said once on stderr by rank 0). With one node, or one
//                 rank per node, the two phases collapse into Flat, which then runs.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/groups.hpp"
#include "memory/ledger.hpp"
#include "comm/phase_timer.hpp"
#include "memory/pool.hpp"

namespace furnace::comm {

class RowExchange {
 public:
  enum class Algorithm { Flat, Hierarchical };

  // Collective over groups.world() (every rank builds its RowExchange together, in the
  // same order). `width` = floats per row (> 0). The hierarchical staging is counted in
  // `ledger` (communication, host tier, "RowExchange::stage"), or in a ledger of its own
  // when none is given; `ledger` must outlive the RowExchange.
  RowExchange(const Groups& groups, Algorithm algorithm, int width, memory::Ledger* ledger = nullptr);
  // The hierarchical staging a step with balanced routing holds: one pool block for the
  // `rows` a rank sends per exchange, of `row_bytes` each (the planner's figure; the
  // pool's real high-water mark follows the routing). 0 for flat.
  static std::size_t balanced_staging_bytes(Algorithm algorithm, std::int64_t rows, std::size_t row_bytes);
  static constexpr const char* kStagingLabel = "RowExchange::stage";
  // The staging pool (its bytes and high-water mark).
  const memory::Pool<Kokkos::HostSpace>& staging() const { return pool_; }
  ~RowExchange();
  RowExchange(const RowExchange&) = delete;
  RowExchange& operator=(const RowExchange&) = delete;

  // Collective over the ep group. send_rows / recv_rows have one entry per ep rank;
  // recv_rows must be what the peers send (exchange_counts gives it). Every rank calls
  // this even when it moves no rows. send and recv must not overlap.
  void exchange(const float* send, const std::vector<std::int64_t>& send_rows, float* recv,
                const std::vector<std::int64_t>& recv_rows);
  // The same with each peer's rows at an explicit row offset: the rows for ep rank d
  // start at row send_off[d] of send, those from rank s land at row recv_off[s] of recv
  // (ranges of different peers must not overlap; gaps between them are left alone). The
  // MoE dispatcher's rounds move a sub-range of each peer's block this way, in place.
  void exchange(const float* send, const std::vector<std::int64_t>& send_rows,
                const std::vector<std::int64_t>& send_off, float* recv,
                const std::vector<std::int64_t>& recv_rows, const std::vector<std::int64_t>& recv_off);
  // The same for rows of `width` 16-bit values (train.precision = bf16 | fp16): half
  // the bytes of the fp32 rows, by the same algorithm.
  void exchange(const std::uint16_t* send, const std::vector<std::int64_t>& send_rows, std::uint16_t* recv,
                const std::vector<std::int64_t>& recv_rows);
  void exchange(const std::uint16_t* send, const std::vector<std::int64_t>& send_rows,
                const std::vector<std::int64_t>& send_off, std::uint16_t* recv,
                const std::vector<std::int64_t>& recv_rows, const std::vector<std::int64_t>& recv_off);

  // Collective over the ep group. counts[d * slots + s] = rows this rank sends to ep
  // rank d for its local slot s (local expert); returns recv[src * slots + s] = rows
  // ep rank src sends to this rank's slot s.
  std::vector<std::int64_t> exchange_counts(const std::vector<std::int64_t>& counts, int slots);

  // Collective over the ep group: the largest `value` of its ranks (how many rounds a
  // bounded exchange needs, agreed so that every rank runs the same number).
  std::int64_t max_over_group(std::int64_t value);

  Algorithm requested() const { return requested_; }
  Algorithm algorithm() const { return algorithm_; }  // what actually runs
  const std::string& note() const { return note_; }   // why it differs, or ""
  int width() const { return width_; }
  int ep_size() const { return ep_size_; }
  int ep_rank() const { return ep_rank_; }
  int nodes() const { return nodes_; }              // nodes spanned by the ep group
  int ranks_per_node() const { return per_node_; }  // ep ranks per node (0: uneven)
  // The rows' exchanges (not exchange_counts), timed: one span per exchange.
  PhaseTimer& timer() { return timer_; }

 private:
  using Rows = std::vector<std::int64_t>;
  // A row as MPI moves it: `width` fp32 or 16-bit values.
  struct RowFormat {
    MPI_Datatype type = MPI_DATATYPE_NULL;
    std::size_t bytes = 0;
  };
  void exchange_rows(const RowFormat& row, const std::byte* send, const Rows& send_rows, const Rows& send_off,
                     std::byte* recv, const Rows& recv_rows, const Rows& recv_off);
  void flat(const RowFormat& row, const std::byte* send, const Rows& send_rows, const Rows& send_off,
            std::byte* recv, const Rows& recv_rows, const Rows& recv_off);
  void hierarchical(const RowFormat& row, const std::byte* send, const Rows& send_rows, const Rows& send_off,
                    std::byte* recv, const Rows& recv_rows, const Rows& recv_off);

  Algorithm requested_, algorithm_;
  std::string note_;
  int width_ = 1, ep_size_ = 1, ep_rank_ = 0, nodes_ = 1, per_node_ = 1;
  int node_ = 0, local_ = 0;  // this rank's node block and index inside it
  RowFormat rows_fp32_, rows_16bit_;
  PhaseTimer timer_;
  MPI_Comm ep_ = MPI_COMM_NULL, intra_ = MPI_COMM_NULL, inter_ = MPI_COMM_NULL;
  // The hierarchical exchange's staging (rows between the two phases, and phase 2's rows
  // when recv_off leaves gaps inside a node's block): blocks acquired per call, reused.
  memory::Ledger own_ledger_;  // where the pool counts when the owner gives no ledger
  memory::Pool<Kokkos::HostSpace> pool_;
};

}  // namespace furnace::comm
