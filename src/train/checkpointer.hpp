// When and how the trainer's state goes to disk: synchronously, or (checkpoint.async)
// from a host snapshot written by a background thread while training continues,
// with at most one write in flight (the next save waits for it). The snapshot copy
// itself also runs in the background thread: only the optimizer update changes the
// state, so the training thread waits for the copy just before its next update,
// and the copy overlaps the next step's forward and backward.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/groups.hpp"
#include "io/checkpoint.hpp"
#include "io/config.hpp"
#include "memory/param_store.hpp"

namespace furnace::train {

class Checkpointer {
 public:
  // Collective (async mode builds its own communicators for the writer thread).
  Checkpointer(const io::Config& cfg, const comm::Groups& groups, const memory::ParamStore& ps);
  ~Checkpointer();

  std::string dir() const { return dir_; }
  // Saves the state after `step` training steps. Returns the seconds the caller was
  // held up (the whole write when synchronous; waiting for a previous write when async).
  double save(long step, long optimizer_step, long long tokens_seen);
  // Call before changing the state (the optimizer update): waits until a background
  // snapshot copy is complete. Returns the seconds waited (0 when none is pending).
  double hold_until_snapshot();
  // Waits for a background write; rethrows its error.
  void wait();
  const std::string& last_path() const { return last_path_; }

 private:
  const io::Config& cfg_;
  const comm::Groups& groups_;
  const memory::ParamStore& ps_;
  std::string dir_;
  std::unique_ptr<comm::Groups> io_groups_;  // async: the writer thread's own communicators
  std::vector<float> snapshot_;              // async: params | exp_avg | exp_avg_sq on the host
  std::thread writer_;
  std::mutex mutex_;
  std::condition_variable copied_cv_;
  bool copied_ = true;
  std::string error_, last_path_;
};

}  // namespace furnace::train
