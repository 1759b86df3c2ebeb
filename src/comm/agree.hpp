// Error agreement: the ranks of a communicator learn whether any of them failed
// before anyone acts on it, so no rank is left waiting in a collective that a
// failing rank skipped. The agreement itself has a deadline: a rank with an error
// waits at most agree_timeout_s() for the others; when they do not arrive they are
// stuck in a collective this rank left (an error inside a collective HDF5 or MPI-IO
// call), and the rank ends the job with its reason (abort_job) instead of hanging.
#pragma once
#include <mpi.h>

#include <optional>
#include <string>

namespace furnace::comm {

// Rank `root`'s string on every rank of comm (collective).
std::string broadcast_string(std::string s, int root, MPI_Comm comm);

// FURNACE_AGREE_TIMEOUT_S (seconds, default 10): how long a failing rank waits.
double agree_timeout_s();

// Collective over comm: every rank passes its own error (or nullopt) and gets the
// message of the lowest failing rank, or nullopt when no rank failed. A failing rank
// whose partners do not arrive within agree_timeout_s() calls abort_job(message,
// abort_code). Without MPI initialised it returns `error`.
std::optional<std::string> agree_on_error(MPI_Comm comm, const std::optional<std::string>& error,
                                          int abort_code);

// FURNACE_FINALIZE_TIMEOUT_S (seconds, default 60): how long finalize_bounded waits.
double finalize_timeout_s();

// MPI_Finalize with a deadline, called once the run's work is done and saved. When it
// has not returned after finalize_timeout_s() the rank says so in one line and leaves
// with `code` instead of holding its node. Seen across emulated nodes (MPICH 4.0.2,
// hydra over rsh, 1 run in 10): one rank's PMI barrier_in never reaches its proxy and
// every rank waits in MPI_Finalize's PMI barrier for good (mpiexec -verbose shows it).
void finalize_bounded(int code);

}  // namespace furnace::comm
