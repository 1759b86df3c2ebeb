// The training loop: batches from the token file, forward/backward, gradient
// reduction, clipping, AdamW, evaluation, progress lines and metrics.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/alltoall.hpp"
#include "comm/grad_sync.hpp"
#include "comm/groups.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "memory/arena.hpp"
#include "memory/state_offload.hpp"
#include "memory/ledger.hpp"
#include "memory/state_store.hpp"
#include "model/gpt.hpp"
#include "train/loss_scaler.hpp"
#include "train/checkpointer.hpp"
#include "train/optimizer.hpp"
#include "train/schedule.hpp"
#include "train/signals.hpp"

namespace furnace::train {

struct StepResult {
  double ce = 0;        // mean cross-entropy over the global batch
  double aux = 0, z = 0;
  double total = 0;     // the objective that was differentiated
  double grad_norm = 0; // before clipping (unscaled: of the loss itself)
  double loss_scale = 1; // fp16: the loss scale this step's gradients were taken at
  double lr = 0;
  int moe_rounds = 1;   // the most exchange rounds an MoE layer ran (this rank's ep group)
  double checkpoint_hold_s = 0;  // waited for a background checkpoint's snapshot copy
  // This rank's seconds in the token exchanges' rows and in the gradient reduction
  // (and ZeRO-1's gather), as comm.timing measures them (comm/phase_timer.hpp).
  double alltoall_s = 0, allreduce_s = 0;
};

// Maps the run configuration onto the model's shape for this rank.
model::GptSpec make_spec(const io::Config& cfg, const comm::Layout& layout);

// Every byte a Trainer for `cfg` allocates on this rank, by category and tier, found
// by building its model and state in Measure mode (nothing allocated): the same code
// that sizes the real allocations. `spec.exchange` may be null (it is only stored).
// `zero`: this rank's place in the groups the moments are sharded over (zero_layout).
memory::Ledger measure_memory(const io::Config& cfg, const model::GptSpec& spec,
                              const memory::ShardLayout& zero = {});

// What a rank at `layout` holds at its peak: measure_memory of that rank (its spec and
// ZeRO share) plus the buffers its communicators own, GradSync's bf16 wire and the
// hierarchical exchange's staging (at balanced routing). The trainer checks this
// before allocating; `furnace plan` prints it for layouts that are not running.
struct MemoryPlan {
  memory::Ledger ledger;                        // bytes by category and tier
  std::vector<comm::GradSync::Span> buckets;    // the gradient reductions of a step
  std::int64_t params = 0, expert_params = 0;   // elements of this rank's parameters (of them: experts)
  std::uint64_t moment_bytes = 0;               // the AdamW moments of this rank's share, on any tier
  int offload_groups = 0;                       // groups of the nvme tier (memory.experts or optimizer = nvme)
};
// Bytes of one token row in the MoE exchange: d_model values, fp32 or 16-bit.
inline std::size_t exchange_row_bytes(const model::GptSpec& spec) {
  return std::size_t(spec.d_model) * (spec.precision == kernels::Precision::FP32 ? 4 : 2);
}

// `exchange`: the token exchange the run uses (comm.alltoall resolved; for "auto" the
// trainer's measured choice or the planner's modelled one), for its staging bytes.
MemoryPlan plan_memory(const io::Config& cfg, const comm::Layout& layout, comm::RowExchange::Algorithm exchange);

// comm.alltoall resolved for this job: flat or hierarchical as configured; for "auto"
// comm::choose_exchange on links measured now (collective over groups.world(); rank 0
// prints the choice and its numbers). Flat when there is no exchange (ep 1, no experts).
comm::RowExchange::Algorithm resolve_exchange(const io::Config& cfg, const comm::Groups& groups);

// memory.zero = 1: dense moments sharded over the world, expert moments over the dp
// group (the replicas of this rank's experts), as GradSync reduces them; else unsharded.
memory::ShardLayout zero_layout(const io::Config& cfg, const comm::Layout& layout);

// Checks the measured ledger before anything large is allocated; throws (an
// io::ConfigError naming the keys) to refuse the run.
using MemoryCheck = std::function<void(const memory::Ledger& planned)>;

// What an evaluation gave: the mean cross-entropy over the batches it ran.
struct EvalResult {
  double loss = 0;
  int batches = 0;              // evaluated: train.eval_batches unless a stop request came
  bool stop_requested = false;  // by some rank (agreed), seen after the last batch evaluated
};

class Trainer {
 public:
  // `check` sees measure_memory's ledger before the first large allocation.
  Trainer(const io::Config& cfg, comm::Groups& groups, const MemoryCheck& check = {});

  // Forward + backward on the global batch of `step`; gradients are left reduced
  // (summed over ranks) in the parameter store, not yet clipped. `batch` receives
  // this rank's [local_batch, seq+1] tokens when non-null.
  StepResult compute_gradients(long step, std::vector<std::int32_t>* batch = nullptr);
  // Clip and update (ZeRO-1: this rank's parts, then the parameters are all-gathered).
  // Returns the lr used.
  double apply_update(long step, StepResult& r);
  // Moves the communication seconds since the last call (or since compute_gradients
  // began) into r.alltoall_s / r.allreduce_s.
  void take_comm_seconds(StepResult& r);
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

  memory::StateStore& params() { return ps_; }
  const memory::Ledger& memory() const { return ledger_; }
  // The memory report of this rank (current and peak per category and tier), with the
  // largest total over the ranks. Collective.
  std::string memory_report(const std::string& when) const;
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

  // memory.experts or memory.optimizer = nvme (trainer_offload.cpp): the layer hooks that bring each MoE
  // layer's experts in and out around its forward and backward, the optimizer pass
  // over the offloaded groups, and the checkpoint code's access to them.
  void set_up_offload();
  void update_offloaded(double clip_factor);

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
  memory::Ledger ledger_;  // before everything that allocates: outlives their releases
  comm::RowExchange::Algorithm exchange_algorithm_;  // before exchange_: it builds with it
  std::unique_ptr<comm::RowExchange> exchange_;  // ep > 1
  model::GptSpec spec_;
  std::uint64_t resident_at_start_ = memory::process_status_bytes("VmRSS");  // first member: before any allocation
  memory::StateStore ps_;
  memory::Arenas arenas_{"Trainer", ledger_};
  std::unique_ptr<model::Gpt> model_;
  std::unique_ptr<io::TokenDataset> train_data_, valid_data_;
  std::unique_ptr<comm::GradSync> grad_sync_;
  AdamW opt_;
  LrSchedule schedule_;
  LossScaler scaler_;  // fp16; the scale stays 1 otherwise
  kernels::View1<kernels::index_t> inputs_, targets_;
  std::vector<std::int32_t> batch_;
  std::unique_ptr<memory::StateOffload> offload_;  // memory.experts or memory.optimizer = nvme
  std::vector<int> layer_group_;                    // per layer: its offloaded group, -1 for none
  std::vector<double> offloaded_sq_;                // per tensor: sum of squared gradients, taken in the backward
  io::OffloadAccess ckpt_write_access_, ckpt_read_access_;
  std::unique_ptr<Checkpointer> ckpt_;
  long start_step_ = 0;  // steps already done (resume)
  std::string fault_tensor_;             // inject_test_fault
  std::vector<long> fault_steps_;
};

}  // namespace furnace::train
