// Gradient synchronisation in buckets, started while the backward still runs.
// A bucket is a run of consecutive tensors of one kind in the gradient buffer (so
// one in-place MPI_Iallreduce covers it), filled in the order the backward
// finishes tensors (the reverse of registration). Dense gradients are summed over
// the world; expert gradients over the replicas of those experts (the dp group).
// With ZeRO-1 (the store's moments sharded) a bucket is reduce-scattered instead:
// each rank receives the sum of the part whose moments it owns (ShardPlan::split),
// in place; after the update gather_params() all-gathers the parameters the same way.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <vector>

#include "comm/groups.hpp"
#include "comm/phase_timer.hpp"
#include "kernels/precision.hpp"
#include "memory/ledger.hpp"
#include "memory/state_store.hpp"

namespace furnace::comm {

class GradSync {
 public:
  // wire (comm.grad_dtype): FP32 reduces the fp32 gradients in place; BF16 rounds each
  // bucket into a bf16 copy, reduces that (a commutative MPI_Op that adds in fp32 and
  // rounds each partial sum, so every rank gets the same bits), and widens the sum
  // back: half the bytes on the network. Its buffer is counted in `ledger`
  // (communication, host, "GradSync::wire") when one is given.
  GradSync(const memory::StateStore& ps, const Groups& groups, std::size_t bucket_bytes,
           kernels::Precision wire = kernels::Precision::FP32, memory::Ledger* ledger = nullptr);
  ~GradSync();
  static constexpr const char* kWireLabel = "GradSync::wire";
  static constexpr const char* kScatterLabel = "GradSync::scatter";
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Start of a backward pass: every bucket waits for all its tensors again.
  void begin();
  // Tensor `param`'s gradient is final; starts its bucket's reduction when full.
  void ready(int param);
  // Returns once the reduction of tensor `param`'s bucket is done (it must have been
  // started: every tensor of it ready), so its gradient may leave memory.
  void wait_for(int param);
  // Starts what is left (tensors never marked ready) and waits for everything.
  void finish();
  // ZeRO-1, after the optimizer updated this rank's parts: every rank gets every
  // updated parameter (collective over the same groups; a no-op unless sharded).
  void gather_params();

  std::size_t bucket_count() const { return buckets_.size(); }
  // Every reduction call, wait and (bf16) conversion, timed. In barrier mode finish()
  // and gather_params() start with a barrier on the world, and finish() (or wait_for)
  // starts the reductions ready() would have started during the backward, so the time
  // is the transfer alone: the same reductions of the same values, the same bits.
  PhaseTimer& timer() { return timer_; }

  // A bucket as planned: tensors first..last (registration order) of one kind, `count`
  // floats from `offset` of the gradient buffer, reduced over `ranks` ranks.
  struct Span {
    std::int64_t offset = 0, count = 0;
    int first = 0, last = 0;
    memory::ParamKind kind = memory::ParamKind::Dense;
    int ranks = 1;
    bool sole_owner = false;  // ZeRO-1: one rank owns all of it (set by mark_owners)
  };
  // ZeRO-1 owns whole tensors, so most buckets lie inside one rank's range. Such a
  // bucket is reduced with an allreduce and gathered with a broadcast from its owner:
  // MPICH's reduce-scatter and allgatherv with one non-empty part were measured far
  // slower (2 ranks, 4 MiB: allgatherv 9.5 ms against a broadcast's 1.5 ms over TCP,
  // 0.84 against 0.44 ms in shared memory, 888 against 8 ms at 4 ranks on 2 cores;
  // reduce-scatter 4.0 against an allreduce's 2.8 ms). The owner: the one rank of
  // `counts` with a non-empty part, or -1 (a bucket split between owners).
  static int sole_owner(const std::vector<int>& counts);
  // Sets Span::sole_owner of each bucket by `ps`'s ZeRO-1 ownership (none unsharded).
  static void mark_owners(const memory::StateStore& ps, std::vector<Span>& buckets);
  // The buckets a GradSync forms when dense gradients are reduced over dense_ranks and
  // expert gradients over expert_ranks (tensors whose group has one rank get none), in
  // the order they are started. The constructor uses it; so does the planner.
  static std::vector<Span> plan(const std::vector<memory::ParamInfo>& infos, std::size_t bucket_bytes,
                                int dense_ranks, int expert_ranks);
  // The bytes of the wire copy those buckets need (bf16: 2 per element; fp32: none).
  static std::uint64_t wire_bytes(const std::vector<Span>& buckets, kernels::Precision wire);
  // The bytes of the ZeRO-1 reduce-scatter's receive buffer (this rank's part of each
  // bucket, in the wire's type); 0 unless `ps` has sharded moments.
  static std::uint64_t scatter_bytes(const memory::StateStore& ps, const std::vector<Span>& buckets,
                                     kernels::Precision wire);

 private:
  struct Bucket {
    std::int64_t offset = 0, count = 0;  // floats in the gradient buffer
    MPI_Comm comm = MPI_COMM_NULL;
    int tensors = 0, pending = 0;
    MPI_Request request = MPI_REQUEST_NULL;
    // ZeRO-1: each rank's part of the bucket (counts[r] floats from offset + displs[r]).
    std::vector<int> counts, displs;
    int owner = -1;  // ZeRO-1: the rank of comm that owns all of it (sole_owner), or -1
    int me = 0;  // this rank in comm
    std::int64_t wire_offset = 0;  // bf16 wire: where the bucket's copy starts in wire_
    std::size_t scatter_offset = 0;  // ZeRO-1: byte offset of this rank's summed part in scatter_
    bool landed = true;            // its reduced values are back in the gradient buffer
    bool started = false;          // its reduction was started in this backward pass
  };
  void start(Bucket& b);
  void wait(Bucket& b);  // waits for b's reduction and, on a bf16 wire, widens it back
  void wait_all();

  const memory::StateStore& ps_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;  // per tensor; -1 when its group has one rank
  kernels::Precision wire_dtype_;
  std::vector<std::uint16_t> wire_;  // bf16 wire: every bucket's copy, back to back
  std::vector<std::byte> scatter_;   // ZeRO-1: this rank's summed part of every bucket
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  MPI_Comm world_ = MPI_COMM_NULL;  // groups.world(), owned by the Groups
  PhaseTimer timer_;
};

}  // namespace furnace::comm
