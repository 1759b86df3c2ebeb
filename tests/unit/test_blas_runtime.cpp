// OpenBLAS core ladder, validation and runtime queries: the decision as the pure
// function choose_blas_core, for every policy case on made-up CPUs, and the re-exec
// itself in child processes of this binary (see run_child).
#include "kernels/blas_runtime.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace furnace::kernels {
namespace {

// Made-up CPUs, weakest to strongest.
constexpr CpuFeatures kArm{};
constexpr CpuFeatures kSse{true, false, false, false};
constexpr CpuFeatures kSandy{true, true, false, false};
constexpr CpuFeatures kHaswell{true, true, true, false};
constexpr CpuFeatures kSkylakeX{true, true, true, true};

TEST(BlasLadder, RanksAreCaseInsensitiveAndOffLadderIsMinusOne) {
  for (const char* sse : {"PRESCOTT", "Core2", "penryn", "DUNNINGTON", "Nehalem", "ATOM"})
    EXPECT_EQ(core_rank(sse), 0) << sse;
  EXPECT_EQ(core_rank("SandyBridge"), 1);
  EXPECT_EQ(core_rank("Haswell"), 2);
  EXPECT_EQ(core_rank("SkylakeX"), 3);
  for (const char* off : {"Zen", "Cooperlake", "SapphireRapids", "", "native", "SKYLAKE"})
    EXPECT_EQ(core_rank(off), -1) << off;
}

TEST(BlasLadder, MissingFeaturesNameWhatTheCoreNeeds) {
  EXPECT_EQ(missing_features("SKYLAKEX", kHaswell), "AVX-512F/BW/DQ/VL");
  EXPECT_EQ(missing_features("skylakex", kSse), "AVX-512F/BW/DQ/VL");
  EXPECT_EQ(missing_features("HASWELL", kSandy), "AVX2 and FMA");
  EXPECT_EQ(missing_features("SANDYBRIDGE", kSse), "AVX");
  EXPECT_EQ(missing_features("PRESCOTT", kArm), "an x86-64 CPU");
  EXPECT_EQ(missing_features("SKYLAKEX", kSkylakeX), "");
  EXPECT_EQ(missing_features("Zen", kSse), "");  // off the ladder: nothing we know of
}

TEST(BlasLadder, CanRunExactlyTheRungsTheFeaturesAllow) {
  EXPECT_TRUE(cpu_can_run("PRESCOTT", kSse));
  EXPECT_FALSE(cpu_can_run("SANDYBRIDGE", kSse));
  EXPECT_TRUE(cpu_can_run("SANDYBRIDGE", kHaswell));
  EXPECT_TRUE(cpu_can_run("HASWELL", kHaswell));
  EXPECT_FALSE(cpu_can_run("SKYLAKEX", kHaswell));
  EXPECT_TRUE(cpu_can_run("SKYLAKEX", kSkylakeX));
  EXPECT_FALSE(cpu_can_run("PRESCOTT", kArm));
  EXPECT_FALSE(cpu_can_run("Zen", kSkylakeX));  // unknown names are never "runnable"
}

TEST(BlasLadder, BestCoreAndRunnableList) {
  EXPECT_EQ(best_core(kArm), "");
  EXPECT_EQ(best_core(kSse), "PRESCOTT");
  EXPECT_EQ(best_core(kSandy), "SANDYBRIDGE");
  EXPECT_EQ(best_core(kHaswell), "HASWELL");
  EXPECT_EQ(best_core(kSkylakeX), "SKYLAKEX");
  EXPECT_TRUE(runnable_cores(kArm).empty());
  const auto list = runnable_cores(kHaswell);
  ASSERT_GE(list.size(), 3u);
  EXPECT_EQ(list[0], "HASWELL");
  EXPECT_EQ(list[1], "SANDYBRIDGE");
  for (const auto& name : list) EXPECT_TRUE(cpu_can_run(name, kHaswell)) << name;
}

TEST(BlasChoice, AutomaticOnlyClimbsTheLadder) {
  // OpenBLAS picked a weaker ladder core: move up to the best one.
  EXPECT_EQ(choose_blas_core(nullptr, "Prescott", kSkylakeX).reexec_with, "SKYLAKEX");
  EXPECT_EQ(choose_blas_core("", "Sandybridge", kHaswell).reexec_with, "HASWELL");
  EXPECT_EQ(choose_blas_core(nullptr, "Haswell", kSkylakeX).reexec_with, "SKYLAKEX");
  // Already the best, or better than we detect: keep.
  EXPECT_EQ(choose_blas_core(nullptr, "SkylakeX", kSkylakeX).reexec_with, "");
  EXPECT_EQ(choose_blas_core(nullptr, "Haswell", kSandy).reexec_with, "");
  EXPECT_EQ(choose_blas_core(nullptr, "Core2", kSse).reexec_with, "");
  // Off the ladder: OpenBLAS knows this CPU better than we do; keep.
  for (const char* own : {"Zen", "Cooperlake", "SapphireRapids", ""}) {
    const auto c = choose_blas_core(nullptr, own, kSkylakeX);
    EXPECT_EQ(c.reexec_with, "") << own;
    EXPECT_EQ(c.error, "") << own;
  }
  // Not x86: nothing to detect.
  EXPECT_EQ(choose_blas_core(nullptr, "ARMV8", kArm).reexec_with, "");
}

TEST(BlasChoice, UserChoiceIsValidatedThenWins) {
  EXPECT_EQ(choose_blas_core("native", "Prescott", kSkylakeX).reexec_with, "");
  EXPECT_EQ(choose_blas_core("NATIVE", "Prescott", kSkylakeX).error, "");
  // A valid explicit choice wins, even a weaker one, and is passed on upper-case.
  EXPECT_EQ(choose_blas_core("haswell", "SkylakeX", kSkylakeX).reexec_with, "HASWELL");
  EXPECT_EQ(choose_blas_core("PRESCOTT", "Cooperlake", kSkylakeX).reexec_with, "PRESCOTT");
  EXPECT_EQ(choose_blas_core("SkylakeX", "SkylakeX", kSkylakeX).reexec_with, "");  // in use
}

TEST(BlasChoice, UserChoiceTheCpuCannotRunIsAnError) {
  const auto c = choose_blas_core("SKYLAKEX", "Haswell", kHaswell);
  EXPECT_EQ(c.reexec_with, "");
  EXPECT_EQ(c.error,
            "furnace: FURNACE_BLAS_CORE=SKYLAKEX needs AVX-512F/BW/DQ/VL, which this CPU lacks; "
            "unset it or choose one of: HASWELL, SANDYBRIDGE, PRESCOTT, CORE2, PENRYN, "
            "DUNNINGTON, NEHALEM, ATOM, native");
  EXPECT_NE(choose_blas_core("Haswell", "Prescott", kSandy).error.find("needs AVX2 and FMA"),
            std::string::npos);
  EXPECT_NE(choose_blas_core("SANDYBRIDGE", "Prescott", kSse).error.find("needs AVX,"),
            std::string::npos);
}

TEST(BlasChoice, UnknownNameIsAnErrorListingTheChoices) {
  const auto c = choose_blas_core("Zen", "Prescott", kSandy);
  EXPECT_EQ(c.reexec_with, "");
  EXPECT_EQ(c.error,
            "furnace: FURNACE_BLAS_CORE=Zen is not a core furnace knows; unset it or choose "
            "one of: SANDYBRIDGE, PRESCOTT, CORE2, PENRYN, DUNNINGTON, NEHALEM, ATOM, native");
  EXPECT_EQ(choose_blas_core("x", "", kArm).error,
            "furnace: FURNACE_BLAS_CORE=x is not a core furnace knows; unset it or choose one "
            "of: native");
}

#if defined(__x86_64__) || defined(__i386__)
TEST(BlasRuntime, DetectedCoreIsConsistentWithCpuFlags) {
  __builtin_cpu_init();
  const bool avx = __builtin_cpu_supports("avx");
  const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  const std::string core = detect_blas_core();
  // Never a core whose instructions the CPU lacks (that would be SIGILL), and never a
  // weaker one than the flags allow (GCC's flags include OS support).
  const char* best = avx512 && avx2_fma && avx ? "SKYLAKEX"
                     : avx2_fma && avx         ? "HASWELL"
                     : avx                     ? "SANDYBRIDGE"
                                               : "PRESCOTT";
  EXPECT_EQ(core, best);
  EXPECT_TRUE(cpu_can_run(core));
}
#endif

// --- select_blas_core_or_reexec, for real, in a child process ----------------------
// The test binary starts itself again (posix_spawn of /proc/self/exe) with a chosen
// environment; child_hook() below runs in that child before main() (before MPI and
// gtest), calls select_blas_core_or_reexec like furnace's main() does, and reports
// what happened: "returned" when the call came back, "reexeced" when it ran again
// after an exec (same pid), with the core OpenBLAS then runs and the two variables.
constexpr const char* kReport = "FURNACE_BLAS_TEST_REPORT";      // the child writes here
constexpr const char* kStage = "FURNACE_BLAS_TEST_STAGE";        // "selecting" across the exec
constexpr const char* kDropCore = "FURNACE_BLAS_TEST_DROP_CORETYPE";  // unset it before selecting

void report(const char* path, const char* stage) {
  auto env = [](const char* name) { const char* v = std::getenv(name); return v ? v : "-"; };
  if (std::FILE* f = std::fopen(path, "w")) {
    std::fprintf(f, "%s %d %s %s %s %s\n", stage, int(getpid()), blas_core_in_use().c_str(),
                 env("OPENBLAS_CORETYPE"), env("FURNACE_BLAS_REEXEC"), env("OMP_WAIT_POLICY"));
    std::fclose(f);
  }
}

bool child_hook() {
  const char* path = std::getenv(kReport);
  if (path == nullptr) return false;  // the normal test run
  if (const char* stage = std::getenv(kStage); stage && std::string(stage) == "selecting") {
    report(path, "reexeced");
    _exit(0);
  }
  setenv(kStage, "selecting", 1);
  // OpenBLAS read OPENBLAS_CORETYPE when it loaded; dropping it now makes the
  // automatic choice see a core OpenBLAS "picked" by itself.
  if (std::getenv(kDropCore)) unsetenv("OPENBLAS_CORETYPE");
  char arg0[] = "furnace_tests";
  char* argv[] = {arg0, nullptr};
  select_blas_core_or_reexec(1, argv);
  report(path, "returned");
  _exit(0);
}
const bool kIsChild = child_hook();

struct ChildRun {
  int status = -1;        // waitpid status
  pid_t pid = -1;         // of the spawned child
  std::string stage, core, coretype, guard, wait_policy, output;
  bool same_pid = false;  // the report came from the spawned pid (an exec keeps it)
};

// Runs the child with exactly these settings of the variables select reads (the
// outer environment's, e.g. a site's OPENBLAS_CORETYPE, are dropped). OMP_WAIT_POLICY
// is passive unless `vars` name it ("" for unset), so that on an OpenMP build the BLAS
// cases are not re-executed for the wait policy.
ChildRun run_child(std::vector<std::pair<std::string, std::string>> vars) {
  static int counter = 0;
  const std::string base = "/tmp/furnace_blas_child_" + std::to_string(getpid()) + "_" +
                           std::to_string(counter++);
  const std::string report_path = base + ".report", output_path = base + ".out";
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind("OPENBLAS_CORETYPE=", 0) != 0 && kv.rfind("FURNACE_BLAS_", 0) != 0 &&
        kv.rfind("OMP_WAIT_POLICY=", 0) != 0 && kv.rfind("FURNACE_OMP_", 0) != 0)
      env.push_back(kv);
  }
  if (std::none_of(vars.begin(), vars.end(), [](const auto& kv) { return kv.first == "OMP_WAIT_POLICY"; }))
    vars.emplace_back("OMP_WAIT_POLICY", "passive");
  vars.emplace_back(kReport, report_path);
  for (const auto& [k, v] : vars)
    if (!(k == "OMP_WAIT_POLICY" && v.empty())) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& kv : env) envp.push_back(kv.data());
  envp.push_back(nullptr);
  char arg0[] = "furnace_tests";
  char* argv[] = {arg0, nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  ChildRun r;
  const int err = posix_spawn(&r.pid, "/proc/self/exe", &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    ADD_FAILURE() << "posix_spawn: " << std::strerror(err);
    return r;
  }
  waitpid(r.pid, &r.status, 0);
  std::ifstream rep(report_path);
  int pid = -1;
  rep >> r.stage >> pid >> r.core >> r.coretype >> r.guard >> r.wait_policy;
  r.same_pid = pid == int(r.pid);
  std::ifstream out(output_path);
  r.output.assign(std::istreambuf_iterator<char>(out), {});
  std::remove(report_path.c_str());
  std::remove(output_path.c_str());
  return r;
}

bool exited_with(const ChildRun& r, int code) { return WIFEXITED(r.status) && WEXITSTATUS(r.status) == code; }

// Case-insensitive core names ("Prescott" from OpenBLAS, "PRESCOTT" from us).
std::string up(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST(BlasReexec, ExplicitCoreReexecsOnceKeepingThePidAndOpenBlasRunsIt) {
  // OpenBLAS loads with the strongest core this CPU runs; the user asks for the
  // weakest (an SSE core, which OpenBLAS never refuses), so the request needs an exec.
  const auto cores = runnable_cores(cpu_features());
  if (cores.size() < 2) GTEST_SKIP() << "not an x86 CPU: no ladder core to request";
  const std::string want = cores.back();
  const ChildRun r = run_child({{"OPENBLAS_CORETYPE", cores.front()}, {kDropCore, "1"}, {"FURNACE_BLAS_CORE", want}});
  ASSERT_TRUE(exited_with(r, 0)) << r.output;
  EXPECT_EQ(r.stage, "reexeced") << r.output;
  EXPECT_TRUE(r.same_pid) << "exec must keep the process id (mpiexec/srun track it)";
  EXPECT_EQ(up(r.core), want);
  EXPECT_EQ(r.coretype, want);
  EXPECT_EQ(r.guard, "1");
}

TEST(BlasReexec, AutomaticChoiceClimbsFromAWeakerLadderCore) {
  const std::string best = best_core(cpu_features());
  if (core_rank(best) <= 0) GTEST_SKIP() << "this CPU runs no core above the SSE rung";
  // OpenBLAS "picked" PRESCOTT (loaded with it, variable then dropped): the automatic
  // choice must re-exec with the best core. OpenBLAS may still fall back to a lower
  // core it trusts more (it does for SKYLAKEX on some AMD CPUs), so the core that runs
  // is checked to be above PRESCOTT, not equal to the request.
  const ChildRun r = run_child({{"OPENBLAS_CORETYPE", "PRESCOTT"}, {kDropCore, "1"}});
  ASSERT_TRUE(exited_with(r, 0)) << r.output;
  EXPECT_EQ(r.stage, "reexeced") << r.output;
  EXPECT_TRUE(r.same_pid);
  EXPECT_EQ(r.coretype, best);
  EXPECT_GT(core_rank(r.core), 0) << r.core;
}

TEST(BlasReexec, ReturnsWithoutExecWhenTheUserChoseOrAlreadyReexeced) {
  const std::string best = best_core(cpu_features());
  // After our own re-exec nothing is checked again, not even an invalid name.
  ChildRun r = run_child({{"FURNACE_BLAS_REEXEC", "1"}, {"FURNACE_BLAS_CORE", "NOSUCHCORE"}});
  EXPECT_TRUE(exited_with(r, 0)) << r.output;
  EXPECT_EQ(r.stage, "returned") << r.output;
  // native: OpenBLAS's own choice stays.
  r = run_child({{"FURNACE_BLAS_CORE", "native"}, {"OPENBLAS_CORETYPE", "PRESCOTT"}, {kDropCore, "1"}});
  EXPECT_EQ(r.stage, "returned") << r.output;
  EXPECT_EQ(up(r.core), "PRESCOTT");
  // OPENBLAS_CORETYPE is the user's direct choice; a valid FURNACE_BLAS_CORE is moot.
  if (!best.empty()) {
    r = run_child({{"OPENBLAS_CORETYPE", "PRESCOTT"}, {"FURNACE_BLAS_CORE", best}});
    EXPECT_EQ(r.stage, "returned") << r.output;
    EXPECT_EQ(up(r.core), "PRESCOTT");
    EXPECT_EQ(r.guard, "-");
    // Asking for the core already in use needs no exec.
    r = run_child({{"OPENBLAS_CORETYPE", "PRESCOTT"}, {kDropCore, "1"}, {"FURNACE_BLAS_CORE", "prescott"}});
    EXPECT_EQ(r.stage, "returned") << r.output;
    EXPECT_EQ(r.guard, "-");
  }
}

TEST(BlasReexec, OpenMpBuildsGetAPassiveWaitPolicyUnlessTheUserSetOne) {
  // OPENBLAS_CORETYPE is the user's: the BLAS core needs no exec; only the wait policy may.
  ChildRun r = run_child({{"OPENBLAS_CORETYPE", "PRESCOTT"}, {"OMP_WAIT_POLICY", ""}});
  ASSERT_TRUE(exited_with(r, 0)) << r.output;
  if (openmp_wait_policy_source().empty()) {  // a Serial build: nothing to set, no exec
    EXPECT_EQ(r.stage, "returned") << r.output;
    EXPECT_EQ(r.wait_policy, "-");
  } else {  // libgomp reads it at load: set, and re-executed once, same pid
    EXPECT_EQ(r.stage, "reexeced") << r.output;
    EXPECT_TRUE(r.same_pid);
    EXPECT_EQ(r.wait_policy, "passive");
    EXPECT_EQ(up(r.core), "PRESCOTT");  // the user's core kept
  }
  // The user's policy wins, on every build.
  r = run_child({{"OPENBLAS_CORETYPE", "PRESCOTT"}, {"OMP_WAIT_POLICY", "active"}});
  EXPECT_EQ(r.stage, "returned") << r.output;
  EXPECT_EQ(r.wait_policy, "active");
}

TEST(BlasReexec, InvalidChoiceExitsWithCode2AndOneLine) {
  const ChildRun r = run_child({{"FURNACE_BLAS_CORE", "NOSUCHCORE"}});
  EXPECT_TRUE(exited_with(r, 2)) << r.status << ": " << r.output;
  EXPECT_EQ(r.stage, "") << "the child went on after an invalid FURNACE_BLAS_CORE";
  EXPECT_EQ(r.output.rfind("furnace: FURNACE_BLAS_CORE=NOSUCHCORE is not a core furnace knows", 0), 0u)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST(BlasRuntime, ReportsCoreConfigAndRate) {
  EXPECT_FALSE(blas_core_in_use().empty());
  EXPECT_FALSE(blas_config().empty());
  EXPECT_GT(measure_sgemm_gflops(128, 2), 0.0);
}

TEST(BlasRuntime, ThreadCountRoundTrips) {
  const int before = blas_threads();
  EXPECT_GE(before, 1);
  set_blas_threads(1);
  EXPECT_EQ(blas_threads(), 1);
  set_blas_threads(before);
  EXPECT_EQ(blas_threads(), before);
}

}  // namespace
}  // namespace furnace::kernels
