// MPI- and Kokkos-aware GoogleTest main: the same binary runs under `mpiexec -n 1/2/4`.
// Rank 0 prints the full results. Every other rank prints only its failures, each line
// prefixed "[rank N]", because a failure seen on one rank alone would otherwise fail the
// job (the exit code is the MAX over ranks) without saying which test or why.
#include <Kokkos_Core.hpp>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "app/setup_check.hpp"

namespace {

class FailureOnlyPrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailureOnlyPrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "unknown", result.line_number(),
                 result.summary());
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // As `furnace train` with comm.wait = "auto": 4 ranks on 2 cores wait yielding, so
  // the MPI tests run the mode training runs on such a machine.
  furnace::app::thread_budget_in_use() = furnace::app::thread_budget(MPI_COMM_WORLD);
  furnace::app::choose_wait_mode("auto");
  Kokkos::initialize(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailureOnlyPrinter(rank));
  }
  int local = RUN_ALL_TESTS();
  int global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && global != local)
    std::fprintf(stderr, "a test failed on another rank: see its [rank N] lines above\n");
  Kokkos::finalize();
  MPI_Finalize();
  return global;
}
