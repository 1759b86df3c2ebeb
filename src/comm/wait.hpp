// How a rank waits for MPI. MPICH's blocking calls poll without pause (spin), which
// is the fastest wait while every rank has a core of its own. When a node's ranks
// outnumber its CPUs, a spinning rank holds the core that the rank it waits for
// needs: measured on 2 cores, the default model's 4-rank steps took 1.5-1.9x as long
// as with yielding waits (docs/building.md). Yield polls with MPI_Test and gives the core away between polls
// (sched_yield, then short sleeps), so the ranks that have work run.
//
// The calls below are the blocking collectives and waits of a training step: with
// Spin they are exactly the MPI call of the same name; with Yield the nonblocking
// form and a yielding wait (the same results: MPI defines both forms to match).
#pragma once
#include <mpi.h>

namespace furnace::comm {

enum class WaitMode { Spin, Yield };
void set_wait_mode(WaitMode m);  // before the first step; the process's one setting
WaitMode wait_mode();
// Polls that found a request unfinished and gave the CPU away, since the start (for
// tests and diagnostics: a Yield wait on a late peer counts some, Spin never does).
unsigned long long yielded_polls();

void wait(MPI_Request& request);
void wait_all(int count, MPI_Request* requests);
// The same in a given mode, whatever the process's (bench calibrate: an idle rank
// yields its core to the one measuring).
void wait_all(int count, MPI_Request* requests, WaitMode mode);

void allreduce(const void* send, void* recv, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm);
void alltoall(const void* send, int send_count, MPI_Datatype send_type, void* recv, int recv_count,
              MPI_Datatype recv_type, MPI_Comm comm);
void alltoallv(const void* send, const int* send_counts, const int* send_displs, MPI_Datatype send_type,
               void* recv, const int* recv_counts, const int* recv_displs, MPI_Datatype recv_type, MPI_Comm comm);
void barrier(MPI_Comm comm);

}  // namespace furnace::comm
