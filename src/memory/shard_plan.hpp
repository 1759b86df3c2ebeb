// ZeRO-1 (memory.zero = 1): which rank of its reduction group keeps the AdamW moments
// of which part of each tensor. A tensor's kind names its group: Dense tensors are
// reduced over the world, Expert tensors over the replicas of those experts (the dp
// group). The unit of ownership is a checkpoint checksum block (a whole Dense tensor,
// one expert of an Expert tensor), so a rank writes and reads whole, verifiable
// blocks of the moments in their global shape. The blocks of one kind, in buffer
// order, are cut into group-size contiguous runs, the largest as small as such a cut
// allows (ranks filled in order up to the least sufficient capacity): in every run of
// consecutive tensors of one kind (a gradient bucket) each rank owns one contiguous
// range, in rank order, which is what MPI_Reduce_scatter and MPI_Allgatherv move.
// The owned parts are packed into the moment buffers, placed as the store places
// tensors (place_tensor: 64-byte aligned, large ones on a page); unsharded
// (group size 1) that packing is exactly the parameters' layout.
#pragma once
#include <cstdint>
#include <vector>

#include "memory/param_info.hpp"

namespace furnace::memory {

// This rank's place in the two reduction groups (sizes 1: unsharded).
struct ShardLayout {
  int dense_ranks = 1, dense_rank = 0;    // the world
  int expert_ranks = 1, expert_rank = 0;  // the dp group (replicas of the same experts)
  bool sharded() const { return dense_ranks > 1 || expert_ranks > 1; }
};

class ShardPlan {
 public:
  ShardPlan() = default;
  ShardPlan(const std::vector<ParamInfo>& infos, const ShardLayout& layout);

  // This rank's part of tensor i: rows [row0, row0 + rows) of its local shape, i.e.
  // elements [first, first + count) of the tensor, at `offset` in the moment buffers.
  struct Part {
    std::int64_t row0 = 0, rows = 0, first = 0, count = 0, offset = 0;
  };
  const Part& part(int i) const { return parts_[std::size_t(i)]; }
  std::int64_t total() const { return total_; }  // moment elements per family (padded)

  // The range of flat buffer elements [begin, end) that each rank of the group of
  // `kind` owns within [begin, end) (which holds tensors of that kind only):
  // counts[r] elements from displs[r] (relative to begin), ascending in r.
  void split(ParamKind kind, std::int64_t begin, std::int64_t end, std::vector<int>& counts,
             std::vector<int>& displs) const;
  int rank_of(ParamKind kind) const;

 private:
  ShardLayout layout_;
  std::vector<Part> parts_;
  // Per kind: flat buffer offset where rank r's range starts, r = 0..ranks (the last
  // is the end of the buffer); rank r owns [cuts[r], cuts[r + 1]) of that kind.
  std::vector<std::int64_t> cuts_[2];
  std::int64_t total_ = 0;
};

}  // namespace furnace::memory
