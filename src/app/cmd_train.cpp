#include <mpi.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "app/commands.hpp"
#include "app/setup_check.hpp"
#include "comm/agree.hpp"
#include "comm/groups.hpp"
#include "comm/mpi_check.hpp"
#include "io/checkpoint.hpp"
#include "io/clip.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "kernels/blas_runtime.hpp"
#include "kernels/gemm.hpp"
#include "train/trainer.hpp"

namespace furnace::app {

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// Every rank evaluates `what`; if any fails, rank 0 prints the lowest failing rank's
// message and every rank returns `code`, or kBadConfig when that rank's error is an
// io::ConfigError. A failing rank whose partners are stuck in a collective it left
// ends the job with its reason (comm::agree_on_error's deadline).
template <class F>
int agree(F&& what, int code) {
  std::optional<std::string> err;
  int my_code = code;
  try {
    what();
  } catch (const io::ConfigError& e) {
    err = e.what(), my_code = kBadConfig;
  } catch (const std::exception& e) {
    err = e.what();
  }
  const auto agreed = comm::agree_on_error(MPI_COMM_WORLD, err, code);
  if (!agreed) return 0;
  // Every rank is here now: MINLOC gives the lowest failing rank's code.
  struct { int rank, code; } mine{err ? world_rank() : 1 << 30, my_code}, first{};
  mpiCheck(MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MINLOC, MPI_COMM_WORLD));
  // Bounded and one line even when a message quotes user input in full.
  if (world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", io::clip(*agreed, 800).c_str());
  return first.code;
}

}  // namespace

void print_banner(const std::string& layout) {
  if (world_rank() != 0) return;
  const double gf = kernels::measure_sgemm_gflops();
  // A Serial build runs one thread whatever the budget says.
  const bool serial = std::string(kernels::ExecSpace::name()) == "Serial";
  std::string kokkos_source = serial ? "Serial backend" : thread_budget_in_use().kokkos.source;
  if (!serial && kernels::ExecSpace().concurrency() > 1 && !std::getenv("OMP_PROC_BIND"))
    kokkos_source += "; OMP_PROC_BIND unset: threads unbound";
  if (const std::string wait = kernels::openmp_wait_policy_source(); !serial && !wait.empty())
    kokkos_source += "; wait policy " + wait;
  std::printf("furnace %s (%s) | %s | Kokkos %s, %d thread(s) (%s) | BLAS %s, %d thread(s) (%s), sgemm %.0f GFLOP/s\n",
              FURNACE_VERSION, FURNACE_GIT_REV, layout.c_str(), kernels::ExecSpace::name(),
              int(kernels::ExecSpace().concurrency()), kokkos_source.c_str(),
              kernels::blas_core_in_use().c_str(), kernels::blas_threads(), kernels::blas_threads_source().c_str(), gf);
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
  const auto gemm16 = cfg.train.gemm16 == "onednn"    ? kernels::Gemm16Engine::OneDNN
                      : cfg.train.gemm16 == "convert" ? kernels::Gemm16Engine::Convert
                                                      : kernels::Gemm16Engine::Auto;
  kernels::Precision precision = kernels::Precision::FP32;
  kernels::parse_precision(cfg.train.precision, precision);
  if (const std::string e = kernels::gemm16_engine_error(gemm16, precision); !e.empty()) {
    if (world_rank() == 0)
      std::fprintf(stderr, "furnace: train.gemm16 = onednn, train.precision = %s: %s\n", cfg.train.precision.c_str(),
                   e.c_str());
    return kBadConfig;
  }
  kernels::set_gemm16_engine(gemm16);
  if (kernels::gemm16_uses_onednn(precision)) kernels::give_blas_threads_to_onednn();
  const std::string wait_line = choose_wait_mode(cfg.comm.wait);
  comm::Groups groups(MPI_COMM_WORLD, cfg.parallel.ep, cfg.comm.ranks_per_node);
  // Directories and memory, before anything is allocated or written.
  if (int rc = agree([&] { check_run_setup(cfg); }, kBadConfig)) return rc;
  print_banner(groups.describe());
  if (world_rank() == 0) std::printf("%s\n", wait_line.c_str());
  if (world_rank() == 0) {
    if (precision == kernels::Precision::FP32)
      std::printf("precision: fp32 throughout (train.precision)\n");
    else
      std::printf("precision: %s GEMMs on %s; fp32 master weights, moments, norms, softmax, router and losses%s\n",
                  cfg.train.precision.c_str(), kernels::gemm16_description(precision).c_str(),
                  precision == kernels::Precision::FP16 ? "; dynamic loss scaling" : "");
    std::fflush(stdout);
  }
  std::unique_ptr<train::Trainer> trainer;
  if (int rc = agree([&] {
        with_allocation_errors_as_config(cfg, [&] {
          trainer = std::make_unique<train::Trainer>(cfg, groups, memory_check(cfg, groups.node_size()));
        });
      }, kBadData))
    return rc;
  {
    const std::string report = trainer->memory_report("after set-up");
    if (world_rank() == 0) {
      // The model's size over all ranks (global shapes), and its fp32 training state.
      double params = 0;
      for (const auto& p : trainer->params().infos()) {
        double n = 1;
        for (auto e : p.global_shape) n *= double(e);
        params += n;
      }
      std::printf("model: %.4g parameters; training state (parameters, gradients, 2 AdamW moments, fp32): %s\n%s",
                  params, memory::format_bytes(std::uint64_t(params * 16)).c_str(), report.c_str());
      std::fflush(stdout);
    }
  }
  if (opt.dry_run) {
    if (world_rank() == 0) std::printf("dry run: everything is built; not training (--dry-run)\n");
    return kOk;
  }
  if (!opt.resume.empty())
    if (int rc = agree([&] { trainer->resume(opt.resume); }, kBadData)) return rc;
  try {
    using End = train::Trainer::RunResult::End;
    const auto result = trainer->run();
    const std::string report = trainer->memory_report("at the end");  // collective: every rank returned from run()
    if (world_rank() == 0) std::printf("%s", report.c_str()), std::fflush(stdout);
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
