// Stop requests by signal. SIGUSR1 and SIGTERM (a scheduler's "time is nearly up" and
// "stop now") and SIGINT (Ctrl-C) only record a request; the training loop acts on it
// at the next step boundary or evaluation batch, once the ranks agree: it writes a
// checkpoint and exits with kExitCheckpointed (SIGUSR1, SIGTERM: requeue me) or
// kExitInterrupted (SIGINT: a person stopped it; not requeued). A second SIGINT ends
// the process at once.
//
// main() installs the handlers before MPI_Init, so that a signal during start-up
// (MPI_Init, config, construction, the resume load) is a request like any other,
// honoured right after the load. MPICH's MPI_Init installs a SIGUSR1 handler of its
// own that calls the one it found; the trainer installs ours again afterwards, for
// MPIs that do not chain.
#pragma once
#include <string>

namespace furnace::train {

constexpr int kExitCheckpointed = 75;  // EX_TEMPFAIL: checkpointed, run me again
constexpr int kExitInterrupted = 130;  // 128 + SIGINT, what shells report for Ctrl-C

// In increasing precedence, so that MPI_MAX over the ranks picks the request to act
// on: a person's interruption outranks a scheduler's request to requeue.
enum StopRequest : int { kNoStop = 0, kStopUsr1 = 1, kStopTerm = 2, kStopInt = 3 };

// Idempotent. SIGINT is left alone when it is ignored (a background job of a
// non-interactive shell), as programs are expected to.
void install_stop_signal_handlers();
// For commands that never check for requests: default actions again, and a request
// that already arrived is raised anew, so that it has its default effect.
void restore_default_stop_signals();

// This rank's strongest request since installation.
StopRequest stop_request();
bool requeue_requested(StopRequest r);        // SIGUSR1 or SIGTERM
const char* stop_signal_name(StopRequest r);  // "SIGTERM", ...; "" for none

// The requeue marker, <output.dir>/requeue: left by rank 0 after a checkpoint on
// SIGUSR1/SIGTERM, so that a job script can requeue even when the launcher does not
// pass exit code 75 on (MPICH's mpiexec, when it was signalled itself, often returns
// 0). One line of JSON: {"checkpoint": PATH or "", "step": N, "signal": "SIGTERM"}.
// A run removes it when it starts and when it completes.
std::string requeue_marker_path(const std::string& output_dir);
void write_requeue_marker(const std::string& output_dir, const std::string& checkpoint, long step,
                          StopRequest why);
void remove_requeue_marker(const std::string& output_dir);

}  // namespace furnace::train
