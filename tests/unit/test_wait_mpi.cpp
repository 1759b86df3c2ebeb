// comm/wait.hpp at 1, 2 and 4 ranks: the Yield forms of the step's collectives give
// exactly the Spin results, and a Yield wait on a late peer gives the CPU away
// (counted polls) while Spin never does.
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"
#include "mpi_testing.hpp"

namespace furnace::comm {
namespace {

using furnace::testing::world_rank;
using furnace::testing::world_size;

// Restores the process's mode when a test ends (the test main may have chosen Yield).
struct ModeGuard {
  WaitMode saved = wait_mode();
  ~ModeGuard() { set_wait_mode(saved); }
};

// Every collective of wait.hpp once; returns everything they delivered, in order.
std::vector<long long> run_collectives() {
  const int p = world_size(), r = world_rank();
  std::vector<long long> out;
  long long mine[2] = {r + 1, 10LL * r}, sum[2] = {0, 0};
  allreduce(mine, sum, 2, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  out.insert(out.end(), sum, sum + 2);
  long long in_place = r * r;
  allreduce(MPI_IN_PLACE, &in_place, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  out.push_back(in_place);
  std::vector<long long> to(p), from(p);
  for (int d = 0; d < p; ++d) to[d] = 100LL * r + d;
  alltoall(to.data(), 1, MPI_LONG_LONG, from.data(), 1, MPI_LONG_LONG, MPI_COMM_WORLD);
  out.insert(out.end(), from.begin(), from.end());
  // alltoallv: rank r sends d + 1 values to rank d.
  std::vector<int> sc(p), sd(p), rc(p), rd(p);
  for (int d = 0; d < p; ++d) sc[d] = d + 1, rc[d] = r + 1;
  std::exclusive_scan(sc.begin(), sc.end(), sd.begin(), 0);
  std::exclusive_scan(rc.begin(), rc.end(), rd.begin(), 0);
  std::vector<long long> send(std::size_t(sd.back() + sc.back())), recv(std::size_t(rd.back() + rc.back()));
  std::iota(send.begin(), send.end(), 1000LL * r);
  alltoallv(send.data(), sc.data(), sd.data(), MPI_LONG_LONG, recv.data(), rc.data(), rd.data(), MPI_LONG_LONG,
            MPI_COMM_WORLD);
  out.insert(out.end(), recv.begin(), recv.end());
  barrier(MPI_COMM_WORLD);
  return out;
}

TEST(MpiWait, YieldDeliversExactlyWhatSpinDelivers) {
  ModeGuard guard;
  set_wait_mode(WaitMode::Spin);
  const auto spin = run_collectives();
  set_wait_mode(WaitMode::Yield);
  const auto yield = run_collectives();
  EXPECT_EQ(spin, yield);
  // And the values themselves (a collective that moved nothing would agree with itself).
  const int p = world_size(), r = world_rank();
  ASSERT_GE(spin.size(), std::size_t(3 + p));
  EXPECT_EQ(spin[0], (long long)p * (p + 1) / 2);
  EXPECT_EQ(spin[1], 10LL * p * (p - 1) / 2);
  EXPECT_EQ(spin[2], (long long)(p - 1) * (p - 1));
  for (int s = 0; s < p; ++s) EXPECT_EQ(spin[3 + s], 100LL * s + r);
}

// Rank 0 reaches the barrier first; the others 30 ms later.
unsigned long long polls_waiting_for_late_peers(WaitMode m) {
  set_wait_mode(m);
  mpiCheck(MPI_Barrier(MPI_COMM_WORLD));
  const unsigned long long before = yielded_polls();
  if (world_rank() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  barrier(MPI_COMM_WORLD);
  return yielded_polls() - before;
}

TEST(MpiWait, YieldGivesTheCpuAwayWhileAPeerIsLateAndSpinNever) {
  ModeGuard guard;
  const unsigned long long spin = polls_waiting_for_late_peers(WaitMode::Spin);
  const unsigned long long yield = polls_waiting_for_late_peers(WaitMode::Yield);
  EXPECT_EQ(spin, 0u);
  if (world_size() > 1 && world_rank() == 0) {
    EXPECT_GT(yield, 0u);
  }
}

}  // namespace
}  // namespace furnace::comm
