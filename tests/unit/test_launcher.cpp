// launcher_mismatch(): flags a launcher that started several ranks when MPI sees 1,
// and stays silent for single-process runs inside multi-rank allocations.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "comm/launcher.hpp"

namespace {

using Env = std::map<std::string, std::string>;

std::string check(int world, const Env& vars) {
  return furnace::comm::launcher_mismatch(world, [&](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Launcher, EmptyEnvironmentIsFine) {
  EXPECT_EQ(check(1, {}), "");
  EXPECT_EQ(check(4, {}), "");
}

TEST(Launcher, SrunWithoutPmiIsFlagged) {
  const Env env = {{"SLURM_JOB_ID", "77"}, {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "4"},
                   {"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_PROCID", "0"}};
  const std::string msg = check(1, env);
  EXPECT_TRUE(contains(msg, "Slurm says 4 tasks but MPI sees 1 rank")) << msg;
  EXPECT_TRUE(contains(msg, "srun --mpi=pmi2")) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  // The same step with MPI working: nothing to say.
  EXPECT_EQ(check(4, env), "");
}

TEST(Launcher, SrunNprocsFallbackAndPmixHint) {
  EXPECT_TRUE(contains(check(1, {{"SLURM_STEP_ID", "3"}, {"SLURM_NPROCS", "2"}}), "Slurm says 2 tasks"));
  const std::string msg =
      check(1, {{"SLURM_STEP_ID", "0"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"PMIX_RANK", "0"}});
  EXPECT_TRUE(contains(msg, "Slurm says 8 tasks")) << msg;
  EXPECT_TRUE(contains(msg, "PMIx")) << msg;
}

TEST(Launcher, SingleProcessInsideAllocationIsNotFlagged) {
  // The batch script itself: allocation-wide SLURM_NTASKS, no srun step.
  EXPECT_EQ(check(1, {{"SLURM_JOB_ID", "77"}, {"SLURM_NTASKS", "16"}, {"SLURM_NPROCS", "16"},
                      {"SLURM_JOB_NUM_NODES", "4"}}),
            "");
  // Slurm's batch and extern steps have special ids near 2^32.
  EXPECT_EQ(check(1, {{"SLURM_STEP_ID", "4294967291"}, {"SLURM_NTASKS", "16"}}), "");
  EXPECT_EQ(check(1, {{"SLURM_STEP_ID", "4294967292"}, {"SLURM_NTASKS", "16"}}), "");
  // `srun -n 1` inside a 16-task allocation: the step has 1 task.
  EXPECT_EQ(check(1, {{"SLURM_STEP_ID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_NTASKS", "16"}}),
            "");
  // `mpiexec -n 1` (hydra) whose proxies run as a 2-task Slurm step: PMI says 1.
  EXPECT_EQ(check(1, {{"SLURM_STEP_ID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"PMI_SIZE", "1"},
                      {"PMI_RANK", "0"}}),
            "");
  // A PBS job script (task 1) with a multi-CPU allocation.
  EXPECT_EQ(check(1, {{"PBS_JOBID", "12.server"}, {"PBS_NP", "8"}, {"NCPUS", "8"},
                      {"PBS_TASKNUM", "1"}}),
            "");
  EXPECT_EQ(check(1, {{"PBS_JOBID", "12.server"}, {"PBS_NP", "8"}}), "");
}

TEST(Launcher, PmiSizeGreaterThanOneIsFlagged) {
  const std::string msg = check(1, {{"PMI_SIZE", "4"}, {"PMI_RANK", "2"}});
  EXPECT_TRUE(contains(msg, "PMI_SIZE=4")) << msg;
  EXPECT_TRUE(contains(msg, "MPI sees 1 rank")) << msg;
  const std::string srun = check(1, {{"PMI_SIZE", "2"}, {"SLURM_STEP_ID", "1"}, {"SLURM_STEP_NUM_TASKS", "2"}});
  EXPECT_TRUE(contains(srun, "srun set PMI_SIZE=2")) << srun;
  EXPECT_EQ(check(4, {{"PMI_SIZE", "4"}}), "");
}

TEST(Launcher, OpenMpiLaunchIsFlagged) {
  const std::string msg = check(1, {{"OMPI_COMM_WORLD_SIZE", "3"}, {"OMPI_COMM_WORLD_RANK", "0"}});
  EXPECT_TRUE(contains(msg, "Open MPI's mpirun says 3 ranks")) << msg;
  EXPECT_TRUE(contains(check(1, {{"OMPI_COMM_WORLD_RANK", "2"}}), "rank 2")) << msg;
  EXPECT_EQ(check(1, {{"OMPI_COMM_WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_RANK", "0"}}), "");
}

TEST(Launcher, PmixRankAboveZeroIsFlagged) {
  const std::string msg = check(1, {{"PMIX_RANK", "1"}, {"PMIX_NAMESPACE", "prterun-x"}});
  EXPECT_TRUE(contains(msg, "PMIX_RANK")) << msg;
  EXPECT_EQ(check(1, {{"PMIX_RANK", "0"}}), "");
}

TEST(Launcher, PbsSpawnedTaskIsFlagged) {
  const std::string msg =
      check(1, {{"PBS_JOBID", "12.server"}, {"PBS_NP", "4"}, {"PBS_TASKNUM", "3"}});
  EXPECT_TRUE(contains(msg, "4-rank job")) << msg;
  EXPECT_TRUE(contains(msg, "mpiexec")) << msg;
}

TEST(Launcher, GarbageValuesAreIgnored) {
  EXPECT_EQ(check(1, {{"PMI_SIZE", "four"}, {"SLURM_STEP_ID", "x"}, {"SLURM_NTASKS", "-3"},
                      {"OMPI_COMM_WORLD_SIZE", ""}}),
            "");
}

TEST(Launcher, ProcessEnvironmentOverload) {
  // Whatever this test process's environment is, a world > 1 is never flagged.
  EXPECT_EQ(furnace::comm::launcher_mismatch(2), "");
}
