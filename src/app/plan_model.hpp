// The planner's model (`furnace plan`): the bytes of one rank of a layout, from the
// trainer's own sizing code (train::plan_memory), whether they fit the machine's tiers,
// and the step time from the machine's GEMM curves, memory bandwidth and alpha-beta
// network tiers. docs/plan.md states every term and what it leaves out.
#pragma once
#include <string>

#include "app/plan_machine.hpp"
#include "comm/groups.hpp"
#include "io/config.hpp"
#include "train/trainer.hpp"

namespace furnace::app {

// Seconds of one training step on the slowest rank, by where they go.
struct StepTime {
  double gemm = 0;        // every GEMM of forward, recompute and backward
  double elementwise = 0;  // norms, softmax, activations, permutes, losses: bytes / bandwidth
  double optimizer = 0;   // clipping and AdamW over this rank's share
  double alltoall = 0;    // the MoE token exchanges (4 per MoE layer)
  double allreduce = 0;   // gradient reduction (reduce-scatter + all-gather with ZeRO-1)
  double offload = 0;     // nvme / host-device traffic of offloaded state
  double checkpoint = 0;  // a checkpoint's write, divided by checkpoint.every
  double total() const { return gemm + elementwise + optimizer + alltoall + allreduce + offload + checkpoint; }
};

// One tier's need against what the machine has, both for the same unit (per rank for
// a GPU's device memory, per node otherwise).
struct TierFit {
  std::string name;  // "device memory (per rank)", "host memory (per node)", "nvme (per node)"
  double need = 0, have = 0;
  bool fits() const { return need <= have; }
};

struct Plan {
  comm::Layout layout;  // rank 0 of the job
  int nodes = 1;
  train::MemoryPlan memory;
  std::vector<TierFit> tiers;
  bool fits = true;
  std::string binding;  // the tier with the largest need / have
  StepTime time;
  double imbalance = 1;       // the most-loaded expert rank's rows over the mean
  double exchange_imbalance = 1;  // the busiest ep rank's received rows over the mean
  comm::ExchangeChoice exchange;  // the token exchange's algorithm and its time per exchange
  double model_flops = 0;     // useful flops of a step over all ranks (no recompute)
  double tokens_per_s = 0, mfu = 0;
};

struct PlanRequest {
  int nodes = 1, ranks_per_node = 0;  // 0: the machine's
  double imbalance = 0;               // 0: from the capacity factor (docs/plan.md)
  // The busiest ep rank's received rows over the mean (its local experts' loads summed:
  // at most `imbalance`, lower when a rank holds several experts); 0: `imbalance`.
  double exchange_imbalance = 0;
};

// The plan of `cfg` on `m`. Throws io::ConfigError for a layout that does not divide
// (the same words as the trainer's) or more nodes than the machine has.
Plan make_plan(const io::Config& cfg, const Machine& m, const PlanRequest& req);

}  // namespace furnace::app
