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
}  // namespace

ShardPlan::ShardPlan(const std::vector<ParamInfo>& infos, const ShardLayout& layout) : layout_(layout) {
  for (ParamKind kind : {ParamKind::Dense, ParamKind::Expert}) {
    const int ranks = kind == ParamKind::Expert ? layout.expert_ranks : layout.dense_ranks;
    std::int64_t all = 0;
    for (const auto& p : infos)
      if (p.kind == kind) all += p.size;
    // Each block goes to the rank whose equal share holds the block's midpoint: the
    // owners ascend along the buffer and no rank is more than one block off its share.
    auto& cuts = cuts_[kind_index(kind)];
    cuts.assign(std::size_t(ranks) + 1, std::numeric_limits<std::int64_t>::max());
    cuts[0] = 0;
    std::int64_t before = 0;
    int next = 1;  // the next rank whose first block is still to be found
    for (const auto& p : infos) {
      if (p.kind != kind) continue;
      const std::int64_t block = block_rows(p) * (p.size / rows_of(p));
      for (std::int64_t r = 0; r < rows_of(p); r += block_rows(p), before += block) {
        const int owner = all == 0 ? 0 : int(std::min<std::int64_t>(ranks - 1, ranks * (2 * before + block) / (2 * all)));
        for (; next <= owner; ++next) cuts[std::size_t(next)] = p.offset + r * (p.size / rows_of(p));
      }
    }
  }
  for (const auto& p : infos) {
    const auto& cuts = cuts_[kind_index(p.kind)];
    const int me = rank_of(p.kind);
    const std::int64_t lo = std::clamp(cuts[std::size_t(me)], p.offset, p.offset + p.size);
    const std::int64_t hi = std::clamp(cuts[std::size_t(me) + 1], p.offset, p.offset + p.size);
    const std::int64_t per_row = p.size / rows_of(p);
    Part part;
    part.offset = align16(total_);
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
