// When and how the trainer's state goes to disk: synchronously, or (checkpoint.async)
// from a host snapshot written by a background thread while training continues,
// with at most one write in flight (the next save waits for it).
#pragma once
#include <memory>
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
  // held up (the whole write when synchronous; the wait + snapshot copy when async).
  double save(long step, long optimizer_step, long long tokens_seen);
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
  std::string error_, last_path_;
};

}  // namespace furnace::train
