#include "comm/launcher.hpp"

#include <cstdlib>
#include <string>

namespace furnace::comm {
namespace {

// A non-negative integer in `s` (whole string, decimal), else -1.
long long parse_count(const std::optional<std::string>& s) {
  if (!s || s->empty()) return -1;
  long long v = 0;
  for (char c : *s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
    if (v > (1LL << 40)) return -1;
  }
  return v;
}

std::string ranks_word(long long n) { return n == 1 ? "rank" : "ranks"; }

// Slurm gives its special steps (batch script, extern, interactive, pending) ids
// near 2^32; only a real `srun` step (0, 1, 2, ...) launches tasks.
bool real_slurm_step(const EnvLookup& env) {
  const long long id = parse_count(env("SLURM_STEP_ID"));
  return id >= 0 && id < 0xFFFFFFF0LL;
}

constexpr const char* kFixMpich =
    "launch with `srun --mpi=pmi2` or with the mpiexec of the MPI furnace was built with "
    "(MPICH's mpiexec.hydra)";

}  // namespace

std::string launcher_mismatch(int mpi_world_size, const EnvLookup& env) {
  if (mpi_world_size != 1) return "";
  const std::string sees = "MPI sees 1 rank";

  // 1. A PMI-1/PMI-2 process manager (MPICH's hydra, srun --mpi=pmi2) set up this
  //    process. If it says 1, it started exactly one rank: consistent, whatever the
  //    scheduler's allocation says (e.g. hydra's proxies run as a Slurm step).
  const long long pmi_size = parse_count(env("PMI_SIZE"));
  if (pmi_size == 1) return "";
  if (pmi_size > 1) {
    const bool under_srun = real_slurm_step(env);
    return std::string(under_srun ? "srun" : "the process manager") + " set PMI_SIZE=" +
           std::to_string(pmi_size) + " but " + sees +
           ": this binary's MPI library is not the one the launcher serves (e.g. an Open MPI "
           "build started by MPICH's mpiexec); rebuild furnace with MPICH's mpicxx or use the "
           "launcher that belongs to its MPI";
  }

  // 2. Open MPI's mpirun/prterun started us: an MPICH binary cannot join its job.
  const long long ompi_size = parse_count(env("OMPI_COMM_WORLD_SIZE"));
  if (ompi_size > 1)
    return "Open MPI's mpirun says " + std::to_string(ompi_size) + " " + ranks_word(ompi_size) +
           " (OMPI_COMM_WORLD_SIZE) but " + sees +
           ": this binary's MPI (MPICH) cannot join an Open MPI launch; use MPICH's mpiexec "
           "(mpiexec.mpich / mpiexec.hydra) or `srun --mpi=pmi2`";

  // 3. A real srun step with more than one task, and no PMI the binary understood.
  if (real_slurm_step(env)) {
    long long ntasks = parse_count(env("SLURM_STEP_NUM_TASKS"));
    if (ntasks < 0) ntasks = parse_count(env("SLURM_NTASKS"));
    if (ntasks < 0) ntasks = parse_count(env("SLURM_NPROCS"));
    if (ntasks > 1) {
      const bool pmix = env("PMIX_RANK").has_value();
      return "Slurm says " + std::to_string(ntasks) + " tasks but " + sees +
             (pmix ? ": srun used PMIx (PMIX_RANK is set) but this binary's MPI (MPICH) "
                     "speaks PMI-1/PMI-2; "
                   : ": this binary's MPI (MPICH) was likely built for another process "
                     "manager (srun's default --mpi plugin gives it no PMI); ") +
             kFixMpich;
    }
    const long long procid = parse_count(env("SLURM_PROCID"));
    if (procid > 0)
      return "Slurm says this is task " + std::to_string(procid) + " of a step but " + sees +
             ": this binary's MPI (MPICH) was likely built for another process manager; " +
             kFixMpich;
  }

  // 4. PMIx (Open MPI 5's prterun, srun --mpi=pmix) with a rank > 0: more than one
  //    process was launched even though no size variable is in the environment.
  const long long pmix_rank = parse_count(env("PMIX_RANK"));
  if (pmix_rank > 0)
    return "a PMIx launcher says this is rank " + std::to_string(pmix_rank) + " (PMIX_RANK) but " +
           sees + ": this binary's MPI (MPICH) speaks PMI-1/PMI-2, not PMIx; " + kFixMpich;
  const long long ompi_rank = parse_count(env("OMPI_COMM_WORLD_RANK"));
  if (ompi_rank > 0)
    return "Open MPI's mpirun says this is rank " + std::to_string(ompi_rank) +
           " (OMPI_COMM_WORLD_RANK) but " + sees +
           ": this binary's MPI (MPICH) cannot join an Open MPI launch; use MPICH's mpiexec";

  // 5. PBS: a task spawned through the TM interface (pbsdsh, pbs_tmrsh, a TM-aware
  //    mpiexec) has PBS_TASKNUM > 1; the job script itself is task 1 and is never
  //    flagged, whatever PBS_NP / NCPUS say about the allocation.
  if (env("PBS_JOBID").has_value()) {
    const long long tasknum = parse_count(env("PBS_TASKNUM"));
    long long np = parse_count(env("PBS_NP"));
    if (np < 0) np = parse_count(env("NCPUS"));
    if (tasknum > 1 && np > 1)
      return "PBS started this as a spawned task of a " + std::to_string(np) +
             "-rank job (PBS_TASKNUM=" + std::to_string(tasknum) + ") but " + sees +
             ": the launcher gave this binary's MPI (MPICH) no PMI; start the ranks with MPICH's "
             "`mpiexec -n N` from the job script (hydra reads PBS_NODEFILE)";
  }
  return "";
}

std::string launcher_mismatch(int mpi_world_size) {
  return launcher_mismatch(mpi_world_size, [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace furnace::comm
