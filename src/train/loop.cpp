// Trainer::run: the loop a user watches. Rank 0 prints one progress line per
// log_every steps and appends every step to metrics.jsonl.
//
// Each step ends in one agreement (an MPI_MAX over a few flags) before the optimizer
// update: stop requests by signal, the time limit, a non-finite loss or gradient
// norm on any rank, and whether a background checkpoint write is still running
// anywhere. Whatever one rank saw, every rank then acts on together, so no rank is
// left waiting in a collective.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"
#include "io/hdf5_util.hpp"
#include "io/metrics.hpp"
#include "train/signals.hpp"
#include "train/trainer.hpp"

namespace furnace::train {

namespace {

using Clock = std::chrono::steady_clock;
using End = Trainer::RunResult::End;

// train.on_nonfinite = skip still stops after this many non-finite steps in a row:
// the update was skipped for all of them, so the state is the same and it, not a
// batch, is broken.
constexpr int kMaxConsecutiveSkips = 10;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_eta(double s) {
  char buf[32];
  const int m = int(s) / 60, sec = int(s) % 60;
  std::snprintf(buf, sizeof buf, "%d:%02d", m, sec);
  return buf;
}

// Per MoE layer, max/mean (1 = balanced) of the per-expert demand summed over `groups`
// runs of consecutive experts: groups = 0 gives each expert's load
// (expert_load_max_over_mean); groups = ep the busiest ep rank's, its experts together
// (expert e lives on ep rank e / (experts / ep)), which the token exchange's busiest
// receiver carries (rank_load_max_over_mean; furnace plan --exchange-imbalance).
nlohmann::json load_max_over_mean(const model::Gpt& m, int groups) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& b : m.blocks()) {
    if (!b->moe()) continue;
    const auto& load = b->moe()->stats().load;
    const std::size_t n = groups > 0 ? std::size_t(groups) : load.size(), per_group = load.size() / n;
    double mx = 0, sum = 0;
    for (std::size_t g = 0; g < n; ++g) {
      double v = 0;
      for (std::size_t e = g * per_group; e < (g + 1) * per_group; ++e) v += load[e];
      mx = std::max(mx, v);
      sum += v;
    }
    out.push_back(sum > 0 ? mx / (sum / double(n)) : 0.0);
  }
  return out;
}

StopRequest agreed_stop_request(MPI_Comm world) {
  int r = stop_request();
  mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &r, 1, MPI_INT, MPI_MAX, world));
  return StopRequest(r);
}

}  // namespace

bool Trainer::finish_background_checkpoint(std::string& error) {
  const auto out = ckpt_->collect();
  // The collective write agrees on its errors; agreeing again here also covers a
  // failure that only one rank's writer saw.
  std::optional<std::string> mine;
  if (!out.error.empty()) mine = out.error;
  if (auto agreed = io::h5::agree_on_error(groups_.world(), mine)) {
    error = "background checkpoint failed: " + *agreed;
    return false;
  }
  if (groups_.rank() == 0) {
    std::printf("checkpoint written: %s (background, %.3f s)\n", out.path.c_str(), out.seconds);
    std::fflush(stdout);
  }
  return true;
}

bool Trainer::save_checkpoint(long done, bool wait, std::string& error) {
  if (ckpt_->writing() && !finish_background_checkpoint(error)) return false;  // one write in flight
  const double tokens_per_step = double(cfg_.train.batch_size) * cfg_.model.seq_len;
  double held = 0;
  try {
    held = ckpt_->save(done, opt_.step(), (long long)(done * tokens_per_step), scaler_);
  } catch (const io::CheckpointError& e) {  // synchronous: the same error on every rank
    error = e.what();
    return false;
  }
  if (groups_.rank() == 0) {
    if (ckpt_->async())
      std::printf("checkpoint %s: background write started (training held %.3f s)\n",
                  ckpt_->last_path().c_str(), held);
    else
      std::printf("checkpoint written: %s (synchronous, training held %.3f s)\n",
                  ckpt_->last_path().c_str(), held);
    std::fflush(stdout);
  }
  return !wait || !ckpt_->writing() || finish_background_checkpoint(error);
}

Trainer::RunResult Trainer::stop_on_request(StopRequest why, long done) {
  RunResult result;
  const bool root = groups_.rank() == 0;
  if (root) {
    if (done > start_step_)
      std::printf("%s received: checkpointing after step %ld\n", stop_signal_name(why), done);
    else if (done > 0)
      std::printf("%s received during start-up: checkpointing the resumed state (step %ld)\n",
                  stop_signal_name(why), done);
    else
      std::printf("%s received during start-up: nothing trained yet, no checkpoint\n", stop_signal_name(why));
    std::fflush(stdout);
  }
  // A resumed state is worth saving too: into this run's own checkpoint directory,
  // where --resume auto will look.
  if (done > 0 && !save_checkpoint(done, /*wait=*/true, result.error)) {
    result.end = End::Failed;
    return result;
  }
  result.end = requeue_requested(why) ? End::Requeue : End::Interrupted;
  if (root && result.end == End::Requeue)
    write_requeue_marker(cfg_.output.dir, done > 0 ? ckpt_->last_path() : "", done, why);
  return result;
}

Trainer::RunResult Trainer::run() {
  const bool root = groups_.rank() == 0;
  install_stop_signal_handlers();  // again: see signals.hpp
  const auto& tc = cfg_.train;
  const std::string dir = cfg_.output.dir;
  std::unique_ptr<io::MetricsWriter> metrics;
  if (root) {
    std::filesystem::create_directories(dir);
    remove_requeue_marker(dir);  // it spoke of an earlier run
    std::ofstream(dir + "/config.json") << io::to_json(cfg_) << "\n";
    // A resumed run continues the same metrics file from the step it resumed at.
    metrics = std::make_unique<io::MetricsWriter>(dir + "/metrics.jsonl", start_step_);
  }
  // A request that came during start-up (config, construction, the resume load).
  if (const StopRequest s = agreed_stop_request(groups_.world())) return stop_on_request(s, start_step_);

  const double tokens_per_step = double(tc.batch_size) * cfg_.model.seq_len;
  const bool skip_nonfinite = tc.on_nonfinite == "skip";
  const auto t0 = Clock::now();
  double val = NAN;
  long step = start_step_, skipped = 0, skipped_in_a_row = 0;
  RunResult result;
  auto fail = [&](std::string why) {
    result.end = End::Failed;
    result.error = std::move(why);
  };
  bool report_hold = false;  // print the next update's wait for a background snapshot
  for (; step < tc.steps && result.end == End::Completed; ++step) {
    const auto ts = Clock::now();
    StepResult r = compute_gradients(step);
    enum { kOver, kStop, kNonfinite, kWriting, kFlags };
    int flags[kFlags] = {tc.time_limit_min > 0 && seconds_since(t0) > tc.time_limit_min * 60 ? 1 : 0,
                         stop_request(),
                         std::isfinite(r.ce) && std::isfinite(r.total) && std::isfinite(r.grad_norm) ? 0 : 1,
                         ckpt_->writing() && !ckpt_->write_finished() ? 1 : 0};
    comm::allreduce(MPI_IN_PLACE, flags, kFlags, MPI_INT, MPI_MAX, groups_.world());
    // A background write that ended on every rank is announced (or fails the run) now.
    if (ckpt_->writing() && !flags[kWriting]) {
      std::string error;
      if (!finish_background_checkpoint(error)) {
        fail(error);
        break;
      }
    }
    if (flags[kNonfinite] && std::isfinite(r.ce) && scaler_.can_back_off()) {
      // fp16: the scaled gradients overflowed. Every rank has the same norm and scale.
      scaler_.overflow();
      if (root)
        std::printf("step %ld: fp16 gradients overflowed at loss scale %g; update skipped, loss scale now %g\n",
                    step + 1, r.loss_scale, scaler_.scale());
      r.lr = schedule_.at(step);
    } else if (flags[kNonfinite]) {
      char values[96];
      std::snprintf(values, sizeof values, " (loss %g, gradient norm %g)", r.ce, r.grad_norm);
      const std::string what = "step " + std::to_string(step + 1) + ": the loss or gradient norm is not finite" +
                               values + "; " + first_nonfinite_tensor();
      ++skipped;
      if (!skip_nonfinite) {
        fail(what + " (train.on_nonfinite = stop)");
        break;
      }
      if (++skipped_in_a_row >= kMaxConsecutiveSkips) {
        fail(what + "; " + std::to_string(skipped_in_a_row) +
             " steps in a row were non-finite with their updates skipped, so the model itself is broken");
        break;
      }
      if (root) std::printf("%s; update skipped (train.on_nonfinite = skip)\n", what.c_str());
      r.lr = schedule_.at(step);
    } else {
      skipped_in_a_row = 0;
      apply_update(step, r);
    }
    take_comm_seconds(r);
    const double dt = seconds_since(ts);
    // The nvme tier's traffic at the end of the step, before any evaluation.
    const auto traffic = offload_ ? offload_->traffic() : memory::StateOffload::Traffic{};
    if (root && report_hold)
      std::printf("background checkpoint: its snapshot copy held step %ld's update for %.3f s\n",
                  step + 1, r.checkpoint_hold_s);
    report_hold = false;
    const double elapsed = seconds_since(t0);
    StopRequest stop = StopRequest(flags[kStop]);
    const bool over = flags[kOver];
    const bool last = step + 1 == tc.steps || over;
    // No evaluation once a stop is requested: it would only delay the checkpoint.
    const bool do_eval = !stop && (last || (tc.eval_every > 0 && (step + 1) % tc.eval_every == 0));
    bool evaluated = false;
    if (do_eval) {
      const EvalResult e = evaluate();
      if (e.stop_requested) {  // every rank saw it in the same batch
        stop = agreed_stop_request(groups_.world());
        if (root)
          std::printf("%s received: evaluation after step %ld abandoned after %d of %d batches\n",
                      stop_signal_name(stop), step + 1, e.batches, tc.eval_batches);
      }
      evaluated = e.batches == tc.eval_batches;
      if (evaluated) val = e.loss;
    }
    if (root) {
      nlohmann::json j = {{"step", step + 1},        {"loss", r.ce},
                          {"lr", r.lr},              {"grad_norm", r.grad_norm},
                          {"aux_loss", r.aux},       {"z_loss", r.z},
                          {"tokens_per_s", tokens_per_step / dt}, {"ms_per_step", dt * 1e3},
                          {"elapsed_s", elapsed},    {"expert_load_max_over_mean", load_max_over_mean(*model_, 0)},
                          {"moe_rounds", r.moe_rounds}};
      if (groups_.size() > 1) {  // rank 0's, as comm.timing measures them
        j["alltoall_ms"] = r.alltoall_s * 1e3;
        j["allreduce_ms"] = r.allreduce_s * 1e3;
      }
      if (groups_.ep() > 1 && cfg_.moe.experts > 0) j["rank_load_max_over_mean"] = load_max_over_mean(*model_, groups_.ep());
      if (evaluated) j["val_loss"] = val;
      if (skipped_in_a_row > 0) j["skipped"] = true;  // its update was skipped (non-finite)
      if (skipped > 0) j["skipped_steps"] = skipped;  // so far in this run
      if (scaler_.enabled()) {
        j["loss_scale"] = r.loss_scale;                  // this step's gradients were taken at
        j["overflow_steps"] = scaler_.overflows();       // skipped for fp16 overflow so far
      }
      j["memory_peak_bytes"] = nlohmann::json::parse(ledger_.peak_json());  // rank 0's, by category
      j["resident_bytes"] = memory::process_status_bytes("VmRSS");           // rank 0's process, now
      if (offload_) {  // rank 0's nvme tier traffic from set-up to the end of this step
        j["nvme_read_bytes"] = traffic.bytes_read;
        j["nvme_written_bytes"] = traffic.bytes_written;
      }
      metrics->write(j.dump());
      if ((step + 1) % std::max(1, tc.log_every) == 0 || evaluated) {
        const double eta = elapsed / double(step + 1 - start_step_) * (tc.steps - step - 1);
        std::printf("step %6ld/%d | loss %.4f | lr %.2e | %8.0f tok/s | %6.1f ms/step | ETA %s",
                    step + 1, tc.steps, r.ce, r.lr, tokens_per_step / dt, dt * 1e3,
                    format_eta(eta).c_str());
        if (evaluated) std::printf(" | val %.4f", val);
        if (skipped > 0) std::printf(" | skipped %ld", skipped);
        if (scaler_.enabled()) std::printf(" | scale %g, %ld overflow(s)", scaler_.scale(), scaler_.overflows());
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    if (stop) {
      result = stop_on_request(stop, step + 1);
      result.val_loss = val;
      return result;
    }
    if (cfg_.checkpoint.every > 0 && (step + 1) % cfg_.checkpoint.every == 0 && step + 1 < tc.steps) {
      std::string error;
      if (!save_checkpoint(step + 1, /*wait=*/false, error)) fail(error);
      report_hold = cfg_.checkpoint.async;
    }
    if (over) {
      if (root)
        std::printf("train.time_limit_min = %g reached after %ld steps; stopping\n",
                    tc.time_limit_min, step + 1);
      ++step;
      break;
    }
  }
  if (result.end == End::Completed && step > start_step_) {
    std::string error;
    if (!save_checkpoint(step, /*wait=*/true, error)) fail(error);
  }
  if (ckpt_->writing()) {  // a failed run's background write in flight: let it end, and say how
    std::string error;
    if (!finish_background_checkpoint(error) && root) std::fprintf(stderr, "furnace: %s\n", error.c_str());
  }
  if (root && result.end == End::Completed) {
    remove_requeue_marker(dir);
    std::printf("done: %ld steps in %.1f s, final val_loss %.4f (metrics: %s/metrics.jsonl)\n",
                std::min<long>(step, tc.steps), seconds_since(t0), val, dir.c_str());
    std::fflush(stdout);
  }
  result.val_loss = val;
  return result;
}

}  // namespace furnace::train
