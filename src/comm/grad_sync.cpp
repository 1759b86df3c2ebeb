#include "comm/grad_sync.hpp"

#include <cstring>
#include <stdexcept>

#include "comm/mpi_check.hpp"

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

GradSync::GradSync(const memory::StateStore& ps, const Groups& groups, std::size_t bucket_bytes,
                   kernels::Precision wire, memory::Ledger* ledger)
    : ps_(ps), bucket_of_(ps.infos().size(), -1), wire_dtype_(wire) {
  if (wire != kernels::Precision::FP32 && wire != kernels::Precision::BF16)
    throw std::invalid_argument("GradSync: the gradient wire is fp32 or bf16");
  const auto& infos = ps.infos();
  auto comm_of = [&](const memory::ParamInfo& p) {
    return p.kind == memory::ParamKind::Expert ? groups.dp_comm() : groups.world();
  };
  auto size_of = [](MPI_Comm c) {
    int s = 1;
    mpiCheck(MPI_Comm_size(c, &s));
    return s;
  };
  const std::int64_t cap = std::max<std::int64_t>(1, std::int64_t(bucket_bytes / sizeof(float)));
  for (int hi = int(infos.size()) - 1; hi >= 0;) {
    const MPI_Comm c = comm_of(infos[hi]);
    int lo = hi;
    while (lo > 0 && comm_of(infos[lo - 1]) == c &&
           infos[hi].offset + infos[hi].size - infos[lo - 1].offset <= cap)
      --lo;
    if (size_of(c) > 1) {
      Bucket b;
      b.offset = infos[lo].offset;
      b.count = infos[hi].offset + infos[hi].size - b.offset;
      b.comm = c;
      b.tensors = hi - lo + 1;
      if (ps.moments_sharded()) {
        ps.shards().split(infos[hi].kind, b.offset, b.offset + b.count, b.counts, b.displs);
        b.me = ps.shards().rank_of(infos[hi].kind);
      }
      for (int i = lo; i <= hi; ++i) bucket_of_[i] = int(buckets_.size());
      buckets_.push_back(b);
    }
    hi = lo - 1;
  }
  if (wire_dtype_ == kernels::Precision::BF16) {
    std::int64_t total = 0;
    for (auto& bk : buckets_) bk.wire_offset = total, total += bk.count;
    wire_.resize(std::size_t(total));
    if (ledger) ledger->add(memory::Category::Communication, memory::Tier::Host, "GradSync::wire",
                            std::uint64_t(total) * sizeof(std::uint16_t));
    mpiCheck(MPI_Op_create(&bf16_sum, /*commute=*/1, &bf16_sum_));
  }
}

GradSync::~GradSync() {
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
}

void GradSync::begin() {
  for (auto& b : buckets_) b.pending = b.tensors;
}

void GradSync::start(Bucket& b) {
  float* g = ps_.grads().data() + b.offset;
  b.landed = false;
  if (wire_dtype_ == kernels::Precision::BF16) {
    std::uint16_t* w = wire_.data() + b.wire_offset;
    for (std::int64_t i = 0; i < b.count; ++i) w[i] = kernels::float_to_bf16(g[i]);
    if (b.counts.empty())
      mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, w, int(b.count), MPI_UINT16_T, bf16_sum_, b.comm, &b.request));
    else
      mpiCheck(MPI_Ireduce_scatter(MPI_IN_PLACE, w, b.counts.data(), MPI_UINT16_T, bf16_sum_, b.comm, &b.request));
    return;
  }
  // Counts are int in MPI-3; split larger buckets is not needed below 8 GiB.
  if (b.counts.empty())
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, g, int(b.count), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
  else  // in place: this rank's sum lands at the bucket's start (moved home in finish)
    mpiCheck(MPI_Ireduce_scatter(MPI_IN_PLACE, g, b.counts.data(), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
}

void GradSync::wait(Bucket& b) {
  mpiCheck(MPI_Wait(&b.request, MPI_STATUS_IGNORE));
  if (b.landed) return;
  b.landed = true;
  if (wire_dtype_ != kernels::Precision::BF16) return;
  // The sum (ZeRO-1: this rank's part, at the copy's start) widened into its home.
  const std::uint16_t* w = wire_.data() + b.wire_offset;
  const bool part = !b.counts.empty();
  float* g = ps_.grads().data() + b.offset + (part ? b.displs[std::size_t(b.me)] : 0);
  const std::int64_t n = part ? b.counts[std::size_t(b.me)] : b.count;
  for (std::int64_t i = 0; i < n; ++i) g[i] = kernels::bf16_to_float(w[i]);
}

void GradSync::wait_all() {
  for (auto& b : buckets_) wait(b);
}

void GradSync::ready(int param) {
  const int i = bucket_of_[param];
  if (i < 0) return;
  if (--buckets_[i].pending == 0) start(buckets_[i]);
}

void GradSync::wait_for(int param) {
  const int i = bucket_of_[std::size_t(param)];
  if (i < 0) return;
  Bucket& b = buckets_[std::size_t(i)];
  if (b.pending > 0) throw std::logic_error("GradSync::wait_for: the bucket of a tensor not ready yet");
  if (!b.counts.empty()) throw std::logic_error("GradSync::wait_for: not with sharded moments");
  wait(b);
}

void GradSync::finish() {
  // Start leftovers in bucket order so every rank issues them identically.
  for (auto& b : buckets_)
    if (b.pending > 0) {
      b.pending = 0;
      start(b);
    }
  wait_all();
  for (auto& b : buckets_)
    if (wire_dtype_ == kernels::Precision::FP32 && !b.counts.empty() && b.displs[std::size_t(b.me)] > 0) {
      float* g = ps_.grads().data() + b.offset;
      // The rest of the bucket is other ranks' unreduced partial sums, never read.
      // (Host memory on host backends, as the MPI calls assume; a device build would
      // stage this move through a Kokkos copy.)
      std::memmove(g + b.displs[std::size_t(b.me)], g, std::size_t(b.counts[std::size_t(b.me)]) * sizeof(float));
    }
}

void GradSync::gather_params() {
  bool any = false;
  for (auto& b : buckets_)
    if (!b.counts.empty()) {
      mpiCheck(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ps_.params().data() + b.offset, b.counts.data(),
                               b.displs.data(), MPI_FLOAT, b.comm, &b.request));
      any = true;
    }
  if (any) wait_all();
}

}  // namespace furnace::comm
