// The checks made before a run is built (src/app/setup_check): run directories, the
// memory estimate against what the model really allocates, the refusal when it does
// not fit, and allocation failures turned into one-line configuration errors.
#include "app/setup_check.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <Kokkos_Core.hpp>
#include <filesystem>
#include <fstream>

#include "comm/groups.hpp"
#include "memory/arena.hpp"
#include "memory/state_store.hpp"
#include "model/gpt.hpp"

using namespace furnace;
namespace fs = std::filesystem;

namespace {

class SetupCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path("/tmp") / ("furnace_setup_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

void expect_contains(const std::string& msg, const std::vector<std::string>& needles) {
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

}  // namespace

TEST_F(SetupCheckTest, RunDirectories) {
  const std::string file = (dir_ / "file").string();
  std::ofstream(file) << "x";
  expect_contains(app::make_run_dir("output.dir", file), {"output.dir", file, "existing file, not a directory"});
  expect_contains(app::make_run_dir("checkpoint.dir", file + "/sub"), {"checkpoint.dir", file, "not a directory"});
  const std::string long_path = (dir_ / std::string(5000, 'a')).string();
  expect_contains(app::make_run_dir("output.dir", long_path), {"output.dir", "bytes long", "PATH_MAX"});
  const std::string long_name = (dir_ / std::string(300, 'b') / "x").string();
  expect_contains(app::make_run_dir("output.dir", long_name), {"output.dir", "300-byte component", "NAME_MAX"});
  EXPECT_LT(app::make_run_dir("output.dir", long_path).size(), 600u);  // the path is quoted in part
  // A fine directory is made, nested, and accepted again once it exists.
  const std::string ok = (dir_ / "runs" / "a").string();
  EXPECT_EQ(app::make_run_dir("output.dir", ok), "");
  EXPECT_TRUE(fs::is_directory(ok));
  EXPECT_EQ(app::make_run_dir("output.dir", ok), "");
}

// The refusal names the tier, the bytes per category and advice for the largest.
TEST(SetupCheck, MemoryProblemNamesTheTierAndTheKeys) {
  using memory::Category;
  using memory::Tier;
  io::Config c;
  memory::Ledger big_activations;
  big_activations.add(Category::Parameters, Tier::Device, "p", 1ull << 20);
  big_activations.add(Category::Activations, Tier::Device, "a", 10ull << 30);
  const std::string msg = app::memory_problem(c, big_activations, {1e9, "MemAvailable 1.0 GiB"});
  expect_contains(msg, {"needs 10.00 GiB", "MemAvailable 1.0 GiB", "activations 10.00 GiB", "parameters 1.0 MiB",
                        "memory.recompute", "--dry-run"});
  EXPECT_EQ(app::memory_problem(c, big_activations, {20e9, "test"}), "");
  // A budget refuses what the machine would hold, and names its key.
  memory::Ledger big_state;
  big_state.add(Category::Optimizer, Tier::Device, "m", 2ull << 30);
  c.memory.device_budget_gb = 1.5;
  expect_contains(app::memory_problem(c, big_state, {1e12, "test"}),
                  {"device tier needs 2.00 GiB", "memory.device_budget_gb = 1.5 GiB", "optimizer 2.00 GiB", "parallel.ep"});
  c.memory.device_budget_gb = 2.5;
  EXPECT_EQ(app::memory_problem(c, big_state, {1e12, "test"}), "");
}

// The measured plan: a million-token context is refused before anything is allocated
// (Measure mode allocates nothing, so this is instant), the default config fits here.
TEST(SetupCheck, MeasuredPlanRefusesWhatCannotFit) {
  io::Config c;
  comm::Groups g(MPI_COMM_SELF, 1, 1);
  const auto fits = train::measure_memory(c, train::make_spec(c, g.layout()));
  const auto here = app::rank_memory_budget(1);
  EXPECT_EQ(app::memory_problem(c, fits, here), "");
  c.model.seq_len = 1000000;
  const auto huge = train::measure_memory(c, train::make_spec(c, g.layout()));
  // [B, H, T, T] float32 per layer, saved: the activations dominate.
  EXPECT_GE(huge.peak(memory::Category::Activations, memory::Tier::Device),
            std::uint64_t(4) * c.model.n_layers * c.train.batch_size * c.model.n_heads * 1000000ull * 1000000ull);
  expect_contains(app::memory_problem(c, huge, here), {"activations", "lower train.batch_size or model.seq_len"});
  EXPECT_THROW(app::memory_check(c, 1)(huge), io::ConfigError);
}

// An allocation that fails anyway during set-up (the estimate is only a lower bound)
// is a configuration error of one line, not Kokkos's paragraph reported as bad data.
TEST(SetupCheck, AllocationFailureIsAConfigError) {
  io::Config c;
  try {
    app::with_allocation_errors_as_config(c, [] {
      Kokkos::View<float*> huge(Kokkos::view_alloc("test::huge", Kokkos::WithoutInitializing), std::size_t(1) << 60);
    });
    ADD_FAILURE() << "no error";
  } catch (const io::ConfigError& e) {
    expect_contains(e.what(), {"allocating the model's memory failed", "test::huge", "model.seq_len"});
  }
  // Other errors pass through unchanged.
  EXPECT_THROW(app::with_allocation_errors_as_config(c, [] { throw std::runtime_error("bad data"); }),
               std::runtime_error);
  try {
    app::with_allocation_errors_as_config(c, [] { throw std::runtime_error("bad data"); });
  } catch (const io::ConfigError&) {
    ADD_FAILURE() << "a non-allocation error became a ConfigError";
  } catch (const std::runtime_error&) {
  }
}
