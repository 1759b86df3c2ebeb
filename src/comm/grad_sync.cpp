#include "comm/grad_sync.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"

namespace furnace::comm {

namespace {

// MPI_Op over bf16 values: inout = bf16(float(in) + float(inout)). Commutative, as
// fp addition is bit for bit, so MPICH may combine in any order and every rank still
// ends with the same bits.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const std::uint16_t*>(in);
  auto* b = static_cast<std::uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = kernels::float_to_bf16(kernels::bf16_to_float(a[i]) + kernels::bf16_to_float(b[i]));
}

}  // namespace

std::vector<GradSync::Span> GradSync::plan(const std::vector<memory::ParamInfo>& infos, std::size_t bucket_bytes,
                                           int dense_ranks, int expert_ranks) {
  const std::int64_t cap = std::max<std::int64_t>(1, std::int64_t(bucket_bytes / sizeof(float)));
  std::vector<Span> spans;
  for (int hi = int(infos.size()) - 1; hi >= 0;) {
    const auto kind = infos[hi].kind;
    int lo = hi;
    while (lo > 0 && infos[lo - 1].kind == kind && infos[hi].offset + infos[hi].size - infos[lo - 1].offset <= cap)
      --lo;
    const int ranks = kind == memory::ParamKind::Expert ? expert_ranks : dense_ranks;
    // MPI-3 counts are int: one tensor of more elements cannot be one reduction.
    if (ranks > 1 && infos[hi].offset + infos[hi].size - infos[lo].offset > std::numeric_limits<int>::max())
      throw std::length_error("tensor '" + infos[hi].name + "' has " + std::to_string(infos[hi].size) +
                              " elements on this rank, more than one MPI reduction can take (2^31 - 1); "
                              "raise parallel.ep to split the experts over more ranks");
    if (ranks > 1)
      spans.push_back({.offset = infos[lo].offset,
                       .count = infos[hi].offset + infos[hi].size - infos[lo].offset,
                       .first = lo, .last = hi, .kind = kind, .ranks = ranks});
    hi = lo - 1;
  }
  return spans;
}

int GradSync::sole_owner(const std::vector<int>& counts) {
  int owner = -1;
  for (int r = 0; r < int(counts.size()); ++r)
    if (counts[std::size_t(r)] > 0) {
      if (owner >= 0) return -1;
      owner = r;
    }
  return owner;
}

void GradSync::mark_owners(const memory::StateStore& ps, std::vector<Span>& buckets) {
  std::vector<int> counts, displs;
  for (auto& b : buckets) {
    b.sole_owner = false;
    if (!ps.moments_sharded()) continue;
    ps.shards().split(b.kind, b.offset, b.offset + b.count, counts, displs);
    b.sole_owner = sole_owner(counts) >= 0;
  }
}

std::uint64_t GradSync::scatter_bytes(const memory::StateStore& ps, const std::vector<Span>& buckets,
                                     kernels::Precision wire) {
  if (!ps.moments_sharded()) return 0;
  std::uint64_t total = 0;
  std::vector<int> counts, displs;
  for (const auto& b : buckets) {
    ps.shards().split(b.kind, b.offset, b.offset + b.count, counts, displs);
    if (sole_owner(counts) >= 0) continue;  // reduced in place (allreduce)
    total += std::uint64_t(counts[std::size_t(ps.shards().rank_of(b.kind))]);
  }
  return total * (wire == kernels::Precision::BF16 ? sizeof(std::uint16_t) : sizeof(float));
}

std::uint64_t GradSync::wire_bytes(const std::vector<Span>& buckets, kernels::Precision wire) {
  if (wire != kernels::Precision::BF16) return 0;
  std::uint64_t total = 0;
  for (const auto& b : buckets) total += std::uint64_t(b.count);
  return total * sizeof(std::uint16_t);
}

GradSync::GradSync(const memory::StateStore& ps, const Groups& groups, std::size_t bucket_bytes,
                   kernels::Precision wire, memory::Ledger* ledger)
    : ps_(ps), bucket_of_(ps.infos().size(), -1), wire_dtype_(wire), world_(groups.world()) {
  if (wire != kernels::Precision::FP32 && wire != kernels::Precision::BF16)
    throw std::invalid_argument("GradSync: the gradient wire is fp32 or bf16");
  const auto spans = plan(ps.infos(), bucket_bytes, groups.size(), groups.dp());
  for (const auto& s : spans) {
    Bucket b;
    b.offset = s.offset;
    b.count = s.count;
    b.comm = s.kind == memory::ParamKind::Expert ? groups.dp_comm() : groups.world();
    b.tensors = s.last - s.first + 1;
    if (ps.moments_sharded()) {
      ps.shards().split(s.kind, b.offset, b.offset + b.count, b.counts, b.displs);
      b.me = ps.shards().rank_of(s.kind);
      b.owner = sole_owner(b.counts);
    }
    for (int i = s.first; i <= s.last; ++i) bucket_of_[i] = int(buckets_.size());
    buckets_.push_back(b);
  }
  const std::size_t elem = wire_dtype_ == kernels::Precision::BF16 ? sizeof(std::uint16_t) : sizeof(float);
  std::size_t parts = 0;
  for (auto& bk : buckets_)
    if (!bk.counts.empty() && bk.owner < 0)
      bk.scatter_offset = parts, parts += std::size_t(bk.counts[std::size_t(bk.me)]) * elem;
  scatter_.resize(parts);
  if (ledger && parts > 0) ledger->add(memory::Category::Communication, memory::Tier::Host, kScatterLabel, parts);
  if (wire_dtype_ == kernels::Precision::BF16) {
    std::int64_t total = 0;
    for (auto& bk : buckets_) bk.wire_offset = total, total += bk.count;
    wire_.resize(std::size_t(total));
    if (ledger) ledger->add(memory::Category::Communication, memory::Tier::Host, kWireLabel, wire_bytes(spans, wire));
    mpiCheck(MPI_Op_create(&bf16_sum, /*commute=*/1, &bf16_sum_));
  }
}

GradSync::~GradSync() {
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
}

void GradSync::begin() {
  for (auto& b : buckets_) b.pending = b.tensors, b.started = false;
}

void GradSync::start(Bucket& b) {
  float* g = ps_.grads().data() + b.offset;
  b.landed = false;
  b.started = true;
  const bool part = !b.counts.empty() && b.owner < 0;  // a sole owner's bucket: allreduce
  // ZeRO-1 reduce-scatters into a buffer of its own, not MPI_IN_PLACE: MPICH 4.0's
  // in-place MPI_Reduce_scatter aborts ("memcpy argument memory ranges overlap") when
  // a later rank's part is larger than rank 0's, which whole-tensor ownership gives.
  void* part_sum = part ? static_cast<void*>(scatter_.data() + b.scatter_offset) : nullptr;
  if (wire_dtype_ == kernels::Precision::BF16) {
    std::uint16_t* w = wire_.data() + b.wire_offset;
    for (std::int64_t i = 0; i < b.count; ++i) w[i] = kernels::float_to_bf16(g[i]);
    if (!part)
      mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, w, int(b.count), MPI_UINT16_T, bf16_sum_, b.comm, &b.request));
    else
      mpiCheck(MPI_Ireduce_scatter(w, part_sum, b.counts.data(), MPI_UINT16_T, bf16_sum_, b.comm, &b.request));
    return;
  }
  // Counts are int in MPI-3; split larger buckets is not needed below 8 GiB.
  if (!part)
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, g, int(b.count), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
  else
    mpiCheck(MPI_Ireduce_scatter(g, part_sum, b.counts.data(), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
}

void GradSync::wait(Bucket& b) {
  comm::wait(b.request);
  if (b.landed) return;
  b.landed = true;
  const bool part = !b.counts.empty() && b.owner < 0;
  const bool bf16 = wire_dtype_ == kernels::Precision::BF16;
  if (!part && !bf16) return;  // reduced in place
  // The sum (ZeRO-1: this rank's part) into its home in the gradient buffer; the rest
  // of a sharded bucket is other ranks' unreduced partial sums, never read. (Host
  // memory on host backends, as the MPI calls assume; a device build would stage this
  // through a Kokkos copy.)
  float* g = ps_.grads().data() + b.offset + (part ? b.displs[std::size_t(b.me)] : 0);
  const std::int64_t n = part ? b.counts[std::size_t(b.me)] : b.count;
  const std::byte* from = part ? scatter_.data() + b.scatter_offset
                               : reinterpret_cast<const std::byte*>(wire_.data() + b.wire_offset);
  if (bf16) {
    const auto* w = reinterpret_cast<const std::uint16_t*>(from);
    for (std::int64_t i = 0; i < n; ++i) g[i] = kernels::bf16_to_float(w[i]);
  } else {
    std::memcpy(g, from, std::size_t(n) * sizeof(float));
  }
}

void GradSync::wait_all() {
  for (auto& b : buckets_) wait(b);
}

void GradSync::ready(int param) {
  const int i = bucket_of_[param];
  if (i < 0) return;
  // comm.timing = "barrier" leaves every reduction to finish(): its time is then the
  // transfer alone, not overlapped with the backward (as furnace plan predicts it).
  if (--buckets_[i].pending == 0 && !timer_.barrier()) {
    timer_.begin();
    start(buckets_[i]);
    timer_.end();
  }
}

void GradSync::wait_for(int param) {
  const int i = bucket_of_[std::size_t(param)];
  if (i < 0) return;
  Bucket& b = buckets_[std::size_t(i)];
  if (b.pending > 0) throw std::logic_error("GradSync::wait_for: the bucket of a tensor not ready yet");
  if (!b.counts.empty()) throw std::logic_error("GradSync::wait_for: not with sharded moments");
  timer_.begin();
  if (!b.started) start(b);  // barrier timing defers the starts
  wait(b);
  timer_.end();
}

void GradSync::finish() {
  timer_.begin(world_);
  // Start leftovers in bucket order so every rank issues them identically.
  for (auto& b : buckets_)
    if (!b.started) {
      b.pending = 0;
      start(b);
    }
  wait_all();
  timer_.end();
}

void GradSync::gather_params() {
  if (!ps_.moments_sharded()) return;
  timer_.begin(world_);
  bool any = false;
  for (auto& b : buckets_)
    if (b.owner >= 0) {
      mpiCheck(MPI_Ibcast(ps_.params().data() + b.offset, int(b.count), MPI_FLOAT, b.owner, b.comm, &b.request));
      any = true;
    } else if (!b.counts.empty()) {
      mpiCheck(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ps_.params().data() + b.offset, b.counts.data(),
                               b.displs.data(), MPI_FLOAT, b.comm, &b.request));
      any = true;
    }
  if (any) wait_all();
  timer_.end();
}

}  // namespace furnace::comm
