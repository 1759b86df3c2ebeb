#include "comm/wait.hpp"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>

#include "comm/mpi_check.hpp"

namespace furnace::comm {
namespace {

std::atomic<WaitMode> g_mode{WaitMode::Spin};
std::atomic<unsigned long long> g_yielded{0};

// Polls until every request is complete, giving the core away between polls: the
// first polls only yield (another runnable rank on this CPU runs at once), later ones
// sleep, which also lets the scheduler move a waiting rank's work elsewhere. The sleep
// starts at 20 us and doubles up to 250 us: short waits end soon after their request,
// and a long one (an idle rank in bench calibrate) costs its CPU almost nothing.
void yielding_wait(int count, MPI_Request* requests) {
  constexpr int kYieldPolls = 32;
  constexpr long kFirstSleepNs = 20'000, kLongestSleepNs = 250'000;
  long sleep_ns = kFirstSleepNs;
  for (int polls = 0;; ++polls) {
    int done = 0;
    mpiCheck(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
    if (done) return;
    g_yielded.fetch_add(1, std::memory_order_relaxed);
    if (polls < kYieldPolls) {
      sched_yield();
      continue;
    }
    const timespec pause{0, sleep_ns};
    nanosleep(&pause, nullptr);
    sleep_ns = std::min(2 * sleep_ns, kLongestSleepNs);
  }
}

}  // namespace

void set_wait_mode(WaitMode m) { g_mode.store(m, std::memory_order_relaxed); }
WaitMode wait_mode() { return g_mode.load(std::memory_order_relaxed); }
unsigned long long yielded_polls() { return g_yielded.load(std::memory_order_relaxed); }

void wait(MPI_Request& request) { wait_all(1, &request); }

void wait_all(int count, MPI_Request* requests) { wait_all(count, requests, wait_mode()); }

void wait_all(int count, MPI_Request* requests, WaitMode mode) {
  if (mode == WaitMode::Spin)
    mpiCheck(MPI_Waitall(count, requests, MPI_STATUSES_IGNORE));
  else
    yielding_wait(count, requests);
}

// The blocking call with Spin; with Yield its nonblocking form, then a yielding wait.
template <class Blocking, class Start>
void collective(Blocking&& blocking, Start&& start) {
  if (wait_mode() == WaitMode::Spin) {
    mpiCheck(blocking());
    return;
  }
  MPI_Request r;
  mpiCheck(start(&r));
  wait(r);
}

void allreduce(const void* send, void* recv, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm) {
  collective([&] { return MPI_Allreduce(send, recv, count, type, op, comm); },
             [&](MPI_Request* r) { return MPI_Iallreduce(send, recv, count, type, op, comm, r); });
}

void alltoall(const void* send, int send_count, MPI_Datatype send_type, void* recv, int recv_count,
              MPI_Datatype recv_type, MPI_Comm comm) {
  collective([&] { return MPI_Alltoall(send, send_count, send_type, recv, recv_count, recv_type, comm); },
             [&](MPI_Request* r) {
               return MPI_Ialltoall(send, send_count, send_type, recv, recv_count, recv_type, comm, r);
             });
}

void alltoallv(const void* send, const int* send_counts, const int* send_displs, MPI_Datatype send_type,
               void* recv, const int* recv_counts, const int* recv_displs, MPI_Datatype recv_type, MPI_Comm comm) {
  collective(
      [&] {
        return MPI_Alltoallv(send, send_counts, send_displs, send_type, recv, recv_counts, recv_displs, recv_type,
                             comm);
      },
      [&](MPI_Request* r) {
        return MPI_Ialltoallv(send, send_counts, send_displs, send_type, recv, recv_counts, recv_displs, recv_type,
                              comm, r);
      });
}

void barrier(MPI_Comm comm) {
  collective([&] { return MPI_Barrier(comm); }, [&](MPI_Request* r) { return MPI_Ibarrier(comm, r); });
}

}  // namespace furnace::comm
