// furnace: train, evaluate and benchmark MoE transformers on HPC machines.
#include <CLI/CLI.hpp>
#include <Kokkos_Core.hpp>
#include <mpi.h>

#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "app/bench_alltoall.hpp"
#include "app/bench_calibrate.hpp"
#include "app/bench_io.hpp"
#include "app/bench_kernels.hpp"
#include "app/bench_nvme.hpp"
#include "app/cmd_ckpt.hpp"
#include "app/commands.hpp"
#include "comm/groups.hpp"
#include "comm/launcher.hpp"
#include "io/clip.hpp"
#include "io/hdf5_util.hpp"
#include "app/setup_check.hpp"
#include "comm/agree.hpp"
#include "comm/mpi_check.hpp"
#include "kernels/blas_runtime.hpp"
#include "train/signals.hpp"

namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// A command-line error: one line on rank 0 (every rank parses the same arguments).
int usage_error(const std::string& what) {
  if (world_rank() == 0) std::fprintf(stderr, "furnace: %s (furnace --help)\n", what.c_str());
  return furnace::app::kBadConfig;
}

// What is wrong with the subcommand words of argv, e.g. `furnace trian` ("unknown
// command 'trian' ...") or a bare `furnace bench` ("... needs a command: kernels, ...");
// "" when they are fine. CLI11 itself says only "A subcommand is required".
std::string subcommand_problem(const CLI::App& cli, int argc, char** argv) {
  const CLI::App* app = &cli;
  std::string path = "furnace";
  for (int i = 1;; ++i) {
    const auto subs = app->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty() || app->get_require_subcommand_min() == 0) return "";  // the rest are arguments
    const CLI::App* next = nullptr;
    std::string names;
    for (const CLI::App* sub : subs) {
      if (i < argc && sub->get_name() == argv[i]) next = sub;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (i >= argc || argv[i][0] == '-') return "'" + path + "' needs a command: " + names;
    if (!next) return "unknown command '" + furnace::io::clip(argv[i]) + "' after '" + path + "' (commands: " + names + ")";
    app = next;
    path += " " + next->get_name();
  }
}

int run(int argc, char** argv) {
  using namespace furnace::app;
  CLI::App cli{"Furnace: mixture-of-experts transformer training for HPC machines"};
  cli.set_version_flag("--version", std::string("furnace ") + FURNACE_VERSION + " (" +
                                        FURNACE_GIT_REV + ")");
  cli.require_subcommand(1);

  TrainOptions train;
  auto* t = cli.add_subcommand("train", "train a model (see configs/ and docs/configuration.md)");
  t->add_option("-c,--config", train.config, "TOML config file")->required();
  t->add_option("-s,--set", train.overrides, "override a key: section.key=value (repeatable)");
  auto* resume = t->add_option("-r,--resume", train.resume,
                               "resume: 'auto' (the latest checkpoint in checkpoint.dir, if any) or a checkpoint file");
  t->add_flag("--dry-run", train.dry_run,
              "build the model, state and buffers, print the memory report per rank and exit without training");

  auto* data = cli.add_subcommand("data", "prepare datasets");
  data->require_subcommand(1);
  PrepareOptions prep;
  auto* p = data->add_subcommand("prepare", "turn text files into HDF5 token files (byte vocabulary)");
  p->add_option("-o,--out", prep.out_dir, "output directory (train.h5, valid.h5)")->capture_default_str();
  p->add_option("--valid-fraction", prep.valid_fraction, "share of the text kept for validation")->capture_default_str()
      ->check(CLI::Range(0.001, 0.5));
  p->add_option("inputs", prep.inputs, "text files (default: Debian's fortunes corpus)");

  auto* bench = cli.add_subcommand("bench", "benchmarks that print ratios to a baseline");
  bench->require_subcommand(1);
  BenchKernelsOptions bk;
  auto* bkc = bench->add_subcommand("kernels", "expert FFN forward+backward vs plain cblas_sgemm");
  bkc->add_option("--reps", bk.reps, "timed repetitions per shape")->capture_default_str();
  bkc->add_flag("--csv", bk.csv, "one CSV line per shape (with the header) instead of the table");

  BenchAllToAllOptions ba;
  auto* bac = bench->add_subcommand("alltoall",
                                    "MoE dispatch+combine (flat, hierarchical) vs raw MPI_Alltoallv");
  bac->add_option("--tokens", ba.tokens, "tokens per rank")->capture_default_str();
  bac->add_option("--d-model", ba.d_model, "floats per token")->capture_default_str();
  bac->add_option("--top-k", ba.top_k, "copies per token")->capture_default_str();
  bac->add_option("--reps", ba.reps, "timed repetitions")->capture_default_str();
  bac->add_option("--ranks-per-node", ba.ranks_per_node, "0 = detect; set to test 2 levels on one node")
      ->capture_default_str();

  BenchIoOptions bio;
  auto* bioc = bench->add_subcommand("io", "checkpoint write/read vs plain POSIX I/O; async snapshot stall");
  bioc->add_option("--dir", bio.dir, "directory for the files")->capture_default_str();
  bioc->add_option("--size-mb", bio.size_mb, "parameter MiB (files hold 3x)")->capture_default_str();
  bioc->add_option("--reps", bio.reps, "timed repetitions (median)")->capture_default_str();
  bioc->add_flag("--fsync", bio.fsync, "fsync both writes, inside the timing");
  bioc->add_flag("--keep", bio.keep_files, "keep DIR/step_00000001.h5 and DIR/latest");
  bioc->add_option("--step-ms", bio.step_ms, "simulated training step after an async save (ms)")
      ->capture_default_str();

  BenchNvmeOptions bnv;
  auto* bnvc = bench->add_subcommand("nvme", "nvme tier (NvmeStore) write/read vs plain sequential I/O, same directory");
  bnvc->add_option("--dir", bnv.dir, "directory for the files (removed afterwards)")->capture_default_str();
  bnvc->add_option("--size-mb", bnv.size_mb, "MiB per rank")->capture_default_str();
  bnvc->add_option("--region-mb", bnv.region_mb, "MiB per region (one transfer)")->capture_default_str();
  bnvc->add_option("--repeat", bnv.repeat, "timed repetitions (median)")->capture_default_str();
  bnvc->add_option("--compute-ms", bnv.compute_ms, "work per region in the overlap row; 0: one region's plain read time")
      ->capture_default_str();
  bnvc->add_flag("--buffered", bnv.buffered, "no O_DIRECT in the store (and so in the baseline)");

  PlanOptions plan;
  auto* pl = cli.add_subcommand("plan", "predicted bytes, fit and step time of a config on a machine (docs/plan.md)");
  pl->add_option("-c,--config", plan.config, "TOML config file")->required();
  pl->add_option("-m,--machine", plan.machine, "machine description (configs/machines/*.toml)")->required();
  pl->add_option("-s,--set", plan.overrides, "override a key: section.key=value");
  pl->add_option("--nodes", plan.nodes, "nodes of the job")->capture_default_str();
  pl->add_option("--ranks-per-node", plan.ranks_per_node, "0 = the machine's machine.ranks_per_node")
      ->capture_default_str();
  pl->add_option("--imbalance", plan.imbalance, "MoE load max/mean; 0 = from moe.capacity_factor")
      ->capture_default_str();
  pl->add_option("--exchange-imbalance", plan.exchange_imbalance,
                 "rows the busiest ep rank receives over the mean (its experts together); 0 = --imbalance")
      ->capture_default_str();
  pl->add_flag("--search", plan.search, "try every ep, zero, recompute and tier; print the fastest that fits");
  pl->add_option("--sweep-nodes", plan.sweep_nodes, "a scaling table over node counts, e.g. 1,2,4,8");
  pl->add_flag("--weak", plan.weak, "with --sweep-nodes: keep the batch per rank (default: the global batch)");
  pl->add_option("--csv", plan.csv, "with --sweep-nodes: also write the table as CSV");
  pl->add_flag("--json", plan.json, "one JSON object instead of the report");

  BenchCalibrateOptions bcal;
  auto* bcalc = bench->add_subcommand("calibrate", "measure this machine and write a machine file for furnace plan");
  bcalc->add_option("--out", bcal.out, "machine file to write")->required();
  bcalc->add_option("--name", bcal.name, "the machine's name in the file")->capture_default_str();
  bcalc->add_option("--dir", bcal.dir, "directory for the disk measurement")->capture_default_str();
  bcalc->add_option("--disk-mb", bcal.disk_mb, "MiB written and read there")->capture_default_str();
  bcalc->add_option("--seconds", bcal.seconds, "timing per GEMM size")->capture_default_str();

  auto* ck = cli.add_subcommand("ckpt", "inspect checkpoints");
  ck->require_subcommand(1);
  std::string ck_path;
  bool ck_verify = false;
  auto* cki = ck->add_subcommand("inspect", "print a checkpoint's contents and check that it is intact");
  cki->add_option("path", ck_path, "a step_*.h5 file, or a checkpoint directory (its latest)")->required();
  cki->add_flag("--verify", ck_verify, "read every dataset; print min/max/mean|x|; fail on NaN/Inf");

  DumpOptions dump;
  auto* d = cli.add_subcommand("reference-dump", "write weights, a batch and gradients for tests/reference");
  d->add_option("-c,--config", dump.config, "TOML config file")->required();
  d->add_option("-o,--out", dump.out, "output HDF5 file")->required();
  d->add_option("--steps", dump.steps, "AdamW steps to record")->capture_default_str();
  d->add_option("-s,--set", dump.overrides, "override a key: section.key=value");

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return world_rank() == 0 ? cli.exit(e) : 0;  // --help, --version
    const std::string words = subcommand_problem(cli, argc, argv);
    // CLI11's messages quote the arguments: bounded, and one line with our pointer to --help.
    return usage_error(words.empty() ? furnace::io::clip(e.what()) : words);
  }
  // An empty value would silently mean "start fresh" (train.resume's default).
  if (resume->count() > 0 && train.resume.empty())
    return usage_error("--resume needs a value: 'auto' (the latest checkpoint in checkpoint.dir, or a fresh "
                       "start when there is none) or a checkpoint file");
  if (*t) return cmd_train(train);
  furnace::train::restore_default_stop_signals();  // the other commands never check
  if (*p) return cmd_data_prepare(prep);
  if (*bkc) {
    print_banner("1 process");
    return bench_kernels(bk);
  }
  if (*bac) return bench_alltoall(ba);
  if (*bioc) return bench_io(bio);
  if (*bnvc) return bench_nvme(bnv);
  if (*bcalc) return bench_calibrate(bcal);
  if (*cki) return cmd_ckpt_inspect(ck_path, ck_verify);
  if (*pl) return cmd_plan(plan);
  if (*d) return cmd_reference_dump(dump);
  return kFailure;
}

}  // namespace

// The thread budget (setup_check.hpp) for BLAS and Kokkos; Kokkos is initialised with
// it. Collective; 0, or exit code 2 after one line from rank 0 (a bad variable).
static int apply_thread_budget() {
  std::optional<std::string> error;
  auto& budget = furnace::app::thread_budget_in_use();
  try {
    budget = furnace::app::thread_budget(MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (const auto agreed = furnace::comm::agree_on_error(MPI_COMM_WORLD, error, 2)) {
    if (world_rank() == 0) std::fprintf(stderr, "furnace: %s\n", furnace::io::clip(*agreed, 800).c_str());
    return 2;
  }
  furnace::kernels::set_blas_threads(budget.blas);
  // Kokkos' own warnings are off: its OMP_PROC_BIND advice is two lines per rank at
  // every start; the banner says when threads are unbound instead.
#if KOKKOS_VERSION >= 40000
  Kokkos::initialize(
      Kokkos::InitializationSettings().set_num_threads(budget.kokkos.threads).set_disable_warnings(true));
#else
  Kokkos::InitArguments args;
  args.num_threads = budget.kokkos.threads;
  args.disable_warnings = true;
  Kokkos::initialize(args);
#endif
  return 0;
}

int main(int argc, char** argv) {
  // Must come before anything touches OpenBLAS: may re-execute this program.
  furnace::kernels::select_blas_core_or_reexec(argc, argv);
  furnace::io::h5::init();  // before any HDF5 call: no atexit handler (see hdf5_util.hpp)
  // A file-size limit (ulimit -f) makes writes fail with EFBIG, reported like a full disk,
  // instead of killing the rank with SIGXFSZ mid-collective.
  std::signal(SIGXFSZ, SIG_IGN);
  // Next, so that a SIGUSR1/SIGTERM/SIGINT during start-up is a stop request too.
  furnace::train::install_stop_signal_handlers();
  // Background checkpoints write from a second thread (own communicators).
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  furnace::comm::set_thread_multiple(provided >= MPI_THREAD_MULTIPLE);
  // Errors on one rank must end the whole job, not leave the others waiting.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  // N copies of a 1-rank job would each train alone and overwrite each other's files.
  if (const std::string why = furnace::comm::launcher_mismatch(world); !why.empty()) {
    std::fprintf(stderr, "furnace: %s\n", why.c_str());
    MPI_Finalize();
    return 2;
  }
  // Threads before Kokkos starts its own: its count is fixed at initialisation.
  if (int rc = apply_thread_budget(); rc != 0) {
    MPI_Finalize();
    return rc;
  }
  int rc = run(argc, argv);
  if (furnace::io::h5::abandoned()) {
    // A failed checkpoint write left a file open inside HDF5, which MPI_Finalize would
    // try to close (see h5::abandon). Every rank agreed on the failure and its reason
    // is printed; end the job as one: ranks leaving without MPI_Finalize one by one
    // make mpiexec kill the rest and report signal 9 instead of `rc`.
    // Rank 0 printed the reason; end_job gives the launcher time to forward it (an
    // immediate MPI_Abort lost the line now and then: a disk-full run at 2 ranks in CI).
    std::fflush(stdout);
    std::fflush(stderr);
    if (world > 1) MPI_Barrier(MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) furnace::comm::end_job(rc);
    for (;;) pause();
  }
  Kokkos::finalize();
  // Every rank's traffic is over before any leaves; MPI_Finalize itself can still hang
  // in the launcher's PMI barrier (across emulated nodes, see finalize_bounded), so it
  // gets a deadline.
  if (world > 1) MPI_Barrier(MPI_COMM_WORLD);
  furnace::comm::finalize_bounded(rc);  // the barrier does not remove every such hang
  return rc;
}
