// Launcher mismatch check: the environment says this process is one of several
// ranks, but MPI_Init gave a world of 1. That is what happens when the binary's MPI
// (MPICH) cannot talk to the process manager that started it (srun without
// --mpi=pmi2, Open MPI's mpirun, srun --mpi=pmix with a PMI-1/2 MPICH, ...): every
// process becomes its own singleton world and they all train the same model
// independently, silently.
//
// Conservative by design: it only looks at variables that describe THIS launch
// step (SLURM_STEP_NUM_TASKS under a real srun step, PMI_SIZE, OMPI_COMM_WORLD_SIZE,
// a rank > 0 from any launcher, a PBS TM-spawned task), never at allocation-wide
// variables alone, so a plain single-process run inside a multi-node allocation
// (e.g. `furnace data prepare` in a batch script) is never flagged.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace furnace::comm {

// Returns the value of an environment variable, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

// "" when consistent (or when mpi_world_size > 1), otherwise one line (no trailing
// newline, no "furnace:" prefix) naming the launcher, its rank count and the likely
// fix. Pure: reads the environment only through `env`.
std::string launcher_mismatch(int mpi_world_size, const EnvLookup& env);

// Same, reading the process environment (std::getenv).
std::string launcher_mismatch(int mpi_world_size);

}  // namespace furnace::comm
