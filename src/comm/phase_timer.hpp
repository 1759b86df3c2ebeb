// Wall time one kind of communication took, summed over its spans since it was last
// taken: the trainer reads it once per step into metrics.jsonl (`alltoall_ms`,
// `allreduce_ms`), where `furnace plan`'s predicted times can be held against it.
//
// A span measured as it happens includes the wait for the slowest rank of the group
// to arrive (load imbalance in the compute before it), which no α–β model of the
// transfer predicts. comm.timing = "barrier" puts an untimed MPI_Barrier on the span's
// communicator first, so the span is the transfer alone; that costs one barrier per
// span, so it is for measuring, not the default ("wall").
#pragma once

#include <mpi.h>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"

namespace furnace::comm {

class PhaseTimer {
 public:
  void set_barrier(bool on) { barrier_ = on; }
  bool barrier() const { return barrier_; }
  // Starts a span; in barrier mode first waits (untimed) for every rank of `group`.
  // MPI_COMM_NULL: never a barrier (a span that is not a collective's start).
  void begin(MPI_Comm group = MPI_COMM_NULL) {
    if (barrier_ && group != MPI_COMM_NULL) comm::barrier(group);
    start_ = MPI_Wtime();
  }
  void end() { total_ += MPI_Wtime() - start_; }
  // Seconds since the last take(), and starts again from zero.
  double take() {
    const double t = total_;
    total_ = 0;
    return t;
  }

 private:
  bool barrier_ = false;
  double start_ = 0, total_ = 0;
};

}  // namespace furnace::comm
