// Checks of a run against the machine, made before the trainer is built: the output
// and checkpoint directories can be made (they are), the model fits in the memory a rank can
// have, and the BLAS thread count. Each failure is an io::ConfigError: one line naming
// the keys to change (exit 2), raised on every rank that sees it (callers agree).
#pragma once
#include <mpi.h>

#include <exception>
#include <string>

#include "io/config.hpp"
#include "kernels/blas_runtime.hpp"
#include "memory/ledger.hpp"
#include "train/trainer.hpp"

namespace furnace::app {

// Makes `dir` (the value of config key `key`) as the run will, after checking what
// would otherwise fail late or obscurely: a path too long for the OS (PATH_MAX, with
// room for the files inside; NAME_MAX per component), an existing file in the way.
// Returns "" when the directory exists and is writable, else the one-line problem
// naming the key.
std::string make_run_dir(const std::string& key, const std::string& dir);

// --- Memory -------------------------------------------------------------------------
// What a run needs is measured, not estimated: train::measure_memory builds the model
// and state in Measure mode (the same code that sizes the allocations) and the
// trainer hands that ledger to memory_check before its first large allocation.

// The memory one rank can have: the least of MemAvailable and the cgroup's free
// limit, divided by the ranks on the node, and of RLIMIT_AS (per process).
struct MemoryBudget {
  double bytes = 0;
  std::string source;  // "MemAvailable 20.1 GiB / 2 ranks on this node"
};
MemoryBudget rank_memory_budget(int ranks_on_node);

// "" when the measured ledger fits memory.device_budget_gb, memory.host_budget_gb and
// (on a build whose device is the host) what a rank can have; else one line naming
// the tier, the bytes per category and the keys to change.
std::string memory_problem(const io::Config& cfg, const memory::Ledger& planned, const MemoryBudget& have);
// The trainer's MemoryCheck: memory_problem against rank_memory_budget(ranks_on_node),
// thrown as io::ConfigError. `cfg` must outlive it.
train::MemoryCheck memory_check(const io::Config& cfg, int ranks_on_node);

// make_run_dir for output.dir and the checkpoint directory; throws io::ConfigError
// with the first problem. Not collective: callers agree.
void check_run_setup(const io::Config& cfg);

// True for an allocation failure: std::bad_alloc, or Kokkos's "failed to allocate"
// error (a std::runtime_error in Kokkos 3.4 and 4.x).
bool is_allocation_failure(const std::exception& e);

// Runs f, the set-up of the run; an allocation failure inside becomes an
// io::ConfigError naming the size keys (the configuration asks for more memory than
// there is), one line instead of Kokkos's several.
template <class F>
void with_allocation_errors_as_config(const io::Config& cfg, F&& f);

// --- Threads ------------------------------------------------------------------------
// This rank's threads: Kokkos' (the user's OMP_NUM_THREADS, else the rank's share of
// the CPUs) and BLAS's (OPENBLAS_NUM_THREADS, else as Kokkos), never more than that
// share: the CPUs of this process's affinity divided among the ranks of its node whose
// affinity overlaps it. Collective over `world` (it finds the node's ranks itself,
// before Kokkos starts its threads); throws io::ConfigError on a bad variable (after
// the collectives).
struct ThreadBudget {
  kernels::ThreadChoice kokkos, blas;
  // More ranks of this node may run on this rank's CPUs than it has CPUs (4 ranks on
  // 2 cores): comm.wait = "auto" then waits yielding (comm/wait.hpp).
  bool oversubscribed = false;
  int cpus = 1, sharing = 1;  // this rank's CPUs, and the node's ranks that may use them
};
ThreadBudget thread_budget(MPI_Comm world);
// The budget main() applied (for the banner).
ThreadBudget& thread_budget_in_use();
// Sets comm.wait's mode (comm/wait.hpp) from `setting` (auto | spin | yield) and
// thread_budget_in_use(): every rank the same (blocking and nonblocking collectives do
// not match each other), Yield if any rank chose it. Returns the banner's line, e.g.
// "MPI waits: yield (comm.wait = auto: 4 ranks share 2 CPU(s))". Collective.
std::string choose_wait_mode(const std::string& setting);
// The CPUs of this rank's node (the union of its ranks' affinities: a Slurm cpuset, an
// emulated node's share) and this rank's own. Collective over `world`.
struct NodeCpus {
  int node = 1, mine = 1;
};
NodeCpus node_cpus(MPI_Comm world);

// ---- implementation ----
[[noreturn]] void throw_allocation_failure(const io::Config& cfg, const std::exception& e);

template <class F>
void with_allocation_errors_as_config(const io::Config& cfg, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    if (is_allocation_failure(e)) throw_allocation_failure(cfg, e);
    throw;
  }
}

}  // namespace furnace::app
