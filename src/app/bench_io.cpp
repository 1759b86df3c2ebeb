// `furnace bench io` (see bench_io.hpp). Every repetition runs the contenders in turn,
// alternating which goes first, so both see the same machine state; a barrier precedes
// each timing and the slowest rank's time counts. The plain baseline moves exactly the
// bytes the checkpoint moves, from the same buffers, with the same split over ranks:
//   write  every rank writes the Dense tensors io::dense_writers assigns it and its
//          Expert slab (x3: params, exp_avg, exp_avg_sq), with pwrite into one shared
//          file in the same directory;
//   read   every rank reads the Dense tensors and its own Expert slab.
// Durability: no fsync on either, or with --fsync the plain file fsynced and the
// checkpoint made durable as training does (checkpoint.fsync: file, directory, latest). Before every read both files are fsynced and dropped from the
// page cache with posix_fadvise(DONTNEED) (untimed), which needs no privileges but is
// only advice: on tmpfs, or when the kernel keeps the pages, reads come from memory.
#include "app/bench_io.hpp"
#include "app/bench_util.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "comm/agree.hpp"
#include "comm/groups.hpp"
#include "comm/mpi_check.hpp"
#include "io/checkpoint.hpp"
#include "io/config.hpp"
#include "memory/state_store.hpp"
#include "train/checkpointer.hpp"

namespace furnace::app {
namespace {

namespace fs = std::filesystem;


// The model's parameter set (names as src/model registers them), E experts sharded over
// the ep group, for width d: the shapes that `size_mb` selects.
struct Shape {
  int d = 64, layers = 4, experts = 8, vocab = 256, seq = 1024;
  std::int64_t params() const {
    const std::int64_t D = d, E = experts;
    return vocab * D + seq * D + 2 * D + layers * (4 * D + 4 * D * D + D * E + 2 * E * D * D);
  }
};

io::Config bench_config(const Shape& s, const std::string& dir) {
  io::Config c;
  c.model.vocab_size = s.vocab;
  c.model.seq_len = s.seq;
  c.model.d_model = s.d;
  c.model.n_layers = s.layers;
  c.model.n_heads = std::max(1, s.d / 64);
  c.model.norm = "layernorm";
  c.model.activation = "gelu";
  c.moe.experts = s.experts;
  c.moe.every = 1;
  c.moe.expert_hidden = s.d;
  c.checkpoint.dir = dir;
  return c;
}

void build_store(memory::StateStore& ps, memory::Ledger& ledger, const Shape& s, const comm::Groups& g) {
  const std::int64_t d = s.d, E = s.experts;
  auto dense = [&](const std::string& name, std::vector<std::int64_t> shape, bool decay = true) {
    memory::ParamInfo p;
    p.name = name;
    p.shape = shape;
    p.global_shape = shape;
    p.decay = decay;
    ps.add(p);
  };
  auto expert = [&](const std::string& name, std::vector<std::int64_t> gshape) {
    ps.add(memory::expert_slab(name, std::move(gshape), g.ep(), g.ep_rank()));
  };
  auto norm = [&](const std::string& pre) {
    dense(pre + ".w", {d}, false);
    dense(pre + ".b", {d}, false);
  };
  dense("wte", {s.vocab, d});
  dense("wpe", {s.seq, d});
  for (int l = 0; l < s.layers; ++l) {
    const std::string pre = "blocks." + std::to_string(l);
    norm(pre + ".ln1");
    dense(pre + ".attn.wqkv", {d, 3 * d});
    dense(pre + ".attn.wo", {d, d});
    norm(pre + ".ln2");
    dense(pre + ".moe.router", {d, E});
    expert(pre + ".moe.w1", {E, d, d});
    expert(pre + ".moe.w2", {E, d, d});
  }
  norm("lnf");
  ps.allocate(ledger);
}

// Distinct, layout-independent values (element `global` of a tensor, buffer k).
void fill(const memory::StateStore& ps) {
  float* bufs[3] = {ps.params().data(), ps.exp_avg().data(), ps.exp_avg_sq().data()};
  int t = 0;
  for (const auto& p : ps.infos()) {
    const std::int64_t per_row = p.shape.empty() ? 1 : p.size / p.shape[0];
    const std::int64_t base = p.global_offset0 * per_row;
    for (int k = 0; k < 3; ++k)
      for (std::int64_t j = 0; j < p.size; ++j)
        bufs[k][p.offset + j] = float((base + j) % 65521) * 1e-4f + float(t) + 100.f * float(k);
    ++t;
  }
}


}  // namespace

int bench_io(const BenchIoOptions& opt) {
  int rank = 0, P = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  if (!(opt.size_mb > 0) || opt.size_mb > 1 << 20 || opt.reps < 1 || opt.dir.empty()) {
    if (rank == 0) std::fprintf(stderr, "furnace: bench io: --size-mb must be in (0, 1048576], --reps >= 1, --dir not empty\n");
    return 2;
  }
  comm::Groups g(MPI_COMM_WORLD, P, 0);
  const MPI_Comm world = g.world();

  // Width d (multiple of 32) whose parameter bytes come closest to size_mb.
  Shape s;
  s.experts = P * ((8 + P - 1) / P);
  const double target = opt.size_mb * double(1 << 20) / 4.0;
  for (int d = 32; d <= 1 << 16; d += 32) {
    Shape t = s;
    t.d = d;
    const double diff = std::fabs(double(t.params()) - target);
    if (d > 32 && diff >= std::fabs(double(s.params()) - target)) break;
    s.d = d;
  }

  memory::Ledger ledger;
  memory::StateStore ps;
  build_store(ps, ledger, s, g);
  fill(ps);
  const std::size_t n = std::size_t(ps.total());
  const io::Config cfg = bench_config(s, opt.dir);

  // Element counts: Dense (every rank holds all of it) and this rank's Expert slab.
  std::int64_t dense = 0, expert = 0;
  for (const auto& p : ps.infos()) (p.kind == memory::ParamKind::Dense ? dense : expert) += p.size;
  const double file_bytes = 3.0 * 4.0 * double(s.params());
  long long read_local = 3LL * 4 * (dense + expert), read_total = 0;
  mpiCheck(MPI_Allreduce(&read_local, &read_total, 1, MPI_LONG_LONG, MPI_SUM, world));

  // The plain file: each rank's share (the Dense tensors io::dense_writers gives it,
  // its Expert slab if it is a writer, x3 buffers) at its prefix-sum offset, as one
  // sequence of pwrites; every Dense tensor's offset is then known to all ranks.
  float* bufs[3] = {ps.params().data(), ps.exp_avg().data(), ps.exp_avg_sq().data()};
  const std::vector<int> writers = io::dense_writers(ps, g);
  const std::size_t T = ps.infos().size();
  auto writes = [&](std::size_t i) {
    return ps.info(int(i)).kind == memory::ParamKind::Dense ? writers[i] == rank : g.dp_rank() == 0;
  };
  long long my_write = 0, my_off = 0;
  for (int k = 0; k < 3; ++k)
    for (std::size_t i = 0; i < T; ++i)
      if (writes(i)) my_write += 4LL * ps.info(int(i)).size;
  mpiCheck(MPI_Exscan(&my_write, &my_off, 1, MPI_LONG_LONG, MPI_SUM, world));
  if (rank == 0) my_off = 0;
  std::vector<long long> seg_off(3 * T, -1);  // [family][tensor]: file offset of this rank's copy
  for (long long off = my_off; int k : {0, 1, 2})
    for (std::size_t i = 0; i < T; ++i)
      if (writes(i)) {
        seg_off[std::size_t(k) * T + i] = off;
        off += 4LL * ps.info(int(i)).size;
      }
  std::vector<long long> dense_off(seg_off);  // Dense offsets from their writers
  for (std::size_t j = 0; j < dense_off.size(); ++j)
    if (ps.info(int(j % T)).kind != memory::ParamKind::Dense) dense_off[j] = -1;
  mpiCheck(MPI_Allreduce(MPI_IN_PLACE, dense_off.data(), int(dense_off.size()), MPI_LONG_LONG, MPI_MAX, world));
  // write: this rank's share; read: every Dense tensor and this rank's Expert slab.
  auto plain_io = [&](bool write, int fd) -> bool {
    for (int k = 0; k < 3; ++k)
      for (std::size_t i = 0; i < T; ++i) {
        const auto& p = ps.info(int(i));
        const bool dense = p.kind == memory::ParamKind::Dense;
        // (ep = world here, so every rank wrote the Expert slab it reads.)
        const long long off = (!write && dense ? dense_off : seg_off)[std::size_t(k) * T + i];
        if (off < 0) continue;
        if (!full_io(write, fd, reinterpret_cast<char*>(bufs[k] + p.offset), std::size_t(p.size) * 4, off_t(off)))
          return false;
      }
    return true;
  };

  std::error_code ec;
  std::string error;
  if (rank == 0) fs::create_directories(opt.dir, ec);
  const std::string plain = (fs::path(opt.dir) / "plain.bin").string();
  const std::string ckpt = (fs::path(opt.dir) / io::checkpoint_file_name(1)).string();
  auto remove_files = [&] {
    if (rank == 0) {
      fs::remove(plain, ec);
      fs::remove(ckpt, ec);
    }
    mpiCheck(MPI_Barrier(world));
  };

  io::CheckpointMeta meta{.step = 1, .tokens_seen = 0, .config_json = io::to_json(cfg), .seed = cfg.train.seed,
                          .world = g.size(), .dp = g.dp(), .ep = g.ep()};
  io::CheckpointBuffers cb{bufs[0], bufs[1], bufs[2], 1};
  std::vector<float> reference(3 * n, 0.f);
  // The trainer's background checkpoint, exactly as training uses it (own directory).
  io::Config async_cfg = cfg;
  async_cfg.checkpoint.async = true;
  async_cfg.checkpoint.keep = 1;
  async_cfg.checkpoint.dir = (fs::path(opt.dir) / "async").string();
  train::Checkpointer background(async_cfg, g, ps);

  auto ckpt_write = [&]() -> std::string {
    try {
      io::write_checkpoint(opt.dir, ps, cb, meta, g,
                           {.keep = 1, .alignment = std::size_t(cfg.checkpoint.alignment), .fsync = opt.fsync});
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";  // write_checkpoint fsyncs the file and directory itself with --fsync
  };
  auto ckpt_read = [&]() -> std::string {
    try {
      long step = 0;
      io::read_checkpoint(ckpt, ps, g, &step);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  auto plain_write = [&]() -> std::string {
    const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd < 0) return sys_error("cannot create", plain);
    bool ok = plain_io(true, fd);
    std::string err = ok ? "" : sys_error("write failed on", plain);
    if (ok && opt.fsync && ::fsync(fd) != 0) err = sys_error("fsync failed on", plain);
    if (::close(fd) != 0 && err.empty()) err = sys_error("close failed on", plain);
    return err;
  };
  auto plain_read = [&]() -> std::string {
    const int fd = ::open(plain.c_str(), O_RDONLY);
    if (fd < 0) return sys_error("cannot open", plain);
    bool ok = plain_io(false, fd);
    ::close(fd);
    return ok ? "" : sys_error("read failed on", plain);
  };
  // The data read back must be what was written (every rank checks its own buffers).
  auto check_and_clear = [&](const char* who) -> std::string {
    for (int k = 0; k < 3; ++k) {
      if (std::memcmp(bufs[k], reference.data() + k * n, n * 4) != 0)
        return std::string(who) + " read back different data than was written";
      std::memset(bufs[k], 0, n * 4);
    }
    return "";
  };
  auto restore = [&] {
    for (int k = 0; k < 3; ++k) std::memcpy(bufs[k], reference.data() + k * n, n * 4);
  };
  for (int k = 0; k < 3; ++k) std::memcpy(reference.data() + k * n, bufs[k], n * 4);

  std::vector<double> tcw, tcr, tpw, tpr, tcopy, tstall;
  for (int r = 0; r < opt.reps && error.empty(); ++r) {
    remove_files();
    restore();
    const bool ckpt_first = r % 2 == 0;
    for (int i = 0; i < 2 && error.empty(); ++i)
      if ((i == 0) == ckpt_first)
        tcw.push_back(timed(world, ckpt_write, error));
      else
        tpw.push_back(timed(world, plain_write, error));
    if (!error.empty()) break;
    // The training stall of a background checkpoint: save(), then one training step's
    // forward/backward (simulated by spinning for step_ms on this thread), then the
    // wait before the optimizer update. The write itself finishes untimed.
    for (double step_ms : {0.0, opt.step_ms}) {
      double held = background.save(1, 1, 0);
      spin_for(step_ms * 1e-3);
      held += background.hold_until_snapshot();
      double slowest = 0;
      mpiCheck(MPI_Allreduce(&held, &slowest, 1, MPI_DOUBLE, MPI_MAX, world));
      (step_ms == 0 ? tcopy : tstall).push_back(slowest);
      try {
        background.wait();
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    for (int k = 0; k < 3; ++k) std::memset(bufs[k], 0, n * 4);
    for (int i = 0; i < 2 && error.empty(); ++i) {
      drop_cache(ckpt);
      drop_cache(plain);
      if ((i == 0) == ckpt_first) {
        tcr.push_back(timed(world, ckpt_read, error));
        if (error.empty()) timed(world, [&] { return check_and_clear("checkpoint"); }, error);
      } else {
        tpr.push_back(timed(world, plain_read, error));
        if (error.empty()) timed(world, [&] { return check_and_clear("plain read"); }, error);
      }
    }
  }
  if (rank == 0) fs::remove(plain, ec);
  if (!opt.keep_files && rank == 0) {
    fs::remove(ckpt, ec);
    fs::remove(fs::path(opt.dir) / "latest", ec);
  }
  mpiCheck(MPI_Barrier(world));
  if (!error.empty()) {
    if (rank == 0) std::fprintf(stderr, "furnace: bench io: %s\n", error.c_str());
    return 1;
  }
  if (rank != 0) return 0;

  const double MiB = double(1 << 20);
  const double cw = median(tcw), cr = median(tcr), pw = median(tpw), pr = median(tpr), cp = median(tcopy),
               st = median(tstall);
  std::printf("bench io: %s, dir %s\n", g.describe().c_str(), opt.dir.c_str());
  std::printf("  model: d_model %d, %d layers, %d experts (%d per rank), %zu tensors: %.1f MiB of parameters\n", s.d,
              s.layers, s.experts, s.experts / P, ps.infos().size(), 4.0 * double(s.params()) / MiB);
  std::printf("  checkpoint payload %.1f MiB (params + exp_avg + exp_avg_sq); read payload %.1f MiB (every rank "
              "reads the Dense tensors and its Expert slab); median of %d reps\n",
              file_bytes / MiB, double(read_total) / MiB, opt.reps);
  std::printf("  durability: %s\n", opt.fsync ? "fsync on both writes (timed)"
                                              : "no fsync on either write (HDF5's H5Fclose does not fsync; data may "
                                                "still be in the page cache when the write returns)");
  std::printf("  reads: both files were fsynced and dropped with posix_fadvise(DONTNEED) before each read "
              "(untimed); that is advice, so reads may still come from the page cache for both\n");
  const double w_paired = paired_ratio(tpw, tcw), r_paired = paired_ratio(tpr, tcr);
  std::printf("  %-22s %10s %10s %10s %12s %8s\n", "", "ms", "MiB/s", "plain MiB/s", "ckpt/plain", "paired");
  std::printf("  %-22s %10.1f %10.1f %10.1f %12.3f %8.3f\n", "write", cw * 1e3, file_bytes / MiB / cw,
              file_bytes / MiB / pw, pw / cw, w_paired);
  std::printf("  %-22s %10.1f %10.1f %10.1f %12.3f %8.3f\n", "read", cr * 1e3, double(read_total) / MiB / cr,
              double(read_total) / MiB / pr, pr / cr, r_paired);
  std::printf("  async stall, update right after save %7.1f ms (snapshot copy of %.1f MiB per rank not overlapped) "
              "= %.1f%% of the synchronous write\n",
              cp * 1e3, 3.0 * 4.0 * double(n) / MiB, 100.0 * cp / cw);
  std::printf("  async stall, a %.0f ms step between  %7.1f ms (the copy overlaps forward/backward, as in training) "
              "= %.1f%% of the synchronous write (target <= 10%%)\n",
              opt.step_ms, st * 1e3, 100.0 * st / cw);
  std::printf("  targets: checkpoint/plain >= 0.8, median of the paired ratios (write %s, read %s); async stall "
              "<= 10%% (%s)\n",
              w_paired >= 0.8 ? "met" : "NOT met", r_paired >= 0.8 ? "met" : "NOT met", st / cw <= 0.1 ? "met" : "NOT met");
  if (opt.keep_files) std::printf("  kept %s\n", ckpt.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace furnace::app
