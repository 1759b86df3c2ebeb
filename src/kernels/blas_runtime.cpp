// OpenBLAS core selection and introspection (see blas_runtime.hpp for why re-exec).
#include "kernels/blas_runtime.hpp"

#include "kernels/gemm.hpp"

#include <Kokkos_Macros.hpp>
#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <tuple>

namespace furnace::kernels {
namespace {

// The ladder, strongest first. Within one rank the cores are interchangeable for us
// (all SSE-only kernels, far slower than any AVX core).
struct Rung {
  const char* name;
  int rank;
};
constexpr Rung kLadder[] = {
    {"SKYLAKEX", 3}, {"HASWELL", 2}, {"SANDYBRIDGE", 1}, {"PRESCOTT", 0}, {"CORE2", 0},
    {"PENRYN", 0},   {"DUNNINGTON", 0}, {"NEHALEM", 0},  {"ATOM", 0},
};

// What each rank needs beyond the ranks below it, in words for the error message.
constexpr const char* kNeeds[] = {"an x86-64 CPU", "AVX", "AVX2 and FMA", "AVX-512F/BW/DQ/VL"};

bool rank_supported(int rank, const CpuFeatures& cpu) {
  const bool have[] = {cpu.x86, cpu.avx, cpu.avx2_fma, cpu.avx512};
  return rank >= 0 && have[rank];
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
  });
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string choices(const CpuFeatures& cpu) {
  std::string out;
  for (const auto& name : runnable_cores(cpu)) out += name + ", ";
  return out + "native";
}

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register state the OS saves on a context switch. A CPU flag alone is not
// enough: if the kernel (or hypervisor) does not save ZMM state, AVX-512 code faults.
// GCC's __builtin_cpu_supports already folds this in; checking again costs nothing and
// keeps us safe with compilers that do not.
unsigned long long xcr0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
bool os_saves(unsigned long long mask) {
  // xgetbv itself is only legal when the OS enabled XSAVE (OSXSAVE), which any OS that
  // reports AVX has done; callers only ask after __builtin_cpu_supports("avx").
  return (xcr0() & mask) == mask;
}
constexpr unsigned long long kYmmState = 0x6;   // SSE + AVX upper halves
constexpr unsigned long long kZmmState = 0xe6;  // plus opmask, ZMM0-15 upper, ZMM16-31
#endif

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

}  // namespace

int core_rank(std::string_view name) {
  for (const auto& rung : kLadder)
    if (iequals(name, rung.name)) return rung.rank;
  return -1;
}

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.x86 = true;
  f.avx = __builtin_cpu_supports("avx") && os_saves(kYmmState);
  f.avx2_fma = f.avx && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && os_saves(kZmmState);
#endif
  return f;
}

std::string missing_features(std::string_view core, const CpuFeatures& cpu) {
  const int rank = core_rank(core);
  if (rank < 0) return "";
  // A core also uses everything its lower rungs need (SKYLAKEX kernels use AVX2 too).
  for (int r = 0; r <= rank; ++r)
    if (!rank_supported(r, cpu)) return kNeeds[rank];
  return "";
}

bool cpu_can_run(std::string_view core, const CpuFeatures& cpu) {
  return core_rank(core) >= 0 && missing_features(core, cpu).empty();
}

std::string best_core(const CpuFeatures& cpu) {
  for (const auto& rung : kLadder)
    if (cpu_can_run(rung.name, cpu)) return rung.name;
  return "";
}

std::vector<std::string> runnable_cores(const CpuFeatures& cpu) {
  std::vector<std::string> out;
  for (const auto& rung : kLadder)
    if (cpu_can_run(rung.name, cpu)) out.push_back(rung.name);
  return out;
}

BlasCoreChoice choose_blas_core(const char* requested, std::string_view in_use,
                                const CpuFeatures& cpu) {
  const std::string_view req = requested != nullptr ? requested : "";
  if (!req.empty()) {  // the user's choice, validated, wins even if it is weaker
    if (iequals(req, "native")) return {};
    const std::string prefix = "furnace: FURNACE_BLAS_CORE=" + std::string(req);
    const std::string suffix = "; unset it or choose one of: " + choices(cpu);
    if (core_rank(req) < 0) return {"", prefix + " is not a core furnace knows" + suffix};
    if (const auto lacks = missing_features(req, cpu); !lacks.empty())
      return {"", prefix + " needs " + lacks + ", which this CPU lacks" + suffix};
    if (iequals(req, in_use)) return {};
    return {upper(req), ""};
  }
  // Automatic: only climb the ladder. A core OpenBLAS chose off the ladder is kept.
  const std::string best = best_core(cpu);
  const int have = core_rank(in_use), want = core_rank(best);
  if (have < 0 || want <= have) return {};
  return {best, ""};
}

std::string detect_blas_core() { return best_core(cpu_features()); }

// Every build runs OpenMP threads: Kokkos's on the OpenMP backend, and oneDNN's (the
// 16-bit GEMMs) on libgomp in any build.
std::string openmp_wait_policy_source() {
  const char* set = std::getenv("FURNACE_OMP_WAIT_POLICY_SET");
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (set && policy) return std::string(policy) + " (set by furnace)";
  return policy ? std::string(policy) + " (OMP_WAIT_POLICY)" : "active (libgomp default)";
}

void select_blas_core_or_reexec(int argc, char** argv) {
  // The guard makes a second exec impossible even if OpenBLAS ignores our choice.
  if (env_set("FURNACE_BLAS_REEXEC")) return;
  const BlasCoreChoice choice =
      choose_blas_core(std::getenv("FURNACE_BLAS_CORE"), blas_core_in_use(), cpu_features());
  if (!choice.error.empty()) {
    std::fprintf(stderr, "%s\n", choice.error.c_str());
    std::exit(2);
  }
  // OPENBLAS_CORETYPE set by the user is their direct choice; OpenBLAS already used it.
  const bool core = !env_set("OPENBLAS_CORETYPE") && !choice.reexec_with.empty();
  // The user's OMP_WAIT_POLICY wins.
  const bool wait_policy = !env_set("OMP_WAIT_POLICY");
  if (!core && !wait_policy) return;

  if (core) setenv("OPENBLAS_CORETYPE", choice.reexec_with.c_str(), 1);
  if (wait_policy) setenv("OMP_WAIT_POLICY", "passive", 1), setenv("FURNACE_OMP_WAIT_POLICY_SET", "1", 1);
  setenv("FURNACE_BLAS_REEXEC", "1", 1);
  // exec keeps the PID, environment and open descriptors, so under mpiexec (hydra) the
  // PMI connection survives; this runs before MPI_Init, so no MPI state is lost.
  // Exec the resolved path, not /proc/self/exe itself, so that ps, top and pgrep
  // still show the program as "furnace".
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  execv(ec ? "/proc/self/exe" : self.c_str(), argv);
  std::fprintf(stderr, "furnace: warning: could not re-exec to select OpenBLAS core %s and OpenMP's wait policy (%s); "
               "continuing with core %s\n", core ? choice.reexec_with.c_str() : "(as is)", std::strerror(errno),
               blas_core_in_use().c_str());
}

std::string blas_core_in_use() { return openblas_get_corename(); }
std::string blas_config() { return openblas_get_config(); }

double measure_sgemm_gflops(int n, int reps) {
  std::vector<float> a(std::size_t(n) * n, 1.0f), b(a.size(), 0.5f), c(a.size(), 0.0f);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n,
                b.data(), n, 0.0f, c.data(), n);
  };
  run();  // warm-up: thread pool start, page faults, caches
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * n / best * 1e-9;
}

int blas_threads() { return openblas_get_num_threads(); }
// oneDNN (the 16-bit GEMMs, a plugin loaded on first use) takes the same budget as it
// loads, since the two never run at once (gemm16.cpp).
void set_blas_threads(int n) { openblas_set_num_threads(n); }

namespace {

std::string& threads_source() {
  static std::string source = "OpenBLAS default";
  return source;
}

// A positive thread count: the whole of `text` (up to a ',' for OMP_NUM_THREADS's
// per-level list), digits only; 0 when it is anything else.
int parse_threads(std::string_view text, bool list) {
  if (list) text = text.substr(0, text.find(','));
  int n = 0;
  if (text.empty() || text.size() > 6) return 0;
  for (char c : text) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + (c - '0');
  }
  return n;
}

}  // namespace

ThreadChoice choose_threads(const char* first_env, const char* omp_env, int affinity_cpus,
                            int ranks_sharing) {
  const int cpus = std::max(1, affinity_cpus), sharing = std::max(1, ranks_sharing);
  const int share = std::max(1, cpus / sharing);
  const std::string cores = std::to_string(cpus) + (cpus == 1 ? " CPU" : " CPUs") +
                            (sharing > 1 ? " / " + std::to_string(sharing) + " ranks" : "");
  for (const auto& [name, value, list] : {std::tuple{"OPENBLAS_NUM_THREADS", first_env, false},
                                          std::tuple{"OMP_NUM_THREADS", omp_env, true}}) {
    if (!value || !*value) continue;
    const int n = parse_threads(value, list);
    if (n < 1)
      return {1, name, std::string(name) + " is set but is not a positive integer; set it to the threads per rank "
                                           "(e.g. 1) or unset it"};
    if (n <= share) return {n, name, ""};
    return {share, std::string(name) + "=" + std::to_string(n) + " capped to the CPU affinity: " + cores, ""};
  }
  return {share, "CPU affinity: " + cores, ""};
}

void set_blas_threads(const ThreadChoice& choice) {
  set_blas_threads(choice.threads);
  threads_source() = choice.source;
}

std::string blas_threads_source() { return threads_source(); }

void give_blas_threads_to_onednn() {
  const int n = blas_threads();
  set_gemm16_threads(n);
  openblas_set_num_threads(1);
  threads_source() = "the budget of " + std::to_string(n) + " goes to oneDNN's 16-bit GEMMs (" + threads_source() + ")";
}

}  // namespace furnace::kernels
