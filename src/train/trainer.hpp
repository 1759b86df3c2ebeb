// The training loop: batches from the token file, forward/backward, gradient
// reduction, clipping, AdamW, evaluation, progress lines and metrics.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/alltoall.hpp"
#include "comm/grad_sync.hpp"
#include "comm/groups.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "memory/arena.hpp"
#include "memory/param_store.hpp"
#include "model/gpt.hpp"
#include "train/checkpointer.hpp"
#include "train/optimizer.hpp"
#include "train/schedule.hpp"
#include "train/signals.hpp"

namespace furnace::train {

struct StepResult {
  double ce = 0;        // mean cross-entropy over the global batch
  double aux = 0, z = 0;
  double total = 0;     // the objective that was differentiated
  double grad_norm = 0; // before clipping
  double lr = 0;
  double checkpoint_hold_s = 0;  // waited for a background checkpoint's snapshot copy
};

// Maps the run configuration onto the model's shape for this rank.
model::GptSpec make_spec(const io::Config& cfg, const comm::Groups& groups);

// What an evaluation gave: the mean cross-entropy over the batches it ran.
struct EvalResult {
  double loss = 0;
  int batches = 0;              // evaluated: train.eval_batches unless a stop request came
  bool stop_requested = false;  // by some rank (agreed), seen after the last batch evaluated
};

class Trainer {
 public:
  Trainer(const io::Config& cfg, comm::Groups& groups);

  // Forward + backward on the global batch of `step`; gradients are left reduced
  // (summed over ranks) in the parameter store, not yet clipped. `batch` receives
  // this rank's [local_batch, seq+1] tokens when non-null.
  StepResult compute_gradients(long step, std::vector<std::int32_t>* batch = nullptr);
  // Clip and update. Returns the lr used.
  double apply_update(long step, StepResult& r);
  // Cross-entropy over the validation batches (the same ones every time). A stop
  // request on any rank, agreed in each batch's loss reduction, abandons it.
  EvalResult evaluate();
  // Loads a checkpoint. Collective. "auto": the newest checkpoint in the checkpoint
  // directory that loads (train/resume.hpp), or none; else the file or directory
  // named, which must load. Prints what was loaded and every setting of the config
  // that differs from the checkpoint's. Returns the path loaded, or "" for none.
  std::string resume(const std::string& spec);

  struct RunResult {
    enum class End {
      Completed,    // exit 0 (also when train.time_limit_min stopped it)
      Requeue,      // SIGUSR1/SIGTERM: checkpointed, requeue marker left; exit 75
      Interrupted,  // SIGINT: checkpointed; exit 130
      Failed,       // a non-finite step or a failed checkpoint write; exit 4
    };
    End end = End::Completed;
    double val_loss = 0;
    std::string error;  // Failed: the reason (printed by rank 0), the same on every rank
  };
  // The whole run with progress output, metrics and checkpoints.
  RunResult run();

  memory::ParamStore& params() { return ps_; }
  model::Gpt& model() { return *model_; }
  const io::Config& config() const { return cfg_; }
  double lr_at(long step) const { return schedule_.at(step); }

 private:
  struct Loss {
    double ce = 0;               // global mean cross-entropy
    bool stop_requested = false;  // some rank had a stop request at the reduction
  };
  Loss forward_loss(const std::vector<std::int32_t>& tokens, bool backward, StepResult* r);
  void load_local_batch(const io::TokenDataset& data, int stream, long index,
                        std::vector<std::int32_t>& tokens) const;

  // Non-finite steps (trainer.cpp). Collective: the first tensor, in parameter order,
  // with a non-finite value (else gradient) on any rank, described for the message.
  std::string first_nonfinite_tensor() const;
  // FURNACE_TEST_NAN_GRAD="TENSOR@STEP[,STEP...]": a fault for tests; at those steps
  // (1-based) rank 0 alone writes a NaN into TENSOR's reduced gradient, before the
  // gradient norm (so only rank 0 sees a non-finite one).
  void inject_test_fault(long step);

  // run()'s checkpoints (loop.cpp), announced by rank 0 once the file exists. Each
  // returns false when a write failed, with the reason (the same on every rank) in
  // `error`. save_checkpoint first collects a background write still in flight;
  // `wait`: returns only once its own write ended, also a background one.
  bool save_checkpoint(long done, bool wait, std::string& error);
  bool finish_background_checkpoint(std::string& error);  // collective
  // Acts on an agreed stop request after `done` steps: checkpoint, requeue marker.
  RunResult stop_on_request(StopRequest why, long done);

  io::Config cfg_;
  comm::Groups& groups_;
  std::unique_ptr<comm::RowExchange> exchange_;  // ep > 1
  model::GptSpec spec_;
  memory::ParamStore ps_;
  memory::Arena arena_{"Trainer::activations"};
  std::unique_ptr<model::Gpt> model_;
  std::unique_ptr<io::TokenDataset> train_data_, valid_data_;
  std::unique_ptr<comm::GradSync> grad_sync_;
  AdamW opt_;
  LrSchedule schedule_;
  Kokkos::View<kernels::index_t*, kernels::MemSpace> inputs_, targets_;
  std::vector<std::int32_t> batch_;
  std::unique_ptr<Checkpointer> ckpt_;
  long start_step_ = 0;  // steps already done (resume)
  std::string fault_tensor_;             // inject_test_fault
  std::vector<long> fault_steps_;
};

}  // namespace furnace::train
