// Timing helpers shared by the `furnace bench …` commands.
#pragma once
#include <mpi.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "comm/mpi_check.hpp"

namespace furnace::app {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The slowest rank's wall time of fn(), started together after a barrier.
inline double slowest_rank_time(MPI_Comm world, const std::function<void()>& fn) {
  mpiCheck(MPI_Barrier(world));
  const double t0 = MPI_Wtime();
  fn();
  double t = MPI_Wtime() - t0, tmax = 0;
  mpiCheck(MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, world));
  return tmax;
}

}  // namespace furnace::app
