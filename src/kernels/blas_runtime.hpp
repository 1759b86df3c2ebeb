// Which OpenBLAS core runs our GEMMs, chosen before OpenBLAS initialises.
//
// Debian's OpenBLAS 0.3.21 misdetects some virtualised AVX-512 Xeons as the generic
// "Prescott" core (about 6x slower sgemm). OpenBLAS reads OPENBLAS_CORETYPE once,
// in its library constructor, so the only reliable way to choose the core of an
// already-linked OpenBLAS is to set the variable and re-execute ourselves.
//
// We only ever move OpenBLAS *up* a ladder of x86 cores we understand:
//   PRESCOTT, CORE2, PENRYN, DUNNINGTON, NEHALEM, ATOM  <  SANDYBRIDGE  <  HASWELL  <  SKYLAKEX
// A core OpenBLAS picked that is not on the ladder (Zen, Cooperlake, ...) is newer or
// more specific than anything we would pick, so it is kept.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace furnace::kernels {

// --- The ladder, as pure functions (tested without touching the environment) -------

// Position on the ladder, case-insensitive: 0 for the SSE-only cores, 1 SANDYBRIDGE,
// 2 HASWELL, 3 SKYLAKEX; -1 for any name not on it.
int core_rank(std::string_view name);

// The instruction-set extensions the ladder cares about. "avx512" means F+BW+DQ+VL,
// "avx2_fma" both; each flag includes the OS saving the wider register state.
struct CpuFeatures {
  bool x86 = false, avx = false, avx2_fma = false, avx512 = false;
};
CpuFeatures cpu_features();  // of this CPU (all false off x86)

// What a ladder core needs that `cpu` lacks, e.g. "AVX2 and FMA"; empty when it can
// run it. Names off the ladder need nothing we know of (empty).
std::string missing_features(std::string_view core, const CpuFeatures& cpu);
bool cpu_can_run(std::string_view core, const CpuFeatures& cpu = cpu_features());

// The highest ladder core `cpu` can run ("SKYLAKEX" ... "PRESCOTT"); "" off x86.
std::string best_core(const CpuFeatures& cpu);

// Every ladder core `cpu` can run, strongest first.
std::vector<std::string> runnable_cores(const CpuFeatures& cpu);

// What select_blas_core_or_reexec decides, given FURNACE_BLAS_CORE (`requested`,
// null or empty when unset), the core OpenBLAS is running and the CPU.
struct BlasCoreChoice {
  std::string reexec_with;  // set OPENBLAS_CORETYPE to this and re-exec; "" keeps the current core
  std::string error;        // non-empty: FURNACE_BLAS_CORE is unusable; print this and exit(2)
};
BlasCoreChoice choose_blas_core(const char* requested, std::string_view in_use,
                                const CpuFeatures& cpu);

// --- This process ---------------------------------------------------------------

// best_core(cpu_features()): the best OpenBLAS core name this CPU can execute.
std::string detect_blas_core();

// Called first thing in main(), before MPI_Init. Does nothing after our own re-exec
// (FURNACE_BLAS_REEXEC) or when OPENBLAS_CORETYPE is set (the user chose directly).
// FURNACE_BLAS_CORE=native lets OpenBLAS decide; FURNACE_BLAS_CORE=NAME forces a
// ladder core, after checking this CPU can run it (if not, one line on stderr and
// exit(2)). Otherwise re-executes with detect_blas_core() only when OpenBLAS picked
// a weaker ladder core. Returns normally when no re-exec is needed.
//
// The same re-exec (one at most) also sets OMP_WAIT_POLICY=passive (every build runs
// libgomp threads: oneDNN's, and Kokkos's on OpenMP), when the user has not set it: libgomp reads it once, as it is
// loaded, and its default (threads spin after each parallel region) made 2 OpenMP
// threads plus OpenBLAS's own on 2 cores 6-15x slower per step than passive waiting.
// openmp_wait_policy_source() says which applies, for the banner.
void select_blas_core_or_reexec(int argc, char** argv);
std::string openmp_wait_policy_source();  // "passive (set by furnace)", "X (OMP_WAIT_POLICY)", "active (libgomp default)"

// The core OpenBLAS is actually running (openblas_get_corename()), and its config.
std::string blas_core_in_use();
std::string blas_config();

// Measured single-precision GEMM rate in GFLOP/s on a square n x n x n product,
// best of `reps` (for the start-up banner; takes well under a second at n = 512).
double measure_sgemm_gflops(int n = 512, int reps = 3);

// train.precision = bf16/fp16 on oneDNN: oneDNN's OpenMP threads take the budget and
// OpenBLAS (left with the router's small fp32 GEMMs) runs on 1 thread. OpenBLAS's idle
// threads spin in sched_yield after each call, and on 2 cores they took the cores
// oneDNN worked on (a 2-thread bf16 step ran 1.3x slower than 1-thread, measured).
void give_blas_threads_to_onednn();

// Number of threads OpenBLAS uses; set it (e.g. to 1 when running one MPI rank per core).
int blas_threads();
void set_blas_threads(int n);

// --- Threads per rank (BLAS and Kokkos) -------------------------------------------

// How many threads one rank runs, and why (for the banner). Kokkos' threads and
// BLAS's run one after the other (a GEMM is called between kernels, never inside
// one), so each may use the rank's whole share of the CPUs.
struct ThreadChoice {
  int threads = 1;
  std::string source;  // "OPENBLAS_NUM_THREADS", "CPU affinity: 4 CPUs / 2 ranks", ...
  std::string error;   // non-empty: a thread variable is not a positive integer (exit 2)
};
// The user's variables first: `first_env` (OPENBLAS_NUM_THREADS for BLAS, null for
// Kokkos), else OMP_NUM_THREADS (its first entry), each null or empty when unset.
// Without them, the CPUs this process may run on (`affinity_cpus`, e.g. a Slurm
// cpuset) divided among the `ranks_sharing` ranks of the node that may run on the
// same CPUs. Either way at most that share, so that ranks x threads never exceed the
// cores the ranks own; at least 1.
ThreadChoice choose_threads(const char* first_env, const char* omp_env, int affinity_cpus,
                            int ranks_sharing);
// Sets the count and remembers its source for blas_threads_source().
void set_blas_threads(const ThreadChoice& choice);
// The source of the last set_blas_threads(choice); "OpenBLAS default" before any.
std::string blas_threads_source();

}  // namespace furnace::kernels
