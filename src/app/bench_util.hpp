// Timing helpers shared by the `furnace bench …` commands.
#pragma once
#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "comm/agree.hpp"
#include "comm/mpi_check.hpp"

namespace furnace::app {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The median of baseline[i] / t[i]: the two runs of one repetition (back to back) are
// compared, so a drift of the machine between repetitions cancels; a ratio of the
// medians would not.
inline double paired_ratio(const std::vector<double>& baseline, const std::vector<double>& t) {
  std::vector<double> r;
  for (std::size_t i = 0; i < std::min(baseline.size(), t.size()); ++i) r.push_back(baseline[i] / t[i]);
  return r.empty() ? 0.0 : median(r);
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

// Keeps this thread busy for `seconds`, like a training step's compute would.
inline void spin_for(double seconds) {
  const double end = MPI_Wtime() + seconds;
  volatile double x = 0;
  while (MPI_Wtime() < end)
    for (int i = 0; i < 1000; ++i) x = x + 1e-9;
}

// Slowest rank's wall time of fn(), after a barrier. fn returns "" or this rank's error;
// `error` becomes the lowest failing rank's error on every rank.
inline double timed(MPI_Comm world, const std::function<std::string()>& fn, std::string& error) {
  std::string err;
  const double tmax = slowest_rank_time(world, [&] { err = fn(); });
  const auto agreed = comm::agree_on_error(world, err.empty() ? std::nullopt : std::optional(err), 1);
  if (agreed && error.empty()) error = *agreed;
  return tmax;
}

inline std::string sys_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// pwrite/pread all of [p, p + n) at off, in pieces of at most 1 GiB.
inline bool full_io(bool write, int fd, char* p, std::size_t n, off_t off) {
  while (n > 0) {
    const std::size_t c = std::min<std::size_t>(n, std::size_t(1) << 30);
    const ssize_t r = write ? ::pwrite(fd, p, c, off) : ::pread(fd, p, c, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = EIO;
      return false;
    }
    p += r, n -= std::size_t(r), off += r;
  }
  return true;
}

// Flush `path` to disk and ask the kernel to drop its pages (untimed, before a read).
inline void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

}  // namespace furnace::app
