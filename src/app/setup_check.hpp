// Checks of a run against the machine, made before the trainer is built: the output
// and checkpoint directories can be made (they are), the model fits in the memory a rank can
// have, and the BLAS thread count. Each failure is an io::ConfigError: one line naming
// the keys to change (exit 2), raised on every rank that sees it (callers agree).
#pragma once
#include <mpi.h>

#include <exception>
#include <string>

#include "io/config.hpp"

namespace furnace::app {

// Makes `dir` (the value of config key `key`) as the run will, after checking what
// would otherwise fail late or obscurely: a path too long for the OS (PATH_MAX, with
// room for the files inside; NAME_MAX per component), an existing file in the way.
// Returns "" when the directory exists and is writable, else the one-line problem
// naming the key.
std::string make_run_dir(const std::string& key, const std::string& dir);

// --- Memory -------------------------------------------------------------------------
// An up-front estimate of the big allocations of one rank, so that a model that
// cannot fit is refused with the keys to change instead of a Kokkos allocation
// failure. A lower bound (the terms that dominate, in fp32), kept in this one place:
// the memory planner (`furnace plan`, from the byte tables of src/memory) will
// replace it.
struct MemoryEstimate {
  double state = 0;        // parameters, gradients, AdamW moments
  double attention = 0;    // attention probabilities and their gradient, [B, H, T, T] per layer
  double activations = 0;  // the other activations and logits
  double total() const { return state + attention + activations; }
};
MemoryEstimate estimate_memory(const io::Config& cfg, int world);

// The memory one rank can have: the least of MemAvailable and the cgroup's free
// limit, divided by the ranks on the node, and of RLIMIT_AS (per process).
struct MemoryBudget {
  double bytes = 0;
  std::string source;  // "MemAvailable 20.1 GiB / 2 ranks on this node"
};
MemoryBudget rank_memory_budget(int ranks_on_node);

// "" when the estimate fits the budget, else the one-line problem naming the keys.
std::string memory_problem(const io::Config& cfg, int world, const MemoryEstimate& need,
                           const MemoryBudget& have);

// make_run_dir for output.dir and the checkpoint directory, then memory_problem;
// throws io::ConfigError with the first problem. Not collective: callers agree.
void check_run_setup(const io::Config& cfg, int world, int ranks_on_node);

// True for an allocation failure: std::bad_alloc, or Kokkos's "failed to allocate"
// error (a std::runtime_error in Kokkos 3.4 and 4.x).
bool is_allocation_failure(const std::exception& e);

// Runs f, the set-up of the run; an allocation failure inside becomes an
// io::ConfigError naming the size keys (the configuration asks for more memory than
// there is), one line instead of Kokkos's several.
template <class F>
void with_allocation_errors_as_config(const io::Config& cfg, F&& f);

// --- Threads ------------------------------------------------------------------------
// Sets the BLAS threads of this rank (kernels::choose_blas_threads) from the user's
// variables or this process's CPU affinity, shared with the ranks of `node` whose
// affinity overlaps ours. Collective over node; throws io::ConfigError on a bad
// variable (after the collective).
void set_blas_threads_for(MPI_Comm node);

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
