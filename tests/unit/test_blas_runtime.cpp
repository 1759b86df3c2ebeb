// OpenBLAS core ladder, validation and runtime queries. The re-exec itself is not
// exercised here (it would restart the test binary); the decision it acts on is the
// pure function choose_blas_core, tested for every policy case on made-up CPUs.
#include "kernels/blas_runtime.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

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

// Sets an environment variable for one scope and restores the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Each case must return (a bug here would restart the test binary, not hang it: the
// exec sets the guard, so the restarted run returns and the suite runs once more).
TEST(BlasRuntime, SelectReturnsWithoutExecWhenTheUserChoseOrAlreadyReexeced) {
  char arg0[] = "furnace_tests";
  char* argv[] = {arg0, nullptr};
  {  // after our own re-exec nothing is checked again, not even an invalid name
    ScopedEnv guard("FURNACE_BLAS_REEXEC", "1"), core("FURNACE_BLAS_CORE", "NOSUCHCORE");
    select_blas_core_or_reexec(1, argv);
  }
  {
    ScopedEnv guard("FURNACE_BLAS_REEXEC", nullptr), core("FURNACE_BLAS_CORE", "native");
    select_blas_core_or_reexec(1, argv);
  }
  {  // OPENBLAS_CORETYPE is the user's direct choice; a valid FURNACE_BLAS_CORE is moot
    ScopedEnv guard("FURNACE_BLAS_REEXEC", nullptr), ot("OPENBLAS_CORETYPE", "PRESCOTT"),
        core("FURNACE_BLAS_CORE", detect_blas_core().c_str());
    if (!detect_blas_core().empty()) select_blas_core_or_reexec(1, argv);
  }
  // Asking for the core already in use needs no exec.
  if (core_rank(blas_core_in_use()) >= 0) {
    ScopedEnv guard("FURNACE_BLAS_REEXEC", nullptr), ot("OPENBLAS_CORETYPE", nullptr),
        core("FURNACE_BLAS_CORE", blas_core_in_use().c_str());
    select_blas_core_or_reexec(1, argv);
  }
  SUCCEED();
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
