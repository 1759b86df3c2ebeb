// Shared by the checkpoint tests: a small store registered the way the model does,
// distinct layout-independent values to fill it with, and an expectation that every
// rank throws the same CheckpointError.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/groups.hpp"
#include "io/checkpoint.hpp"
#include "mpi_testing.hpp"

namespace furnace::testing::ckpt {

using namespace furnace::io;
using furnace::testing::world_rank;
using furnace::testing::world_size;

constexpr int kExperts = 4;  // divisible by every ep used at 1, 2 and 4 ranks

// A small store registered the way the model does: Dense tensors whole on every rank,
// Expert tensors [E, ...] sharded over the ep group along dim 0. `vocab` changes a
// global shape (for the mismatch test); `scale` makes it larger (throughput).
inline std::unique_ptr<memory::StateStore> make_store(const comm::Groups& g, int vocab = 10, int scale = 1) {
  auto ps = std::make_unique<memory::StateStore>();
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
  static memory::Ledger ledger;  // outlives every store the tests make
  ps->allocate(ledger);
  return ps;
}

// The value of element `global` of tensor `name` in buffer k (params, m, v).
inline float value(const std::string& name, std::int64_t global, int k) {
  const auto hn = std::hash<std::string>{}(name) % 997;
  return float(hn) * 0.25f + float(global % 4096) * 0.5f + float(k) * 10000.0f + 1.0f;
}

inline float* buf(const memory::StateStore& ps, int k) {
  return k == 0 ? ps.params().data() : k == 1 ? ps.exp_avg().data() : ps.exp_avg_sq().data();
}

inline void fill(memory::StateStore& ps) {
  for (const auto& p : ps.infos()) {
    const std::int64_t per_row = p.shape.empty() ? 1 : p.size / p.shape[0];
    for (int k = 0; k < 3; ++k)
      for (std::int64_t j = 0; j < p.size; ++j) buf(ps, k)[p.offset + j] = value(p.name, p.global_offset0 * per_row + j, k);
  }
}

// Every element of every tensor holds its global value (failures name the tensor).
inline void expect_filled(const memory::StateStore& ps, const std::string& where) {
  for (const auto& p : ps.infos()) {
    const std::int64_t per_row = p.shape.empty() ? 1 : p.size / p.shape[0];
    int bad = 0;
    for (int k = 0; k < 3; ++k)
      for (std::int64_t j = 0; j < p.size; ++j)
        bad += buf(ps, k)[p.offset + j] != value(p.name, p.global_offset0 * per_row + j, k);
    EXPECT_EQ(bad, 0) << where << ": tensor " << p.name << " on rank " << world_rank();
  }
}

inline void expect_all(const memory::StateStore& ps, float x, const std::string& where) {
  int bad = 0;
  for (int k = 0; k < 3; ++k)
    for (std::int64_t j = 0; j < ps.total(); ++j) bad += buf(ps, k)[j] != x;
  EXPECT_EQ(bad, 0) << where << " on rank " << world_rank();
}

inline CheckpointBuffers buffers(const memory::StateStore& ps, long opt_step) {
  return {ps.params().data(), ps.exp_avg().data(), ps.exp_avg_sq().data(), opt_step};
}

inline CheckpointMeta meta_for(const comm::Groups& g, long step) {
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

}  // namespace furnace::testing::ckpt
