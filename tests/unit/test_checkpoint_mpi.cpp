// Checkpoints written and read collectively by every rank of MPI_COMM_WORLD: round
// trips on each layout, resharding to another expert-parallel size, bad files failing
// with the same CheckpointError on every rank (never a hang, nothing half-loaded),
// retention and resume resolution. Runs at -n 1, 2, 4.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/groups.hpp"
#include "mpi_testing.hpp"
#include "io/checkpoint.hpp"
#include "checkpoint_testing.hpp"

using namespace furnace;
using namespace furnace::io;
namespace fs = std::filesystem;

namespace {

using furnace::testing::world_rank;
using furnace::testing::world_size;
using namespace furnace::testing::ckpt;


class MpiCheckpoint : public furnace::testing::MpiScratchDirTest {
 protected:
  // ep values that divide the world and the experts.
  std::vector<int> eps() const {
    std::vector<int> out;
    for (int ep = 1; ep <= world_size(); ++ep)
      if (world_size() % ep == 0 && kExperts % ep == 0) out.push_back(ep);
    return out;
  }
};

}  // namespace

// Write and read back on the same layout, for ep = world (every rank an expert writer)
// and ep = 1 (only dp_rank 0 = rank 0 writes experts; other ranks have nothing to write).
TEST_F(MpiCheckpoint, RoundTripEveryLayout) {
  for (int ep : eps()) {
    const std::string where = "ep " + std::to_string(ep);
    comm::Groups g(MPI_COMM_WORLD, ep, 0);
    auto src = make_store(g);
    fill(*src);
    const std::string sub = dir() + "/ep" + std::to_string(ep);
    const std::string path = write_checkpoint(sub, *src, buffers(*src, 41), meta_for(g, 42), g, {.keep = 3, .alignment = 1 << 20});
    EXPECT_EQ(path, sub + "/step_00000042.h5") << where;
    EXPECT_TRUE(fs::exists(path)) << where;
    EXPECT_FALSE(fs::exists(path + ".tmp")) << where;

    auto dst = make_store(g);
    long opt_step = -1;
    CheckpointMeta m = read_checkpoint(path, *dst, g, &opt_step);
    expect_filled(*dst, where);
    EXPECT_EQ(opt_step, 41) << where;
    const CheckpointMeta want = meta_for(g, 42);
    EXPECT_EQ(m.step, want.step);
    EXPECT_EQ(m.tokens_seen, want.tokens_seen);
    EXPECT_EQ(m.seed, want.seed);
    EXPECT_EQ(m.config_json, want.config_json);
    EXPECT_EQ(m.world, world_size());
    EXPECT_EQ(m.ep, ep);
    EXPECT_EQ(m.dp, world_size() / ep);
  }
}

// Written with ep = world, read on every other ep: other slabs of the same global tensors.
TEST_F(MpiCheckpoint, ReshardsToAnotherEp) {
  std::string path;
  {
    comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
    auto src = make_store(g);
    fill(*src);
    path = write_checkpoint(dir(), *src, buffers(*src, 5), meta_for(g, 5), g, {.keep = 3, .alignment = 4096});
  }
  for (int ep : eps()) {
    comm::Groups g(MPI_COMM_WORLD, ep, 0);
    auto dst = make_store(g);
    long opt_step = 0;
    CheckpointMeta m = read_checkpoint(path, *dst, g, &opt_step);
    expect_filled(*dst, "read with ep " + std::to_string(ep));
    EXPECT_EQ(m.ep, world_size());  // the layout that wrote it
    EXPECT_EQ(opt_step, 5);
  }
}

TEST_F(MpiCheckpoint, TruncatedFileFailsEverywhereLeavingStoreUntouched) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto src = make_store(g);
  fill(*src);
  const std::string path = write_checkpoint(dir(), *src, buffers(*src, 1), meta_for(g, 1), g, {.keep = 3, .alignment = 1 << 20});
  if (world_rank() == 0) fs::resize_file(path, fs::file_size(path) / 2);
  MPI_Barrier(MPI_COMM_WORLD);
  auto dst = make_store(g);
  expect_all(*dst, 0.0f, "fresh store");
  expect_ckpt_error([&] { read_checkpoint(path, *dst, g, nullptr); }, {path}, "truncated");
  expect_all(*dst, 0.0f, "store after a failed read");
  // Truncated to nothing but a few bytes: not even HDF5.
  if (world_rank() == 0) fs::resize_file(path, 100);
  MPI_Barrier(MPI_COMM_WORLD);
  expect_ckpt_error([&] { read_checkpoint(path, *dst, g, nullptr); }, {path}, "stub");
}

TEST_F(MpiCheckpoint, WrongShapeNamesDatasetAndShapes) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto src = make_store(g);
  fill(*src);
  const std::string path = write_checkpoint(dir(), *src, buffers(*src, 1), meta_for(g, 1), g, {.keep = 3, .alignment = 1 << 20});
  auto other = make_store(g, 12);  // embed [12, 6] instead of [10, 6]
  expect_ckpt_error([&] { read_checkpoint(path, *other, g, nullptr); }, {path, "tensor embed", "[10, 6]", "[12, 6]"},
                    "wrong shape");
  expect_all(*other, 0.0f, "store after a failed read");
}

TEST_F(MpiCheckpoint, MissingAndTmpPathsFail) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto ps = make_store(g);
  fill(*ps);
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 1), meta_for(g, 1), g, {.keep = 3, .alignment = 1 << 20});
  if (world_rank() == 0) fs::copy_file(path, path + ".tmp");
  MPI_Barrier(MPI_COMM_WORLD);
  expect_ckpt_error([&] { read_checkpoint(path + ".tmp", *ps, g, nullptr); }, {path + ".tmp", ".tmp"}, "tmp");
  expect_ckpt_error([&] { read_checkpoint(dir() + "/nope.h5", *ps, g, nullptr); }, {dir() + "/nope.h5", "not found"},
                    "missing");
  if (world_rank() == 0) std::ofstream(dir() + "/text.h5") << "not hdf5\n";
  MPI_Barrier(MPI_COMM_WORLD);
  expect_ckpt_error([&] { read_checkpoint(dir() + "/text.h5", *ps, g, nullptr); }, {dir() + "/text.h5", "HDF5"},
                    "not hdf5");
}

TEST_F(MpiCheckpoint, RetentionKeepsTheLastAndLatestNamesIt) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto ps = make_store(g);
  fill(*ps);
  std::string last;
  for (long step : {10, 20, 30, 40}) last = write_checkpoint(dir(), *ps, buffers(*ps, step), meta_for(g, step), g, {.keep = 2, .alignment = 1 << 20});
  MPI_Barrier(MPI_COMM_WORLD);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir())) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"latest", "step_00000030.h5", "step_00000040.h5"}));
  std::ifstream in(dir() + "/latest");
  std::string name;
  std::getline(in, name);
  EXPECT_EQ(name, "step_00000040.h5");
  EXPECT_EQ(resolve_resume(dir(), "auto"), last);
}

TEST_F(MpiCheckpoint, ResolveResume) {
  EXPECT_EQ(resolve_resume(dir(), "auto"), "");  // nothing yet: a fresh start
  EXPECT_THROW(resolve_resume(dir(), dir()), CheckpointError);  // a directory without latest
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto ps = make_store(g);
  fill(*ps);
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 3), meta_for(g, 3), g, {.keep = 3, .alignment = 1 << 20});
  EXPECT_EQ(resolve_resume(dir(), "auto"), path);
  EXPECT_EQ(resolve_resume(dir(), dir()), path);
  EXPECT_EQ(resolve_resume(dir(), path), path);
  try {
    resolve_resume(dir(), path + ".tmp");
    ADD_FAILURE() << ".tmp accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ".tmp"), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolve_resume(dir(), dir() + "/step_00000099.h5"), CheckpointError);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::ofstream(dir() + "/latest") << "step_00000077.h5\n";  // a dangling index
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_THROW(resolve_resume(dir(), "auto"), CheckpointError);
}

// Prints write and read bandwidth for a store of a few tens of MB (never asserted).
TEST_F(MpiCheckpoint, ThroughputReport) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto ps = make_store(g, 2048, 48);  // d = 288, h = 240: ~ 1.2 M floats per buffer
  fill(*ps);
  double bytes_local = 0;
  for (const auto& p : ps->infos())
    bytes_local += 3.0 * 4.0 * double(p.kind == memory::ParamKind::Dense ? (world_rank() == 0 ? p.size : 0)
                                                                        : (g.dp_rank() == 0 ? p.size : 0));
  double bytes = 0;
  MPI_Allreduce(&bytes_local, &bytes, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 1), meta_for(g, 1), g, {.keep = 3, .alignment = 1 << 20});
  double t1 = MPI_Wtime();
  auto dst = make_store(g, 2048, 48);
  read_checkpoint(path, *dst, g, nullptr);
  double t2 = MPI_Wtime();
  expect_filled(*dst, "throughput");
  if (world_rank() == 0)
    std::printf("[ checkpoint ] %d ranks, %.1f MB file data: write %.0f MB/s, read %.0f MB/s\n", world_size(),
                bytes / 1e6, bytes / 1e6 / (t1 - t0), bytes / 1e6 / (t2 - t1));
}
