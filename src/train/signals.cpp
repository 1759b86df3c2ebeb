#include "train/signals.hpp"

#include <unistd.h>

#include <csignal>
#include <initializer_list>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace furnace::train {

namespace {

volatile std::sig_atomic_t g_request = kNoStop;
volatile std::sig_atomic_t g_sigint_handled = 0;  // installed for SIGINT (it was not ignored)

StopRequest request_of(int sig) {
  return sig == SIGINT ? kStopInt : sig == SIGTERM ? kStopTerm : sig == SIGUSR1 ? kStopUsr1 : kNoStop;
}

int signal_of(StopRequest r) {
  return r == kStopInt ? SIGINT : r == kStopTerm ? SIGTERM : r == kStopUsr1 ? SIGUSR1 : 0;
}

extern "C" void on_stop_signal(int sig) {
  const StopRequest r = request_of(sig);
  if (r == kStopInt && g_request == kStopInt) {
    // The second Ctrl-C: the person does not want to wait for the checkpoint.
    static const char msg[] = "furnace: second SIGINT: exiting now, without a checkpoint\n";
    [[maybe_unused]] auto n = write(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(kExitInterrupted);
  }
  if (r > g_request) g_request = r;
}

void set_handler(int sig, void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // MPI and file I/O calls continue; we act at the next boundary
  sigaction(sig, &sa, nullptr);
}

}  // namespace

void install_stop_signal_handlers() {
  set_handler(SIGUSR1, on_stop_signal);
  set_handler(SIGTERM, on_stop_signal);
  struct sigaction now {};
  sigaction(SIGINT, nullptr, &now);
  if (now.sa_handler != SIG_IGN) {
    set_handler(SIGINT, on_stop_signal);
    g_sigint_handled = 1;
  }
  // A launcher may start us with these blocked; a request it sent is pending then,
  // and is delivered (to the handler) here.
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

void restore_default_stop_signals() {
  set_handler(SIGUSR1, SIG_DFL);
  set_handler(SIGTERM, SIG_DFL);
  if (g_sigint_handled) set_handler(SIGINT, SIG_DFL);
  if (const int sig = signal_of(StopRequest(g_request))) std::raise(sig);
}

StopRequest stop_request() { return StopRequest(g_request); }

bool requeue_requested(StopRequest r) { return r == kStopUsr1 || r == kStopTerm; }

const char* stop_signal_name(StopRequest r) {
  return r == kStopInt ? "SIGINT" : r == kStopTerm ? "SIGTERM" : r == kStopUsr1 ? "SIGUSR1" : "";
}

std::string requeue_marker_path(const std::string& output_dir) { return output_dir + "/requeue"; }

void write_requeue_marker(const std::string& output_dir, const std::string& checkpoint, long step,
                          StopRequest why) {
  const std::string path = requeue_marker_path(output_dir), tmp = path + ".tmp";
  const nlohmann::ordered_json j = {{"checkpoint", checkpoint}, {"step", step}, {"signal", stop_signal_name(why)}};
  {
    std::ofstream out(tmp);
    out << j.dump() << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write the requeue marker '" + tmp + "'");
  }
  std::filesystem::rename(tmp, path);  // a job script never sees half a marker
}

void remove_requeue_marker(const std::string& output_dir) {
  std::error_code ec;
  std::filesystem::remove(requeue_marker_path(output_dir), ec);
}

}  // namespace furnace::train
