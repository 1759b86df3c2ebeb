// Writing a checkpoint: one parallel HDF5 file, every dataset in its global shape.
// Metadata (datasets, attributes) is created collectively with identical values on
// every rank; raw data is written independently, each element by exactly one rank:
// Dense tensors are spread over the ranks (balanced by bytes), Expert slabs are
// written by their dp_rank-0 holders, and ZeRO-1 moments by the rank that owns them. Independent data writes keep the ranks
// decoupled: a rank whose write fails (disk full, file-size limit) records the error,
// skips its remaining data but still makes every collective metadata call, so all
// ranks reach the agreement together.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <numeric>
#include <vector>

#include "comm/agree.hpp"
#include "comm/fault.hpp"
#include "comm/mpi_check.hpp"
#include "io/checkpoint_internal.hpp"

#ifndef FURNACE_VERSION
#define FURNACE_VERSION "unknown"
#endif
#ifndef FURNACE_GIT_REV
#define FURNACE_GIT_REV "unknown"
#endif

namespace furnace::io {
namespace fs = std::filesystem;
using namespace ckpt;

namespace {

constexpr int kWriteAbort = 4;  // a checkpoint write that strands ranks ends the job: run-time failure

std::string iso_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// fsync a file or directory by path; "" or the reason.
std::string sync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_WRONLY);
  if (fd < 0) return "cannot open '" + path + "' to fsync it: " + std::strerror(errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? "" : "fsync of '" + path + "' failed: " + std::strerror(err);
}

// Who writes what: world rank of each Dense tensor's writer (largest first onto the
// least-loaded rank, counting the Expert slabs the dp_rank-0 ranks write), the same
// on every rank; and whether this rank writes its Expert slabs.
struct Plan {
  std::vector<int> writer;  // per tensor; -1 for Expert tensors
  bool expert_writer = false;
};

Plan make_plan(const memory::StateStore& ps, const comm::Groups& g) {
  Plan plan;
  plan.writer.assign(ps.infos().size(), -1);
  plan.expert_writer = g.dp_rank() == 0;
  double expert_bytes = 0;
  for (const auto& p : ps.infos())
    if (p.kind == memory::ParamKind::Expert) expert_bytes += double(p.size);
  std::vector<double> load(std::size_t(g.size()), 0.0);
  for (int r = 0; r < g.size(); ++r)
    if (r / g.ep() == 0) load[std::size_t(r)] = expert_bytes;  // dp_rank 0 (Groups: dp_rank = r / ep)
  std::vector<int> order;
  for (int i = 0; i < int(ps.infos().size()); ++i)
    if (ps.info(i).kind == memory::ParamKind::Dense) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ps.info(a).size > ps.info(b).size; });
  for (int i : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    plan.writer[std::size_t(i)] = r;
    load[std::size_t(r)] += double(ps.info(i).size);
  }
  return plan;
}

}  // namespace

std::vector<int> dense_writers(const memory::StateStore& ps, const comm::Groups& g) {
  return make_plan(ps, g).writer;
}

namespace {

TensorEntry entry_of(const memory::ParamInfo& p) {
  return TensorEntry{p.name, p.kind, global_dims(p)};
}

// What this rank writes of dataset (tensor i, family k): rows [row0, row0 + nrows) of
// the global shape (nrows 0: nothing) from src. Parameters and unsharded moments are
// written by the plan's writer; ZeRO-1 moments by their owner, from its packed part.
struct Slab {
  const float* src = nullptr;
  hsize_t row0 = 0, nrows = 0;
};

Slab slab_of(const memory::StateStore& ps, const CheckpointBuffers& b, const Plan& plan, const comm::Groups& g,
             std::size_t i, int k) {
  const auto& p = ps.info(int(i));
  if (b.offload && k == 0)  // an offloaded tensor's group comes into memory first
    if (const int group = b.offload->group_of(int(i)); group >= 0) b.offload->bring(group);
  const bool dense = p.kind == memory::ParamKind::Dense;
  const hsize_t first = dense ? 0 : hsize_t(p.global_offset0);
  const bool writer = dense ? plan.writer[i] == g.rank() : plan.expert_writer;
  if (k == 0) return {b.params + p.offset, first, writer ? (p.shape.empty() ? 1 : hsize_t(p.shape[0])) : 0};
  const auto& part = ps.shards().part(int(i));
  const bool mine = ps.moments_sharded() || writer;
  return {(k == 1 ? b.exp_avg : b.exp_avg_sq) + part.offset, first + hsize_t(part.row0), mine ? hsize_t(part.rows) : 0};
}

// Checksums of every block of every dataset, [tensor][family][block] flattened, the
// same on every rank: each rank hashes the blocks it writes (whole blocks: a ZeRO-1
// owner holds whole blocks), a BOR allreduce merges.
std::vector<std::vector<std::uint64_t>> checksums(const memory::StateStore& ps, const CheckpointBuffers& b,
                                                  const Plan& plan, const comm::Groups& g) {
  std::vector<std::size_t> start;
  std::size_t total = 0;
  for (const auto& p : ps.infos()) {
    start.push_back(total);
    total += 3 * block_count(entry_of(p));
  }
  std::vector<unsigned long long> table(total, 0);
  for (std::size_t i = 0; i < ps.infos().size(); ++i) {
    const TensorEntry t = entry_of(ps.info(int(i)));
    const hsize_t nb = block_count(t), brows = block_rows(t), bl = brows * row_elems(t.shape);
    for (int k = 0; k < 3; ++k) {
      const Slab s = slab_of(ps, b, plan, g, i, k);
      for (hsize_t j = 0; j < s.nrows / brows; ++j)
        table[start[i] + std::size_t(k) * nb + s.row0 / brows + j] = hash_bytes(s.src + j * bl, bl * 4);
    }
  }
  mpiCheck(MPI_Allreduce(MPI_IN_PLACE, table.data(), int(table.size()), MPI_UNSIGNED_LONG_LONG, MPI_BOR,
                         g.world()));
  std::vector<std::vector<std::uint64_t>> out;
  for (std::size_t i = 0; i < ps.infos().size(); ++i) {
    const std::size_t nb = block_count(entry_of(ps.info(int(i))));
    for (int k = 0; k < 3; ++k)
      out.emplace_back(table.begin() + std::ptrdiff_t(start[i] + std::size_t(k) * nb),
                       table.begin() + std::ptrdiff_t(start[i] + std::size_t(k + 1) * nb));
  }
  return out;
}

struct Writer {
  hid_t file;
  const std::string& path;
  h5::Handle lcpl, dcpl, indep;
  std::optional<std::string> data_error;  // this rank's first failed data write

  Writer(hid_t f, const std::string& p) : file(f), path(p) {
    lcpl = h5::Handle(H5_CHECKED(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
    H5_CHECKED(H5Pset_create_intermediate_group(lcpl, 1));  // names with '/' nest
    dcpl = h5::Handle(H5_CHECKED(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    H5_CHECKED(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));  // every element is written
    indep = dxpl(false);
  }

  // Collective: creates the dataset with its checksums. Independent: writes rows
  // [row0, row0 + nrows) from src when nrows > 0 and no data write failed yet.
  void dataset(const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
               const std::vector<std::uint64_t>* sums, const void* src, hid_t mem_type, hsize_t row0,
               hsize_t nrows) {
    h5::Handle fspace(dims.empty() ? H5_CHECKED(H5Screate(H5S_SCALAR))
                                   : H5_CHECKED(H5Screate_simple(int(dims.size()), dims.data(), nullptr)),
                      H5Sclose);
    h5::Handle d(H5_CHECKED(H5Dcreate2(file, name.c_str(), type, fspace, lcpl, dcpl, H5P_DEFAULT)), H5Dclose);
    if (sums) h5::write_u64_array_attr(d, kChecksumAttr, {sums->begin(), sums->end()});
    if (nrows == 0 || data_error) return;
    try {
      if (comm::fault::hit("ckpt.write.data")) throw h5::Error("injected fault at ckpt.write.data (FURNACE_FAULT)");
      if (!dims.empty()) {
        std::vector<hsize_t> start(dims.size(), 0), cnt(dims);
        start[0] = row0, cnt[0] = nrows;
        H5_CHECKED(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr));
      }
      h5::Handle mspace(H5_CHECKED(H5Scopy(fspace)), H5Sclose);  // same shape and selection in memory order
      if (!dims.empty()) {
        const hsize_t n = nrows * row_elems(dims);
        mspace = h5::Handle(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
      }
      H5_CHECKED(H5Dwrite(d, mem_type, mspace, fspace, indep, src));
    } catch (const std::exception& e) {
      data_error = "checkpoint '" + path + "' could not be written (dataset " + name + "): " + e.what();
    }
  }
};

h5::Handle string_type(const std::string& s) {
  h5::Handle type(H5_CHECKED(H5Tcopy(H5T_C_S1)), H5Tclose);
  H5_CHECKED(H5Tset_size(type, std::max<std::size_t>(s.size(), 1)));
  return type;
}

// Everything inside the file. Returns this rank's data-write error, if any; an HDF5
// metadata failure throws.
std::optional<std::string> write_contents(hid_t file, const std::string& path, const memory::StateStore& ps,
                                          const CheckpointBuffers& b, const CheckpointMeta& meta,
                                          const comm::Groups& g, const std::string& created, const Plan& plan,
                                          const std::vector<std::vector<std::uint64_t>>& sums) {
  h5::write_attr(file, "format", std::string(kFormat));
  h5::write_attr(file, "format_version", kFormatVersion);
  h5::write_attr(file, "furnace_version", std::string(FURNACE_VERSION));
  h5::write_attr(file, "git_revision", std::string(FURNACE_GIT_REV));
  h5::write_attr(file, "created", created);

  Writer w(file, path);
  {
    h5::Handle m(H5_CHECKED(H5Gcreate2(file, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
    h5::write_i64_attr(m, "step", meta.step);
    h5::write_i64_attr(m, "tokens_seen", meta.tokens_seen);
    h5::write_u64_attr(m, "seed", meta.seed);
    h5::write_i64_attr(m, "data_cursor", meta.step);  // batches are a pure function of (seed, step)
    h5::write_attr(m, "world", g.size());
    h5::write_attr(m, "dp", g.dp());
    h5::write_attr(m, "ep", g.ep());
    if (meta.loss_scale_log2 >= 0) {
      h5::write_attr(m, "loss_scale_log2", meta.loss_scale_log2);
      h5::write_i64_attr(m, "loss_scale_good_steps", meta.loss_scale_good_steps);
    }
  }
  // Strings as scalar fixed-length datasets (no 64 KiB attribute limit), rank 0 writes.
  const std::string manifest = manifest_json(ps.infos());
  for (const auto& [name, text] : {std::pair{"/meta/config_json", &meta.config_json}, {"/meta/manifest_json", &manifest}}) {
    h5::Handle type = string_type(*text);
    w.dataset(name, type, {}, nullptr, text->empty() ? "" : text->c_str(), type, 0, g.rank() == 0 ? 1 : 0);
  }

  for (std::size_t i = 0; i < ps.infos().size(); ++i) {
    const auto& p = ps.info(int(i));
    for (int k = 0; k < 3; ++k) {
      const Slab s = slab_of(ps, b, plan, g, i, k);
      w.dataset(dataset_path(p.name, kFamilies[k]), H5T_IEEE_F32LE, global_dims(p), &sums[3 * i + std::size_t(k)],
                s.src, H5T_NATIVE_FLOAT, s.row0, s.nrows);
    }
  }
  {
    h5::Handle o(H5_CHECKED(H5Oopen(file, "optim", H5P_DEFAULT)), H5Oclose);
    h5::write_i64_attr(o, "step", b.optimizer_step);
  }
  // /rng [world, 2]: [seed, step] per rank (the counter-based RNG's whole state), each
  // rank its own row.
  const unsigned long long state[2] = {meta.seed, static_cast<unsigned long long>(meta.step)};
  w.dataset("/rng", H5T_STD_U64LE, {hsize_t(g.size()), 2}, nullptr, state, H5T_NATIVE_ULLONG, hsize_t(g.rank()), 1);
  return w.data_error;
}

// Rank 0: rename the finished file, move `latest` to it durably, apply retention.
void publish(const std::string& dir, const std::string& name, const std::string& tmp, const std::string& path,
             int keep, bool fsync) {
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail(path, "could not be renamed from '" + tmp + "': " + ec.message());
  auto durable = [&](const std::string& p, bool directory) {
    if (!fsync) return;
    if (std::string e = sync_path(p, directory); !e.empty()) fail(path, "is written, but " + e);
  };
  durable(dir, true);  // the rename, before `latest` names the file
  const fs::path latest = fs::path(dir) / "latest", latest_tmp = fs::path(dir) / "latest.tmp";
  {
    const int fd = ::open(latest_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const std::string line = name + "\n";
    const bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == ssize_t(line.size()) &&
                    (!fsync || ::fsync(fd) == 0);
    const int err = errno;
    if (fd >= 0) ::close(fd);
    if (!ok) fail(path, "is written, but '" + latest_tmp.string() + "' could not be written: " + std::strerror(err));
  }
  fs::rename(latest_tmp, latest, ec);
  if (ec) fail(path, "is written, but '" + latest.string() + "' could not be updated: " + ec.message());
  durable(dir, true);
  // Retention: names sort by step (zero-padded); leftover .tmp files of older steps are
  // from interrupted writes.
  std::vector<std::string> done;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("step_", 0) != 0) continue;
    if (f.size() > 7 && f.compare(f.size() - 7, 7, ".h5.tmp") == 0) {
      if (f < name) fs::remove(e.path(), ec);
    } else if (f.size() > 3 && f.compare(f.size() - 3, 3, ".h5") == 0) {
      done.push_back(f);
    }
  }
  std::sort(done.begin(), done.end());
  for (std::size_t i = 0; i + std::size_t(keep) < done.size(); ++i)
    if (done[i] != name) fs::remove(fs::path(dir) / done[i], ec);
}

}  // namespace

std::string write_checkpoint(const std::string& dir, const memory::StateStore& ps, const CheckpointBuffers& b,
                             const CheckpointMeta& meta, const comm::Groups& g, const CheckpointWriteOptions& opt) {
  h5::silence();
  const MPI_Comm comm = g.world();
  const std::string name = checkpoint_file_name(meta.step);
  const std::string path = (fs::path(dir) / name).string(), tmp = path + ".tmp";

  // 1. Rank 0 prepares the directory; everyone learns the outcome.
  std::optional<std::string> error;
  if (g.rank() == 0)
    error = error_of(path, [&] {
      if (opt.keep < 1) fail(path, "cannot be written with keep = " + std::to_string(opt.keep) + " (need >= 1)");
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec || !fs::is_directory(dir)) fail(path, "cannot be written: directory '" + dir + "': " + ec.message());
      fs::remove(tmp, ec);
    });
  agree(comm, error, kWriteAbort);
  const std::string created = comm::broadcast_string(iso_now(), 0, comm);  // attribute values must agree
  const Plan plan = make_plan(ps, g);
  const auto sums = checksums(ps, b, plan, g);

  // 2. Collective create, contents, flush, close: each ends in an agreement, so a
  //    failure on one rank never leaves another inside a later collective call.
  h5::Handle file;
  // A failed write is abandoned with its file left open inside HDF5: after a failure
  // on some ranks (a full disk, a file-size limit) HDF5 1.10's collective close is not
  // symmetric any more (one rank flushes metadata while another is already in
  // MPI_File_close), and a failed H5Fclose leaves a dangling file that crashes its
  // shutdown. The partial file is unlinked; the job ends without MPI_Finalize
  // (h5::abandon, src/app/main.cpp).
  auto abandon = [&] {
    h5::abandon(file);
    if (g.rank() == 0) {
      std::error_code ec;
      fs::remove(tmp, ec);
    }
  };
  error = error_of(path, [&] {
    h5::Handle fapl = mpio_fapl(comm, opt.alignment);
    h5::LibraryLock lock;  // a background writer shares HDF5 with the training thread
    file = h5::Handle(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
    if (!file.valid()) {
      std::string reason = h5::last_error();
      fail(path, "cannot be created as '" + tmp + "'" + (reason.empty() ? "" : ": " + reason));
    }
  });
  agree(comm, error, kWriteAbort);
  try {
    error = error_of(path, [&] {
      if (auto e = write_contents(file, path, ps, b, meta, g, created, plan, sums)) throw CheckpointError(*e);
    });
    agree(comm, error, kWriteAbort);
    // Metadata goes to disk here, where a failure (disk full) leaves the file closable.
    error = error_of(path, [&] { H5_CHECKED(H5Fflush(file, H5F_SCOPE_GLOBAL)); });
    agree(comm, error, kWriteAbort);
  } catch (const CheckpointError&) {
    abandon();
    throw;
  }
  try {
    error = error_of(path, [&] {
      // An error inside this collective call on one rank strands the others in it:
      // the agreement's deadline then ends the job with this rank's reason.
      if (comm::fault::hit("ckpt.write.close"))
        throw CheckpointError("checkpoint '" + path + "' could not be closed: injected fault at ckpt.write.close (FURNACE_FAULT)");
      H5_CHECKED(H5Fclose(file));
      file.release();
    });
    agree(comm, error, kWriteAbort);
    // 3. Durable: every rank flushes what it wrote (on a parallel file system each
    //    client holds its own dirty pages).
    if (opt.fsync)
      error = error_of(path, [&] {
        if (comm::fault::hit("ckpt.write.fsync")) fail(path, "could not be synced: injected fault at ckpt.write.fsync (FURNACE_FAULT)");
        if (std::string e = sync_path(tmp, false); !e.empty()) fail(path, "could not be written: " + e);
      });
    agree(comm, error, kWriteAbort);
  } catch (const CheckpointError&) {
    abandon();  // (a no-op for the file when it closed)
    throw;
  }

  // 4. Rank 0 publishes: rename, latest (atomically, durably), retention.
  if (g.rank() == 0) error = error_of(path, [&] { publish(dir, name, tmp, path, opt.keep, opt.fsync); });
  agree(comm, error, kWriteAbort);
  return path;
}

}  // namespace furnace::io
