// When and how the trainer's state goes to disk: synchronously, or (checkpoint.async)
// from a host snapshot written by a background thread while training continues,
// with at most one write in flight. The snapshot copy itself also runs in the
// background thread: only the optimizer update changes the state, so the training
// thread waits for the copy just before its next update, and the copy overlaps the
// next step's forward and backward.
//
// A background write is not done until collect() says so: the caller announces the
// checkpoint (or its failure) only then. write_finished() lets it look without
// waiting, so that it can collect at a step boundary once every rank's writer ended.
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/groups.hpp"
#include "io/checkpoint.hpp"
#include "io/config.hpp"
#include "train/loss_scaler.hpp"
#include "memory/state_store.hpp"

namespace furnace::train {

class Checkpointer {
 public:
  // Collective (async mode builds its own communicators for the writer thread).
  // Async mode allocates its host snapshot here, recorded in `ledger` when given.
  Checkpointer(const io::Config& cfg, const comm::Groups& groups, const memory::StateStore& ps,
               memory::Ledger* ledger = nullptr);
  // The host snapshot's bytes (0 unless checkpoint.async): what the constructor allocates.
  static std::uint64_t snapshot_bytes(const io::Config& cfg, const memory::StateStore& ps);
  static constexpr const char* kSnapshotLabel = "Checkpointer::snapshot";
  ~Checkpointer();

  std::string dir() const { return dir_; }
  // memory.experts = nvme: how the writer reaches the offloaded groups (synchronous
  // writes only; the trainer owns it and outlives this).
  void set_offload(const io::OffloadAccess* access) { offload_ = access; }
  bool async() const { return io_groups_ != nullptr; }
  // Saves the state after `step` training steps; collective. Synchronous: the file
  // exists on return (a failure throws io::CheckpointError, the same on every rank).
  // Async: starts the background write; a previous one must have been collected.
  // Returns the seconds the caller was held up.
  // scaler: written when enabled (fp16), so that a resume continues with its scale.
  double save(long step, long optimizer_step, long long tokens_seen, const LossScaler& scaler = {});
  // Call before changing the state (the optimizer update): waits until a background
  // snapshot copy is complete. Returns the seconds waited (0 when none is pending).
  double hold_until_snapshot();

  // The file of the last save (async: being written until collected).
  const std::string& last_path() const { return last_path_; }
  // A background write was started and not collected yet.
  bool writing() const { return writer_.joinable(); }
  // That write has ended (collect() will not wait). Never blocks.
  bool write_finished() const { return finished_.load(std::memory_order_acquire); }
  struct Outcome {
    std::string path;
    double seconds = 0;  // from save() to the end of the write
    std::string error;   // empty: the file exists
  };
  // Waits for the background write and returns how it went; not writing() afterwards.
  Outcome collect();
  // collect(), throwing io::CheckpointError when the write failed.
  void wait();

 private:
  const io::Config& cfg_;
  const comm::Groups& groups_;
  const memory::StateStore& ps_;
  const io::OffloadAccess* offload_ = nullptr;
  std::string dir_;
  std::unique_ptr<comm::Groups> io_groups_;  // async: the writer thread's own communicators
  std::vector<float> snapshot_;              // async: params | exp_avg | exp_avg_sq (owned parts) on the host
  memory::Ledger* ledger_ = nullptr;
  std::thread writer_;
  std::mutex mutex_;
  std::condition_variable copied_cv_;
  bool copied_ = true;
  std::atomic<bool> finished_{false};
  double started_ = 0, seconds_ = 0;  // the background write's start time and duration
  std::string error_, last_path_;
};

}  // namespace furnace::train
