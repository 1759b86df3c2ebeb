// The checks made before a run is built (src/app/setup_check): run directories, the
// memory estimate against what the model really allocates, the refusal when it does
// not fit, and allocation failures turned into one-line configuration errors.
#include "app/setup_check.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <Kokkos_Core.hpp>
#include <filesystem>
#include <fstream>

#include "memory/arena.hpp"
#include "memory/param_store.hpp"
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

// What the model really allocates for `c` in one process: its state (params, grads,
// m, v) and its activation arena, built exactly as the trainer builds them.
double actual_bytes(const io::Config& c) {
  model::GptSpec s;
  s.vocab = c.model.vocab_size, s.seq = c.model.seq_len, s.d_model = c.model.d_model;
  s.layers = c.model.n_layers, s.heads = c.model.n_heads, s.ffn_hidden = c.model.ffn_hidden;
  s.activation = c.model.activation == "swiglu" ? moe::Activation::Swiglu : moe::Activation::Gelu;
  s.moe_every = c.moe.every, s.expert_hidden = c.moe.expert_hidden;
  s.router.experts = c.moe.experts, s.router.top_k = c.moe.top_k;
  s.local_experts = c.moe.experts, s.batch = c.train.batch_size;
  memory::ParamStore ps;
  memory::Arena arena("test");
  model::Gpt gpt(s, ps, arena);
  return 16.0 * double(ps.total()) + double(arena.bytes_used());
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

// The estimate is a lower bound of what the model allocates, and close to it (within
// a factor 2), for dense and MoE, gelu and swiglu, short and long sequences.
TEST(SetupCheck, MemoryEstimateIsATightLowerBound) {
  std::vector<io::Config> cases(4);
  cases[1].model.seq_len = 512, cases[1].model.n_heads = 8;  // attention-dominated
  cases[2].moe.experts = 0, cases[2].model.activation = "swiglu";
  cases[3].moe.experts = 16, cases[3].moe.expert_hidden = 512, cases[3].model.d_model = 64;  // state-dominated
  for (const auto& c : cases) {
    const auto est = app::estimate_memory(c, 1);
    const double actual = actual_bytes(c);
    EXPECT_LE(est.total(), actual) << "seq " << c.model.seq_len << " experts " << c.moe.experts;
    EXPECT_GE(est.total(), 0.5 * actual) << "seq " << c.model.seq_len << " experts " << c.moe.experts;
  }
  // Per rank: the batch and the experts divide over the ranks.
  io::Config c;
  c.parallel.ep = 2;
  EXPECT_LT(app::estimate_memory(c, 2).total(), app::estimate_memory(c, 1).total());
}

TEST(SetupCheck, MemoryProblemNamesTheKeys) {
  io::Config c;
  c.model.seq_len = 1000000;
  const auto need = app::estimate_memory(c, 1);
  EXPECT_GT(need.attention, need.state);
  const std::string msg = app::memory_problem(c, 1, need, {1e9, "MemAvailable 1.0 GiB"});
  expect_contains(msg, {"model.seq_len = 1000000", "train.batch_size = 16", "[B,H,T,T]", "MemAvailable 1.0 GiB",
                        "lower model.seq_len"});
  EXPECT_EQ(app::memory_problem(c, 1, need, {need.total() * 1.01, "test"}), "");
  // This machine: the default config fits, a million-token context does not.
  const auto here = app::rank_memory_budget(1);
  EXPECT_GT(here.bytes, 0);
  EXPECT_EQ(app::memory_problem(io::Config{}, 1, app::estimate_memory(io::Config{}, 1), here), "");
  EXPECT_NE(app::memory_problem(c, 1, need, here), "");
  EXPECT_THROW(app::check_run_setup(c, 1, 1), io::ConfigError);
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
