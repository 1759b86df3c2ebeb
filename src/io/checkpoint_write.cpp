// Writing a checkpoint: one collective parallel HDF5 file, every dataset in its global
// shape. Each dataset is created by all ranks (HDF5 metadata operations are
// collective) and written with one collective H5Dwrite in which exactly one rank holds
// each element: world rank 0 writes Dense tensors, the dp_rank 0 ranks write their
// Expert slabs, every other rank selects nothing but still joins the call.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>

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

std::string iso_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Rank 0's string on every rank of comm (attribute values must agree across ranks).
std::string bcast(MPI_Comm comm, std::string s) {
  int len = int(s.size());
  mpiCheck(MPI_Bcast(&len, 1, MPI_INT, 0, comm));
  s.resize(std::size_t(len));
  mpiCheck(MPI_Bcast(s.data(), len, MPI_CHAR, 0, comm));
  return s;
}

struct Writer {
  hid_t file;
  const std::string& path;
  h5::Handle lcpl, dcpl, coll;

  Writer(hid_t f, const std::string& p) : file(f), path(p) {
    lcpl = h5::Handle(H5_CHECKED(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
    H5_CHECKED(H5Pset_create_intermediate_group(lcpl, 1));  // names with '/' nest
    dcpl = h5::Handle(H5_CHECKED(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    H5_CHECKED(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));  // every element is written
    coll = dxpl(true);
  }

  // Creates `name` (collective) and writes this rank's part of it (collective), or
  // nothing when !mine.
  void tensor(const std::string& name, const memory::ParamInfo& p, const float* buf, bool mine) {
    const auto dims = global_dims(p);
    h5::Handle fspace(dims.empty() ? H5_CHECKED(H5Screate(H5S_SCALAR))
                                   : H5_CHECKED(H5Screate_simple(int(dims.size()), dims.data(), nullptr)),
                      H5Sclose);
    h5::Handle dset(H5_CHECKED(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, fspace, lcpl, dcpl, H5P_DEFAULT)),
                    H5Dclose);
    const hsize_t n = hsize_t(std::max<std::int64_t>(p.size, 1));
    h5::Handle mspace(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
    static const float dummy = 0;
    if (mine) {
      select_slab(fspace, p, path);
    } else {
      H5_CHECKED(H5Sselect_none(fspace));
      H5_CHECKED(H5Sselect_none(mspace));
    }
    H5_CHECKED(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, coll, mine ? buf + p.offset : &dummy));
  }
};

void write_contents(hid_t file, const std::string& path, const memory::ParamStore& ps, const CheckpointBuffers& b,
                    const CheckpointMeta& meta, const comm::Groups& g, const std::string& created) {
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
    // config_json as a scalar fixed-length string dataset (no 64 KiB attribute limit),
    // written by rank 0 in a collective call.
    h5::Handle type(H5_CHECKED(H5Tcopy(H5T_C_S1)), H5Tclose);
    H5_CHECKED(H5Tset_size(type, std::max<std::size_t>(meta.config_json.size(), 1)));
    h5::Handle space(H5_CHECKED(H5Screate(H5S_SCALAR)), H5Sclose);
    h5::Handle mspace(H5_CHECKED(H5Screate(H5S_SCALAR)), H5Sclose);
    h5::Handle d(H5_CHECKED(H5Dcreate2(m, "config_json", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                 H5Dclose);
    if (g.rank() != 0) {
      H5_CHECKED(H5Sselect_none(space));
      H5_CHECKED(H5Sselect_none(mspace));
    }
    const char* text = meta.config_json.empty() ? "" : meta.config_json.c_str();
    H5_CHECKED(H5Dwrite(d, type, mspace, space, w.coll, text));
  }

  for (const auto& p : ps.infos()) {
    const bool mine = p.kind == memory::ParamKind::Dense ? g.rank() == 0 : g.dp_rank() == 0;
    w.tensor(model_path(p.name), p, b.params, mine);
    w.tensor(optim_path(p.name, "exp_avg"), p, b.exp_avg, mine);
    w.tensor(optim_path(p.name, "exp_avg_sq"), p, b.exp_avg_sq, mine);
  }
  {
    h5::Handle o(H5_CHECKED(H5Oopen(file, "optim", H5P_DEFAULT)), H5Oclose);
    h5::write_i64_attr(o, "step", b.optimizer_step);
  }

  // /rng/<rank>: [seed, step] per rank (the counter-based RNG's whole state). Created
  // by all ranks; each rank writes its own two numbers independently (tiny, and a
  // collective call per rank would cost O(world) collectives).
  h5::Handle rng(H5_CHECKED(H5Gcreate2(file, "rng", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
  const hsize_t two = 2;
  h5::Handle space(H5_CHECKED(H5Screate_simple(1, &two, nullptr)), H5Sclose);
  h5::Handle mine;
  for (int r = 0; r < g.size(); ++r) {
    h5::Handle d(H5_CHECKED(H5Dcreate2(rng, std::to_string(r).c_str(), H5T_STD_U64LE, space, H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT)),
                 H5Dclose);
    if (r == g.rank()) mine = std::move(d);
  }
  const unsigned long long state[2] = {meta.seed, static_cast<unsigned long long>(meta.step)};
  h5::Handle indep = dxpl(false);
  H5_CHECKED(H5Dwrite(mine, H5T_NATIVE_ULLONG, H5S_ALL, H5S_ALL, indep, state));
}

}  // namespace

std::string write_checkpoint(const std::string& dir, const memory::ParamStore& ps, const CheckpointBuffers& b,
                             const CheckpointMeta& meta, const comm::Groups& g, int keep, std::size_t alignment) {
  h5::silence();
  const MPI_Comm comm = g.world();
  const std::string name = checkpoint_file_name(meta.step);
  const std::string path = (fs::path(dir) / name).string(), tmp = path + ".tmp";

  // 1. Rank 0 prepares the directory; everyone learns the outcome.
  std::optional<std::string> error;
  if (g.rank() == 0)
    error = error_of(path, [&] {
      if (keep < 1) fail(path, "cannot be written with keep = " + std::to_string(keep) + " (need >= 1)");
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec || !fs::is_directory(dir)) fail(path, "cannot be written: directory '" + dir + "': " + ec.message());
      fs::remove(tmp, ec);
    });
  agree(comm, error);
  const std::string created = bcast(comm, iso_now());

  // 2. The collective create and write. An HDF5 failure is symmetric in practice (the
  //    metadata calls are collective); the ranks agree before anyone throws, and the
  //    handles close (collectively) as the agreement's exception unwinds.
  try {
    h5::Handle file;
    error = error_of(path, [&] {
      h5::Handle fapl = mpio_fapl(comm, alignment);
      h5::LibraryLock lock;  // a background writer shares HDF5 with the training thread
      file = h5::Handle(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
      if (!file.valid()) {
        std::string reason = h5::last_error();
        fail(path, "cannot be created as '" + tmp + "'" + (reason.empty() ? "" : ": " + reason));
      }
    });
    agree(comm, error);
    error = error_of(path, [&] {
      write_contents(file, path, ps, b, meta, g, created);
      H5_CHECKED(H5Fclose(file.release()));  // a failing close (disk full) fails the write
    });
    agree(comm, error);
  } catch (const CheckpointError&) {
    // Every rank is here, the file closed: leave no partial file behind.
    if (g.rank() == 0) {
      std::error_code ec;
      fs::remove(tmp, ec);
    }
    throw;
  }

  // 3. Rank 0 publishes: rename, latest (atomically), retention.
  if (g.rank() == 0)
    error = error_of(path, [&] {
      std::error_code ec;
      fs::rename(tmp, path, ec);
      if (ec) fail(path, "could not be renamed from '" + tmp + "': " + ec.message());
      const fs::path latest = fs::path(dir) / "latest", latest_tmp = fs::path(dir) / "latest.tmp";
      {
        std::ofstream out(latest_tmp, std::ios::trunc);
        out << name << "\n";
        out.close();
        if (!out) fail(path, "is written, but '" + latest_tmp.string() + "' could not be written");
      }
      fs::rename(latest_tmp, latest, ec);
      if (ec) fail(path, "is written, but '" + latest.string() + "' could not be updated: " + ec.message());
      // Retention: names sort by step (zero-padded); leftover .tmp files of older
      // steps are from interrupted writes.
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
    });
  agree(comm, error);
  return path;
}

}  // namespace furnace::io
