#include "memory/shard_plan.hpp"

#include <algorithm>
#include <limits>

namespace furnace::memory {

namespace {
int kind_index(ParamKind k) { return k == ParamKind::Expert ? 1 : 0; }
std::int64_t rows_of(const ParamInfo& p) { return p.shape.empty() ? 1 : std::max<std::int64_t>(p.shape[0], 1); }
// Rows per checksum block: the whole tensor when Dense, one expert when Expert.
std::int64_t block_rows(const ParamInfo& p) { return p.kind == ParamKind::Expert ? 1 : rows_of(p); }
std::int64_t align16(std::int64_t n) { return (n + 15) / 16 * 16; }

// The least capacity with which filling the ranks in order, each up to it, places
// every block: the smallest largest share any contiguous split can give (binary search).
std::int64_t least_capacity(const std::vector<std::int64_t>& blocks, int ranks) {
  std::int64_t lo = 0, hi = 0;
  for (std::int64_t b : blocks) lo = std::max(lo, b), hi += b;
  while (lo < hi) {
    const std::int64_t cap = lo + (hi - lo) / 2;
    int used = 1;
    std::int64_t fill = 0;
    for (std::int64_t b : blocks) {
      if (fill + b > cap) ++used, fill = 0;
      fill += b;
    }
    if (used <= ranks) hi = cap; else lo = cap + 1;
  }
  return lo;
}

}  // namespace

ShardPlan::ShardPlan(const std::vector<ParamInfo>& infos, const ShardLayout& layout) : layout_(layout) {
  for (ParamKind kind : {ParamKind::Dense, ParamKind::Expert}) {
    const int ranks = kind == ParamKind::Expert ? layout.expert_ranks : layout.dense_ranks;
    // The kind's blocks in buffer order: flat offset and size.
    std::vector<std::int64_t> starts, sizes;
    for (const auto& p : infos) {
      if (p.kind != kind) continue;
      const std::int64_t per_row = p.size / rows_of(p);
      for (std::int64_t r = 0; r < rows_of(p); r += block_rows(p)) {
        starts.push_back(p.offset + r * per_row);
        sizes.push_back(block_rows(p) * per_row);
      }
    }
    // Ranks filled in order up to the least capacity: the largest share (the peak a
    // budget must allow) is as small as a contiguous split can make it.
    const std::int64_t cap = least_capacity(sizes, ranks);
    auto& cuts = cuts_[kind_index(kind)];
    cuts.assign(std::size_t(ranks) + 1, std::numeric_limits<std::int64_t>::max());
    cuts[0] = 0;
    std::int64_t fill = 0;
    for (std::size_t j = 0, r = 0; j < sizes.size(); ++j) {
      if (fill + sizes[j] > cap && r + 1 < std::size_t(ranks)) cuts[++r] = starts[j], fill = 0;
      fill += sizes[j];
    }
  }
  for (const auto& p : infos) {
    const auto& cuts = cuts_[kind_index(p.kind)];
    const int me = rank_of(p.kind);
    const std::int64_t lo = std::clamp(cuts[std::size_t(me)], p.offset, p.offset + p.size);
    const std::int64_t hi = std::clamp(cuts[std::size_t(me) + 1], p.offset, p.offset + p.size);
    const std::int64_t per_row = p.size / rows_of(p);
    Part part;
    // Unsharded, the moments keep the parameters' layout exactly (one offset per
    // tensor in every family), whatever placed the tensors (StateStore::add).
    part.offset = layout.sharded() ? place_tensor(total_, hi - lo) : lo;
    if (hi > lo && per_row > 0) {
      part.first = lo - p.offset;
      part.count = hi - lo;
      part.row0 = part.first / per_row;
      part.rows = part.count / per_row;
    }
    total_ = part.offset + part.count;
    parts_.push_back(part);
  }
  total_ = align16(total_);
}

int ShardPlan::rank_of(ParamKind kind) const {
  return kind == ParamKind::Expert ? layout_.expert_rank : layout_.dense_rank;
}

void ShardPlan::split(ParamKind kind, std::int64_t begin, std::int64_t end, std::vector<int>& counts,
                      std::vector<int>& displs) const {
  const auto& cuts = cuts_[kind_index(kind)];
  const std::size_t ranks = cuts.size() - 1;
  counts.assign(ranks, 0);
  displs.assign(ranks, 0);
  for (std::size_t r = 0; r < ranks; ++r) {
    const std::int64_t lo = std::clamp(cuts[r], begin, end), hi = std::clamp(cuts[r + 1], begin, end);
    counts[r] = int(hi - lo);
    displs[r] = int(lo - begin);
  }
}

}  // namespace furnace::memory
