#include <mpi.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "app/commands.hpp"
#include "comm/agree.hpp"
#include "comm/groups.hpp"
#include "comm/mpi_check.hpp"
#include "io/checkpoint.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "kernels/blas_runtime.hpp"
#include "train/trainer.hpp"

namespace furnace::app {

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// Every rank evaluates `what`; if any fails, rank 0 prints the lowest failing rank's
// message and every rank returns `code`. A failing rank whose partners are stuck in a
// collective it left ends the job with its reason (comm::agree_on_error's deadline).
template <class F>
int agree(F&& what, int code) {
  std::optional<std::string> err;
  try {
    what();
  } catch (const std::exception& e) {
    err = e.what();
  }
  const auto agreed = comm::agree_on_error(MPI_COMM_WORLD, err, code);
  if (!agreed) return 0;
  if (world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", agreed->c_str());
  return code;
}

}  // namespace

void print_banner(const std::string& layout) {
  if (world_rank() != 0) return;
  const double gf = kernels::measure_sgemm_gflops();
  std::printf("furnace %s (%s) | %s | Kokkos %s | BLAS %s, %d thread(s), sgemm %.0f GFLOP/s\n",
              FURNACE_VERSION, FURNACE_GIT_REV, layout.c_str(),
              kernels::ExecSpace::name(), kernels::blas_core_in_use().c_str(),
              kernels::blas_threads(), gf);
  std::fflush(stdout);
}

int cmd_train(const TrainOptions& opt) {
  io::Config cfg;
  if (int rc = agree([&] { cfg = io::load_config(opt.config, opt.overrides); }, kBadConfig)) return rc;
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const std::string layout_err =
      comm::check_layout(world, cfg.parallel.ep, cfg.moe.experts, cfg.train.batch_size);
  if (!layout_err.empty()) {
    if (world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", layout_err.c_str());
    return kBadConfig;
  }
  if (cfg.checkpoint.async && !comm::thread_multiple()) {
    if (world_rank() == 0)
      std::fprintf(stderr, "furnace: checkpoint.async = true needs MPI_THREAD_MULTIPLE, which this "
                           "MPI does not provide; set checkpoint.async = false\n");
    return kBadConfig;
  }
  comm::Groups groups(MPI_COMM_WORLD, cfg.parallel.ep, cfg.comm.ranks_per_node);
  // One rank per core: ranks sharing a node split its cores between their BLAS threads.
  const int cores = int(std::thread::hardware_concurrency());
  kernels::set_blas_threads(std::max(1, cores / groups.node_size()));
  print_banner(groups.describe());
  std::unique_ptr<train::Trainer> trainer;
  if (int rc = agree([&] { trainer = std::make_unique<train::Trainer>(cfg, groups); }, kBadData))
    return rc;
  if (!opt.resume.empty())
    if (int rc = agree([&] { trainer->resume(opt.resume); }, kBadData)) return rc;
  try {
    using End = train::Trainer::RunResult::End;
    const auto result = trainer->run();
    if (result.end == End::Failed && world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", result.error.c_str());
    switch (result.end) {
      case End::Completed: return kOk;
      case End::Requeue: return kCheckpointed;
      case End::Interrupted: return kInterrupted;
      case End::Failed: return kBadRun;
    }
    return kFailure;
  } catch (const io::CheckpointError& e) {
    // Agreed: every rank has the same error at the same point; one line, a clean exit.
    if (world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", e.what());
    return kBadRun;
  } catch (const std::exception& e) {
    // Only this rank may have failed (a bad window of the token file, a checkpoint
    // write): the others could be waiting in a collective, so end the whole job.
    comm::abort_job(e.what(), kBadRun);
  }
}

}  // namespace furnace::app
