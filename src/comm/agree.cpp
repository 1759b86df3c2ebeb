#include "comm/agree.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "comm/fault.hpp"
#include "comm/mpi_check.hpp"

namespace furnace::comm {

namespace {
std::atomic<bool> g_aborting{false};
}

void abort_job(const char* message, int code) {
  // The first thread to get here prints and aborts; any other waits to be killed.
  if (g_aborting.exchange(true)) {
    for (;;) pause();
  }
  int rank = -1, size = 1, up = 0, down = 0;
  MPI_Initialized(&up);
  MPI_Finalized(&down);
  if (up && !down) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  if (size > 1)
    std::fprintf(stderr, "furnace: rank %d: %s\n", rank, message);
  else
    std::fprintf(stderr, "furnace: %s\n", message);
  end_job(code);
}

void end_job(int code) {
  std::fflush(stderr);
  std::fflush(stdout);
  int size = 1, up = 0, down = 0;
  MPI_Initialized(&up);
  MPI_Finalized(&down);
  if (up && !down) MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size <= 1) _exit(code);  // nothing to tear down; no exit handlers (HDF5's would touch MPI files)
  // The launcher forwards our stderr asynchronously; MPI_Abort makes it kill every
  // process, possibly before it read the line. Give it a moment first.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
}

void mpi_fail(int code, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, msg, &len);
  char text[MPI_MAX_ERROR_STRING + 512];
  std::snprintf(text, sizeof text, "MPI call failed at %s:%d: %.200s: %s", file, line, call, msg);
  abort_job(text, 3);
}

namespace {
// A positive number of seconds from the environment variable `name`, else `fallback`.
double seconds_from_env(const char* name, double fallback) {
  const char* env = std::getenv(name);
  const double v = env ? std::atof(env) : 0.0;
  return v > 0 ? v : fallback;
}
}  // namespace

double agree_timeout_s() {
  static const double t = seconds_from_env("FURNACE_AGREE_TIMEOUT_S", 10.0);
  return t;
}

double finalize_timeout_s() {
  static const double t = seconds_from_env("FURNACE_FINALIZE_TIMEOUT_S", 60.0);
  return t;
}

void finalize_bounded(int code) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // "rank N: " where there are ranks to tell apart, as abort_job does.
  const std::string who = size > 1 ? "rank " + std::to_string(rank) + ": " : "";
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(m);
    const auto limit = std::chrono::duration<double>(finalize_timeout_s());
    if (cv.wait_for(lock, limit, [&] { return done; })) return;
    std::fprintf(stderr,
                 "furnace: %sMPI_Finalize has not returned after %.0f s (stuck in the launcher's PMI "
                 "barrier; docs/jobs.md); the run's work is complete and saved; leaving with exit %d\n",
                 who.c_str(), finalize_timeout_s(), code);
    std::fflush(stderr);
    std::fflush(stdout);
    _exit(code);  // no exit handlers: MPI is half torn down
  });
  // Testers: FURNACE_FAULT=finalize.hang stands for the hang (docs/testing.md).
  if (fault::hit("finalize.hang"))
    for (;;) pause();
  MPI_Finalize();
  {
    std::lock_guard lock(m);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
}

std::optional<std::string> agree_on_error(MPI_Comm comm, const std::optional<std::string>& error,
                                          int abort_code) {
  int up = 0;
  mpiCheck(MPI_Initialized(&up));
  if (!up) return error;
  int rank = 0, size = 1;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  mpiCheck(MPI_Comm_size(comm, &size));
  int mine = error ? rank : size, first = size;
  MPI_Request req;
  mpiCheck(MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm, &req));
  const auto t0 = std::chrono::steady_clock::now();
  for (int done = 0;;) {
    mpiCheck(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) break;
    if (error && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > agree_timeout_s()) {
      const std::string why = *error + " (the other ranks did not reach the error agreement within " +
                              std::to_string(int(agree_timeout_s())) + " s; ending the job)";
      abort_job(why.c_str(), abort_code);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (first == size) return std::nullopt;
  return broadcast_string(rank == first ? *error : std::string(), first, comm);
}

std::string broadcast_string(std::string s, int root, MPI_Comm comm) {
  int len = int(s.size());
  mpiCheck(MPI_Bcast(&len, 1, MPI_INT, root, comm));
  s.resize(std::size_t(len));
  mpiCheck(MPI_Bcast(s.data(), len, MPI_CHAR, root, comm));
  return s;
}

}  // namespace furnace::comm
