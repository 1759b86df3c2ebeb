#include "train/checkpointer.hpp"

#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace furnace::train {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Checkpointer::Checkpointer(const io::Config& cfg, const comm::Groups& groups,
                           const memory::StateStore& ps, memory::Ledger* ledger)
    : cfg_(cfg), groups_(groups), ps_(ps) {
  dir_ = cfg.checkpoint.dir.empty() ? cfg.output.dir + "/ckpt" : cfg.checkpoint.dir;
  if (cfg.checkpoint.async) {
    // Collectives of the writer thread must never interleave with the training
    // thread's on the same communicator: it gets duplicates of its own.
    io_groups_ = std::make_unique<comm::Groups>(groups.world(), groups.ep(), cfg.comm.ranks_per_node);
    snapshot_.resize(snapshot_bytes(cfg, ps) / sizeof(float));
    ledger_ = ledger;
    if (ledger_)
      ledger_->add(memory::Category::Workspace, memory::Tier::Host, kSnapshotLabel, snapshot_bytes(cfg, ps));
  }
}

std::uint64_t Checkpointer::snapshot_bytes(const io::Config& cfg, const memory::StateStore& ps) {
  // ZeRO-1: the moment families are this rank's parts only, and so are their copies.
  using memory::Family;
  return cfg.checkpoint.async ? ps.family_bytes(Family::Param) + ps.family_bytes(Family::ExpAvg) +
                                    ps.family_bytes(Family::ExpAvgSq)
                              : 0;
}

double Checkpointer::hold_until_snapshot() {
  const double t0 = now();
  std::unique_lock<std::mutex> lock(mutex_);
  copied_cv_.wait(lock, [this] { return copied_; });
  return now() - t0;
}

Checkpointer::~Checkpointer() {
  if (writer_.joinable()) writer_.join();
  if (ledger_)
    ledger_->release(memory::Category::Workspace, memory::Tier::Host, kSnapshotLabel, snapshot_bytes(cfg_, ps_));
}

Checkpointer::Outcome Checkpointer::collect() {
  if (writer_.joinable()) writer_.join();
  Outcome out{last_path_, seconds_, error_};
  error_.clear();
  return out;
}

void Checkpointer::wait() {
  if (auto out = collect(); !out.error.empty()) throw io::CheckpointError(out.error);
}

double Checkpointer::save(long step, long optimizer_step, long long tokens_seen, const LossScaler& scaler) {
  const double t0 = now();
  io::CheckpointMeta meta{.step = step, .tokens_seen = tokens_seen, .config_json = io::to_json(cfg_),
                          .seed = cfg_.train.seed, .world = groups_.size(), .dp = groups_.dp(),
                          .ep = groups_.ep()};
  if (scaler.enabled()) {
    meta.loss_scale_log2 = std::ilogb(scaler.scale());  // a power of two: exact
    meta.loss_scale_good_steps = scaler.good_steps();
  }
  const io::CheckpointWriteOptions opt{.keep = cfg_.checkpoint.keep,
                                       .alignment = std::size_t(cfg_.checkpoint.alignment),
                                       .fsync = cfg_.checkpoint.fsync};
  if (!io_groups_) {
    io::CheckpointBuffers b{ps_.params().data(), ps_.exp_avg().data(), ps_.exp_avg_sq().data(),
                            optimizer_step, offload_};
    last_path_ = io::write_checkpoint(dir_, ps_, b, meta, groups_, opt);
    return now() - t0;
  }
  if (writer_.joinable()) throw std::logic_error("Checkpointer::save: the previous background write was not collected");
  const std::size_t n = std::size_t(ps_.total()), m = std::size_t(ps_.family_elems(memory::Family::ExpAvg));
  io::CheckpointBuffers b{snapshot_.data(), snapshot_.data() + n, snapshot_.data() + n + m, optimizer_step};
  last_path_ = dir_ + "/" + io::checkpoint_file_name(step);
  copied_ = false;
  finished_.store(false, std::memory_order_relaxed);
  started_ = t0;
  writer_ = std::thread([this, b, n, m, meta, opt] {
    // The three buffers are host memory on host backends; a device build would
    // deep_copy into pinned host mirrors here.
    std::memcpy(snapshot_.data(), ps_.params().data(), n * sizeof(float));
    std::memcpy(snapshot_.data() + n, ps_.exp_avg().data(), m * sizeof(float));
    std::memcpy(snapshot_.data() + n + m, ps_.exp_avg_sq().data(), m * sizeof(float));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      copied_ = true;
    }
    copied_cv_.notify_all();
    try {
      io::write_checkpoint(dir_, ps_, b, meta, *io_groups_, opt);
    } catch (const std::exception& e) {
      error_ = e.what();
    }
    seconds_ = now() - started_;
    finished_.store(true, std::memory_order_release);  // publishes error_ and seconds_
  });
  return now() - t0;
}

}  // namespace furnace::train
