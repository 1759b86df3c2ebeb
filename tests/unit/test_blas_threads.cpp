// BLAS threads per rank: the pure decision from (thread variables, CPU affinity count,
// ranks sharing those CPUs). Issue 7: a user's OPENBLAS_NUM_THREADS was overridden,
// and the count came from hardware_concurrency, not from the CPUs the job may use.
#include <gtest/gtest.h>

#include "kernels/blas_runtime.hpp"

using furnace::kernels::choose_threads;

TEST(BlasThreads, FollowTheUsersVariablesFirst) {
  auto c = choose_threads("2", "4", 8, 1);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.source, "OPENBLAS_NUM_THREADS");
  c = choose_threads(nullptr, "3", 8, 2);
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.source, "OMP_NUM_THREADS");
  c = choose_threads("", "2,1", 8, 1);  // empty is unset; a per-level list: its first entry
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.source, "OMP_NUM_THREADS");
  EXPECT_TRUE(c.error.empty());
}

TEST(BlasThreads, OtherwiseTheAffinityShare) {
  auto c = choose_threads(nullptr, nullptr, 1, 1);  // taskset -c 0
  EXPECT_EQ(c.threads, 1);
  EXPECT_EQ(c.source, "CPU affinity: 1 CPU");
  c = choose_threads(nullptr, nullptr, 16, 4);  // a 16-CPU cpuset shared by 4 ranks
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.source, "CPU affinity: 16 CPUs / 4 ranks");
  c = choose_threads(nullptr, "", 6, 4);  // not a multiple: round down
  EXPECT_EQ(c.threads, 1);
  c = choose_threads(nullptr, nullptr, 2, 8);  // more ranks than CPUs: still one thread
  EXPECT_EQ(c.threads, 1);
  c = choose_threads(nullptr, nullptr, 0, 0);  // unknown affinity
  EXPECT_EQ(c.threads, 1);
}

TEST(BlasThreads, NeverMoreThanTheCoresARankOwns) {
  // ranks x threads <= cores: a variable asking for more is capped, and says so.
  auto c = choose_threads("8", nullptr, 4, 2);
  EXPECT_EQ(c.threads, 2);
  EXPECT_NE(c.source.find("OPENBLAS_NUM_THREADS=8 capped"), std::string::npos) << c.source;
  EXPECT_NE(c.source.find("4 CPUs / 2 ranks"), std::string::npos) << c.source;
  c = choose_threads(nullptr, "16", 1, 1);
  EXPECT_EQ(c.threads, 1);
  EXPECT_NE(c.source.find("OMP_NUM_THREADS=16 capped"), std::string::npos) << c.source;
}

TEST(BlasThreads, ABadVariableIsAnError) {
  for (const char* bad : {"0", "-1", "two", "2x", " 2", "99999999"}) {
    const auto c = choose_threads(bad, nullptr, 4, 1);
    EXPECT_NE(c.error.find("OPENBLAS_NUM_THREADS is set but is not a positive integer"), std::string::npos)
        << "'" << bad << "': " << c.error;
  }
  EXPECT_NE(choose_threads(nullptr, "x", 4, 1).error.find("OMP_NUM_THREADS"), std::string::npos);
}
