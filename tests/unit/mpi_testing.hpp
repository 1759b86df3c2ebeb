// Helpers for the MPI tests (run at -n 1, 2 and 4): rank and size of the world, and
// a fixture giving every test a fresh scratch directory chosen by rank 0 and shared
// with every rank.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

namespace furnace::testing {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

class MpiScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name;
    if (world_rank() == 0) {
      const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
      const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
      name = "/tmp/furnace_mpitest_" + std::to_string(getpid()) + "_" + std::to_string(now) + "_" +
             info->name();
      std::filesystem::remove_all(name);
      std::filesystem::create_directories(name);
    }
    int len = int(name.size());
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    name.resize(std::size_t(len));
    MPI_Bcast(name.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    dir_ = name;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);  // nobody still has a file open
    if (world_rank() == 0) std::filesystem::remove_all(dir_);
  }
  std::string dir() const { return dir_.string(); }

  std::filesystem::path dir_;
};

}  // namespace furnace::testing
