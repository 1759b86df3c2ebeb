// mpiCheck(call): every MPI return code is checked; a failure aborts the whole job
// with the call, the file and line, and MPI's error string (never a hang on the
// surviving ranks).
#pragma once
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace furnace::comm {

[[noreturn]] inline void mpi_fail(int code, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, msg, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "furnace: rank %d: MPI call failed at %s:%d: %s: %s\n", rank, file, line,
               call, msg);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::abort();
}

// Ends the job from any rank with one message (rank-prefixed) and exit code `code`.
[[noreturn]] inline void abort_job(const char* message, int code) {
  int rank = -1, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1)
    std::fprintf(stderr, "furnace: rank %d: %s\n", rank, message);
  else
    std::fprintf(stderr, "furnace: %s\n", message);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();
}

}  // namespace furnace::comm

#define mpiCheck(call)                                                                  \
  do {                                                                                  \
    const int furnace_mpi_rc_ = (call);                                                 \
    if (furnace_mpi_rc_ != MPI_SUCCESS)                                                 \
      ::furnace::comm::mpi_fail(furnace_mpi_rc_, #call, __FILE__, __LINE__);             \
  } while (0)
