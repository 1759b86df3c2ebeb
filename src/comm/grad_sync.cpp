#include "comm/grad_sync.hpp"

#include <cstring>
#include <stdexcept>

#include "comm/mpi_check.hpp"

namespace furnace::comm {

GradSync::GradSync(const memory::StateStore& ps, const Groups& groups, std::size_t bucket_bytes)
    : ps_(ps), bucket_of_(ps.infos().size(), -1) {
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
}

void GradSync::begin() {
  for (auto& b : buckets_) b.pending = b.tensors;
}

void GradSync::start(Bucket& b) {
  float* g = ps_.grads().data() + b.offset;
  // Counts are int in MPI-3; split larger buckets is not needed below 8 GiB.
  if (b.counts.empty())
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, g, int(b.count), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
  else  // in place: this rank's sum lands at the bucket's start (moved home in finish)
    mpiCheck(MPI_Ireduce_scatter(MPI_IN_PLACE, g, b.counts.data(), MPI_FLOAT, MPI_SUM, b.comm, &b.request));
}

void GradSync::wait_all() {
  for (auto& b : buckets_) mpiCheck(MPI_Wait(&b.request, MPI_STATUS_IGNORE));
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
  mpiCheck(MPI_Wait(&b.request, MPI_STATUS_IGNORE));
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
    if (!b.counts.empty() && b.displs[std::size_t(b.me)] > 0) {
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
