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

using namespace furnace;
using namespace furnace::io;
namespace fs = std::filesystem;

namespace {

using furnace::testing::world_rank;
using furnace::testing::world_size;


constexpr int kExperts = 4;  // divisible by every ep used at 1, 2 and 4 ranks

// A small store registered the way the model does: Dense tensors whole on every rank,
// Expert tensors [E, ...] sharded over the ep group along dim 0. `vocab` changes a
// global shape (for the mismatch test); `scale` makes it larger (throughput).
std::unique_ptr<memory::ParamStore> make_store(const comm::Groups& g, int vocab = 10, int scale = 1) {
  auto ps = std::make_unique<memory::ParamStore>();
  const int d = 6 * scale, h = 5 * scale;
  auto dense = [&](const std::string& name, std::vector<std::int64_t> shape) {
    memory::ParamInfo p;
    p.name = name;
    p.shape = shape;
    p.global_shape = shape;
    ps->add(p);
  };
  auto expert = [&](const std::string& name, std::vector<std::int64_t> gshape) {
    ps->add(memory::expert_slab(name, std::move(gshape), g.ep(), g.ep_rank()));
  };
  dense("embed", {vocab, d});
  dense("final_norm.weight", {d});
  dense("layers/1/attn.wqkv", {d, 3 * d});  // a name with '/' nests groups
  expert("layers.1.moe.w1", {kExperts, d, h});
  expert("layers.1.moe.b1", {kExperts, h});
  ps->allocate();
  return ps;
}

// The value of element `global` of tensor `name` in buffer k (params, m, v).
float value(const std::string& name, std::int64_t global, int k) {
  const auto hn = std::hash<std::string>{}(name) % 997;
  return float(hn) * 0.25f + float(global % 4096) * 0.5f + float(k) * 10000.0f + 1.0f;
}

float* buf(const memory::ParamStore& ps, int k) {
  return k == 0 ? ps.params().data() : k == 1 ? ps.exp_avg().data() : ps.exp_avg_sq().data();
}

void fill(memory::ParamStore& ps) {
  for (const auto& p : ps.infos()) {
    const std::int64_t per_row = p.shape.empty() ? 1 : p.size / p.shape[0];
    for (int k = 0; k < 3; ++k)
      for (std::int64_t j = 0; j < p.size; ++j) buf(ps, k)[p.offset + j] = value(p.name, p.global_offset0 * per_row + j, k);
  }
}

// Every element of every tensor holds its global value (failures name the tensor).
void expect_filled(const memory::ParamStore& ps, const std::string& where) {
  for (const auto& p : ps.infos()) {
    const std::int64_t per_row = p.shape.empty() ? 1 : p.size / p.shape[0];
    int bad = 0;
    for (int k = 0; k < 3; ++k)
      for (std::int64_t j = 0; j < p.size; ++j)
        bad += buf(ps, k)[p.offset + j] != value(p.name, p.global_offset0 * per_row + j, k);
    EXPECT_EQ(bad, 0) << where << ": tensor " << p.name << " on rank " << world_rank();
  }
}

void expect_all(const memory::ParamStore& ps, float x, const std::string& where) {
  int bad = 0;
  for (int k = 0; k < 3; ++k)
    for (std::int64_t j = 0; j < ps.total(); ++j) bad += buf(ps, k)[j] != x;
  EXPECT_EQ(bad, 0) << where << " on rank " << world_rank();
}

CheckpointBuffers buffers(const memory::ParamStore& ps, long opt_step) {
  return {ps.params().data(), ps.exp_avg().data(), ps.exp_avg_sq().data(), opt_step};
}

CheckpointMeta meta_for(const comm::Groups& g, long step) {
  CheckpointMeta m;
  m.step = step;
  m.tokens_seen = 1000LL * step + 7;
  m.config_json = R"({"model": {"d_model": 6}, "note": "step )" + std::to_string(step) + "\"}";
  m.seed = 0xfeedfacecafebeefULL;
  m.world = g.size();
  m.dp = g.dp();
  m.ep = g.ep();
  return m;
}

// Runs f expecting a CheckpointError whose message contains each of `parts`, on every rank.
template <class F>
void expect_ckpt_error(F&& f, const std::vector<std::string>& parts, const std::string& where) {
  std::string msg;
  try {
    f();
    ADD_FAILURE() << where << ": no CheckpointError on rank " << world_rank();
  } catch (const CheckpointError& e) {
    msg = e.what();
  }
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << where << ": '" << msg << "' lacks '" << p << "'";
  // Identical on every rank: compare with rank 0's message.
  std::string root = msg;
  int len = int(root.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  root.resize(std::size_t(len));
  MPI_Bcast(root.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  EXPECT_EQ(msg, root) << where << ": rank " << world_rank() << " got another message";
}

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
    const std::string path = write_checkpoint(sub, *src, buffers(*src, 41), meta_for(g, 42), g, 3, 1 << 20);
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
    path = write_checkpoint(dir(), *src, buffers(*src, 5), meta_for(g, 5), g, 3, 4096);
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
  const std::string path = write_checkpoint(dir(), *src, buffers(*src, 1), meta_for(g, 1), g, 3, 1 << 20);
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
  const std::string path = write_checkpoint(dir(), *src, buffers(*src, 1), meta_for(g, 1), g, 3, 1 << 20);
  auto other = make_store(g, 12);  // embed [12, 6] instead of [10, 6]
  expect_ckpt_error([&] { read_checkpoint(path, *other, g, nullptr); }, {path, "/model/embed", "[10, 6]", "[12, 6]"},
                    "wrong shape");
  expect_all(*other, 0.0f, "store after a failed read");
}

TEST_F(MpiCheckpoint, MissingAndTmpPathsFail) {
  comm::Groups g(MPI_COMM_WORLD, world_size(), 0);
  auto ps = make_store(g);
  fill(*ps);
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 1), meta_for(g, 1), g, 3, 1 << 20);
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
  for (long step : {10, 20, 30, 40}) last = write_checkpoint(dir(), *ps, buffers(*ps, step), meta_for(g, step), g, 2, 1 << 20);
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
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 3), meta_for(g, 3), g, 3, 1 << 20);
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
  const std::string path = write_checkpoint(dir(), *ps, buffers(*ps, 1), meta_for(g, 1), g, 3, 1 << 20);
  double t1 = MPI_Wtime();
  auto dst = make_store(g, 2048, 48);
  read_checkpoint(path, *dst, g, nullptr);
  double t2 = MPI_Wtime();
  expect_filled(*dst, "throughput");
  if (world_rank() == 0)
    std::printf("[ checkpoint ] %d ranks, %.1f MB file data: write %.0f MB/s, read %.0f MB/s\n", world_size(),
                bytes / 1e6, bytes / 1e6 / (t1 - t0), bytes / 1e6 / (t2 - t1));
}
