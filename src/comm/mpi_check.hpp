// mpiCheck(call): every MPI return code is checked; a failure ends the whole job
// with the call, the file and line, and MPI's error string (never a hang on the
// surviving ranks). abort_job: the one way a rank ends the job on its own.
#pragma once
#include <mpi.h>

namespace furnace::comm {

// Ends the job from any rank or thread with one message on stderr ("furnace: rank R:
// message", or "furnace: message" at one rank) and exit code `code`. The message is
// printed exactly once per process, even when two threads fail at once, and reaches
// the launcher before the job is torn down (the rank waits briefly after printing,
// so mpiexec's stdio forwarding has the line before MPI_Abort kills the job).
[[noreturn]] void abort_job(const char* message, int code);

// Ends the job with `code` after its reason was printed (by this rank or another):
// flushes stdio, waits briefly so that mpiexec forwards what is still in the pipes,
// then MPI_Abort (or _exit at one rank: no exit handlers, see hdf5_util.hpp).
// Without the wait the launcher may tear the job down before it read the line.
[[noreturn]] void end_job(int code);

[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line);

}  // namespace furnace::comm

#define mpiCheck(call)                                                                  \
  do {                                                                                  \
    const int furnace_mpi_rc_ = (call);                                                 \
    if (furnace_mpi_rc_ != MPI_SUCCESS)                                                 \
      ::furnace::comm::mpi_fail(furnace_mpi_rc_, #call, __FILE__, __LINE__);             \
  } while (0)
