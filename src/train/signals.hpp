// SIGUSR1 and SIGTERM (a scheduler's "time is nearly up" and "stop now") only set a
// flag; the training loop checks it at the next step boundary, where the ranks agree,
// write a checkpoint and exit with kExitCheckpointed.
#pragma once

namespace furnace::train {

// Exit code after a checkpoint-and-exit on signal (EX_TEMPFAIL): the job scripts
// requeue the job when they see it.
constexpr int kExitCheckpointed = 75;

void install_stop_signal_handlers();
// The signal number received since installation, or 0.
int stop_signal_received();

}  // namespace furnace::train
