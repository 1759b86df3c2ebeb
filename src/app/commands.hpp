// The `furnace` subcommands. Each returns the process exit code; errors that every
// rank detects alike (config, layout) return a code, errors of one rank abort the job.
#pragma once
#include <string>
#include <vector>

namespace furnace::app {

// Exit codes (documented in README.md).
// kCheckpointed (75): stopped by SIGUSR1/SIGTERM after writing a checkpoint; requeue.
// kInterrupted (130): stopped by SIGINT after writing a checkpoint; not requeued.
enum ExitCode {
  kOk = 0, kFailure = 1, kBadConfig = 2, kBadData = 3, kBadRun = 4, kCheckpointed = 75, kInterrupted = 130
};

struct TrainOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;  // "", "auto" or a checkpoint path
  bool dry_run = false;  // build everything, print the memory report, do not train
};
int cmd_train(const TrainOptions& opt);

struct PrepareOptions {
  std::string out_dir = "data/fortunes";
  std::vector<std::string> inputs;  // empty: Debian's fortunes corpus
  double valid_fraction = 0.05;
};
int cmd_data_prepare(const PrepareOptions& opt);

struct DumpOptions {
  std::string config, out;
  std::vector<std::string> overrides;
  int steps = 10;
};
// Writes initial weights, batches, step-0 logits and gradients and S losses for the
// PyTorch reference check (tests/reference/).
int cmd_reference_dump(const DumpOptions& opt);

struct PlanOptions {
  std::string config, machine;
  std::vector<std::string> overrides;
  int nodes = 1, ranks_per_node = 0;  // 0: the machine's
  double imbalance = 0;               // 0: from moe.capacity_factor
  double exchange_imbalance = 0;      // 0: the same as imbalance
  bool search = false, json = false, weak = false;
  std::string sweep_nodes, csv;       // "1,2,4": a scaling table (and its CSV)
};
// Predicted bytes, fit and step time of a configuration on a machine description.
int cmd_plan(const PlanOptions& opt);

// Start-up banner on rank 0: version, layout, Kokkos backend, BLAS core and rate.
void print_banner(const std::string& layout);

}  // namespace furnace::app
