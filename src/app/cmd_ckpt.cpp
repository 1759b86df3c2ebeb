// `furnace ckpt inspect` (see cmd_ckpt.hpp). Plain serial HDF5 (the default file
// driver): the file is opened read-only by one process; nothing is collective.
#include "app/cmd_ckpt.hpp"

#include <hdf5.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "app/commands.hpp"
#include "io/checkpoint.hpp"
#include "io/hdf5_util.hpp"

namespace furnace::app {
namespace {
namespace fs = std::filesystem;
namespace h5 = io::h5;

// An integrity failure: one line, naming the file (and the dataset).
struct Bad : std::runtime_error {
  using runtime_error::runtime_error;
};

std::string shape_str(const std::vector<hsize_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// True when every link of the absolute path `name` exists (H5Lexists fails on a
// missing intermediate group).
bool exists(hid_t file, const std::string& name) {
  for (std::size_t at = name.find('/', 1);; at = name.find('/', at + 1)) {
    if (H5_CHECKED(H5Lexists(file, name.substr(0, at).c_str(), H5P_DEFAULT)) <= 0) return false;
    if (at == std::string::npos) return true;
  }
}

std::string dtype_str(hid_t type) {
  const H5T_class_t c = H5Tget_class(type);
  const std::size_t bits = 8 * H5Tget_size(type);
  const bool be = H5Tget_order(type) == H5T_ORDER_BE;
  std::string s = c == H5T_FLOAT     ? "float" + std::to_string(bits)
                  : c == H5T_INTEGER ? (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits)
                  : c == H5T_STRING  ? "string"
                                     : "class" + std::to_string(int(c));
  return be ? s + " BE" : s;
}

struct Tensor {
  std::string name;  // relative to /model
  std::vector<hsize_t> dims;
  std::string dtype;
  double bytes = 0;
  std::string m, v;  // "ok" or the problem
};

// Names of every dataset below /model (relative, '/'-nested names included).
std::vector<std::string> model_datasets(hid_t model) {
  std::vector<std::string> names;
  auto cb = [](hid_t g, const char* name, const H5L_info_t* info, void* out) -> herr_t {
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    if (H5Iget_type(o) == H5I_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
    H5Oclose(o);
    return 0;
  };
  H5_CHECKED(H5Lvisit(model, H5_INDEX_NAME, H5_ITER_INC, cb, &names));
  return names;
}

struct Opened {
  h5::Handle dset, space, type;
  std::vector<hsize_t> dims;
  hssize_t count = 0;
};

Opened open_dataset(hid_t file, const std::string& name) {
  Opened o;
  o.dset = h5::Handle(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!o.dset.valid()) {
    h5::last_error();
    throw Bad("has " + name + ", but it is not a dataset");
  }
  o.type = h5::Handle(H5_CHECKED(H5Dget_type(o.dset)), H5Tclose);
  o.space = h5::Handle(H5_CHECKED(H5Dget_space(o.dset)), H5Sclose);
  const int nd = H5_CHECKED(H5Sget_simple_extent_ndims(o.space));
  o.dims.assign(std::size_t(nd), 0);
  if (nd > 0) H5_CHECKED(H5Sget_simple_extent_dims(o.space, o.dims.data(), nullptr));
  o.count = H5_CHECKED(H5Sget_simple_extent_npoints(o.space));
  return o;
}

// The dataset's data must lie inside the file (a cheap check for a cut-off file whose
// superblock was patched, or a write that never reached the data).
void check_storage(const Opened& o, const std::string& name, hsize_t file_size) {
  if (o.count == 0) return;
  const haddr_t off = H5Dget_offset(o.dset);
  h5::last_error();
  const hsize_t size = H5Dget_storage_size(o.dset);
  if (off == HADDR_UNDEF) {
    if (size == 0) throw Bad("has dataset " + name + " with no data written (storage not allocated)");
    return;  // not contiguous (chunked/compact): HDF5 checks its own addresses on read
  }
  if (off + size > file_size)
    throw Bad("has dataset " + name + " whose data ends at byte " + std::to_string(off + size) +
              ", beyond the end of the file (" + std::to_string(file_size) + " bytes): truncated");
}

struct Stats {
  double min = std::numeric_limits<double>::infinity(), max = -min, sum_abs = 0;
  long long nonfinite = 0, n = 0;
};

// Reads all of a float dataset, in slabs of rows of at most ~16 M elements.
Stats read_stats(const Opened& o, const std::string& name) {
  Stats st;
  if (o.count == 0) return st;
  if (H5Tget_class(o.type) != H5T_FLOAT) throw Bad("has dataset " + name + " of non-float type " + dtype_str(o.type));
  const std::size_t nd = o.dims.size();
  const hsize_t rows = nd ? o.dims[0] : 1;
  const hsize_t per_row = nd ? hsize_t(o.count) / std::max<hsize_t>(rows, 1) : 1;
  const hsize_t step = std::max<hsize_t>(1, (hsize_t(16) << 20) / std::max<hsize_t>(per_row, 1));
  std::vector<float> buf;
  for (hsize_t r0 = 0; r0 < rows; r0 += step) {
    const hsize_t nr = std::min(step, rows - r0);
    const hsize_t n = nr * per_row;
    buf.resize(n);
    try {
      h5::Handle fspace(H5_CHECKED(H5Scopy(o.space)), H5Sclose);
      if (nd) {
        std::vector<hsize_t> start(nd, 0), cnt(o.dims);
        start[0] = r0, cnt[0] = nr;
        H5_CHECKED(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr));
      }
      h5::Handle mspace(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
      H5_CHECKED(H5Dread(o.dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf.data()));
    } catch (const h5::Error& e) {
      throw Bad("cannot read dataset " + name + " (rows " + std::to_string(r0) + ".." + std::to_string(r0 + nr) +
                "): " + e.what());
    }
    for (float x : buf) {
      if (!std::isfinite(x)) {
        ++st.nonfinite;
        continue;
      }
      st.min = std::min(st.min, double(x));
      st.max = std::max(st.max, double(x));
      st.sum_abs += std::fabs(double(x));
      ++st.n;
    }
  }
  return st;
}

// The whole inspection; throws Bad (or h5::Error) on the first fatal problem, returns
// the first non-fatal one (a tensor's moments) after printing everything.
std::string inspect(const std::string& path, bool verify) {
  std::error_code ec;
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".tmp") == 0)
    throw Bad("is an incomplete write (.tmp): the writer was interrupted before the rename; use a complete step_*.h5");
  if (!fs::exists(path, ec)) throw Bad("not found");
  if (!fs::is_regular_file(path, ec)) throw Bad("is not a regular file");
  if (!std::ifstream(path)) throw Bad("cannot be read (permissions?)");
  const hsize_t file_size = hsize_t(fs::file_size(path, ec));
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    const std::string reason = h5::last_error();
    throw Bad("is not a valid HDF5 file (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
  }
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) {
    const std::string reason = h5::last_error();
    throw Bad("cannot be opened (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
  }

  // Header: format, writer, meta, optimizer.
  const auto format = h5::read_string_attr(file, "format");
  if (!format || *format != "furnace-checkpoint")
    throw Bad("is not a furnace checkpoint (root attribute format is " + (format ? "'" + *format + "'" : "missing") +
              ", expected 'furnace-checkpoint')");
  const auto version = h5::read_int_attr(file, "format_version");
  if (!version) throw Bad("has no format_version attribute");
  auto str = [&](const char* a) { return h5::read_string_attr(file, a).value_or("(missing)"); };
  if (!exists(file, "/meta")) throw Bad("has no /meta group");
  h5::Handle meta(H5_CHECKED(H5Oopen(file, "meta", H5P_DEFAULT)), H5Oclose);
  auto i64 = [&](hid_t o, const char* a) -> long long {
    const auto v = h5::read_i64_attr(o, a);
    if (!v) throw Bad(std::string("has no /meta attribute ") + a);
    return *v;
  };
  auto i32 = [&](const char* a) -> int {
    const auto v = h5::read_int_attr(meta, a);
    if (!v) throw Bad(std::string("has no /meta attribute ") + a);
    return *v;
  };
  const long long step = i64(meta, "step"), tokens = i64(meta, "tokens_seen");
  const auto seed = h5::read_u64_attr(meta, "seed");
  if (!seed) throw Bad("has no /meta attribute seed");
  const int world = i32("world"), dp = i32("dp"), ep = i32("ep");
  if (!exists(file, "/meta/config_json")) throw Bad("has no dataset /meta/config_json");
  std::size_t config_bytes = 0;
  {
    Opened c = open_dataset(file, "/meta/config_json");
    if (H5Tget_class(c.type) != H5T_STRING) throw Bad("has /meta/config_json that is not a string");
    config_bytes = H5Tget_size(c.type);
  }
  if (!exists(file, "/optim")) throw Bad("has no /optim group");
  h5::Handle optim(H5_CHECKED(H5Oopen(file, "optim", H5P_DEFAULT)), H5Oclose);
  const auto opt_step = h5::read_i64_attr(optim, "step");
  if (!opt_step) throw Bad("has no /optim attribute step");
  if (!exists(file, "/model")) throw Bad("has no /model group");
  h5::Handle model(H5_CHECKED(H5Oopen(file, "model", H5P_DEFAULT)), H5Oclose);
  hsize_t rng_count = 0;
  if (exists(file, "/rng")) {
    h5::Handle rng(H5_CHECKED(H5Oopen(file, "rng", H5P_DEFAULT)), H5Oclose);
    H5G_info_t gi;
    H5_CHECKED(H5Gget_info(rng, &gi));
    rng_count = gi.nlinks;
  }

  std::printf("checkpoint %s (%.1f MiB)\n", path.c_str(), double(file_size) / double(1 << 20));
  std::printf("  format          %s, version %d%s\n", format->c_str(), *version,
              *version == 1 ? "" : " (this furnace reads version 1)");
  std::printf("  written by      furnace %s (git %s), created %s\n", str("furnace_version").c_str(),
              str("git_revision").c_str(), str("created").c_str());
  std::printf("  step            %lld, tokens seen %lld, seed %llu\n", step, tokens, *seed);
  std::printf("  layout          world %d = dp %d x ep %d (any layout may read it)\n", world, dp, ep);
  std::printf("  optimizer step  %lld\n", *opt_step);
  std::printf("  config_json     %zu bytes; /rng entries: %llu\n", config_bytes, (unsigned long long)rng_count);
  if (*version != 1) throw Bad("has format_version " + std::to_string(*version) + "; this furnace reads version 1");

  // Tensors.
  const auto names = model_datasets(model);
  if (names.empty()) throw Bad("has no datasets under /model");
  std::vector<Tensor> tensors;
  std::string problem;
  double total_elems = 0, total_bytes = 0;
  for (const auto& n : names) {
    Tensor t;
    t.name = n;
    const std::string mp = "/model/" + n;
    Opened o = open_dataset(file, mp);
    check_storage(o, mp, file_size);
    t.dims = o.dims;
    t.dtype = dtype_str(o.type);
    t.bytes = double(o.count) * double(H5Tget_size(o.type));
    total_elems += double(o.count);
    total_bytes += t.bytes;
    if (H5Tget_class(o.type) != H5T_FLOAT && problem.empty())
      problem = "has dataset " + mp + " of non-float type " + t.dtype;
    for (const char* which : {"exp_avg", "exp_avg_sq"}) {
      const std::string op = "/optim/" + n + "/" + which;
      std::string& status = std::strcmp(which, "exp_avg") == 0 ? t.m : t.v;
      if (!exists(file, op)) {
        status = "MISSING";
        if (problem.empty()) problem = "has no dataset " + op + " (the " + which + " moment of " + mp + ")";
        continue;
      }
      Opened q = open_dataset(file, op);
      check_storage(q, op, file_size);
      if (q.dims != o.dims) {
        status = "SHAPE " + shape_str(q.dims);
        if (problem.empty())
          problem = "has dataset " + op + " of shape " + shape_str(q.dims) + ", but " + mp + " has shape " +
                    shape_str(o.dims);
      } else if (H5Tget_class(q.type) != H5T_FLOAT) {
        status = "TYPE " + dtype_str(q.type);
        if (problem.empty()) problem = "has dataset " + op + " of non-float type " + dtype_str(q.type);
      } else {
        status = "ok";
      }
    }
    tensors.push_back(std::move(t));
  }

  std::size_t w = 6;
  for (const auto& t : tensors) w = std::max(w, t.name.size());
  std::printf("\n  %-*s  %-18s %-8s %10s  %-8s %-8s\n", int(w), "tensor", "shape", "dtype", "MiB", "exp_avg",
              "exp_avg_sq");
  for (const auto& t : tensors)
    std::printf("  %-*s  %-18s %-8s %10.3f  %-8s %-8s\n", int(w), t.name.c_str(), shape_str(t.dims).c_str(),
                t.dtype.c_str(), t.bytes / double(1 << 20), t.m.c_str(), t.v.c_str());
  std::printf("\n  %zu tensors, %.0f parameters, %.1f MiB of parameters (%.1f MiB with both moments)\n",
              tensors.size(), total_elems, total_bytes / double(1 << 20), 3 * total_bytes / double(1 << 20));
  std::fflush(stdout);

  if (verify) {
    std::printf("\n  verify: every dataset read in full\n");
    std::printf("  %-*s  %-10s %14s %14s %14s  %s\n", int(w), "tensor", "dataset", "min", "max", "mean|x|", "non-finite");
    std::string bad;
    for (const auto& t : tensors)
      for (const char* which : {"param", "exp_avg", "exp_avg_sq"}) {
        const bool param = which[0] == 'p';
        const std::string dp_ = param ? "/model/" + t.name : "/optim/" + t.name + "/" + which;
        const std::string& status = std::strcmp(which, "exp_avg") == 0 ? t.m : t.v;
        if (!param && status != "ok") continue;  // already reported
        Opened o = open_dataset(file, dp_);
        const Stats st = read_stats(o, dp_);
        std::printf("  %-*s  %-10s %14.6g %14.6g %14.6g  %lld\n", int(w), t.name.c_str(), which, st.n ? st.min : 0.0,
                    st.n ? st.max : 0.0, st.n ? st.sum_abs / double(st.n) : 0.0, st.nonfinite);
        if (st.nonfinite && bad.empty())
          bad = "has dataset " + dp_ + " with " + std::to_string(st.nonfinite) + " non-finite values (NaN/Inf)";
      }
    std::fflush(stdout);
    if (problem.empty()) problem = bad;
  }
  return problem;
}

}  // namespace

int cmd_ckpt_inspect(const std::string& path_in, bool verify) {
  int initialized = 0, rank = 0, size = 1;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  int rc = kOk;
  if (rank == 0) {
    h5::silence();
    std::string path = path_in;
    std::string problem;
    try {
      std::error_code ec;
      if (fs::is_directory(path, ec)) path = io::resolve_resume(path, path);  // its `latest`
      problem = inspect(path, verify);
    } catch (const io::CheckpointError& e) {
      std::fprintf(stderr, "furnace: %s\n", e.what());
      rc = kBadData;
    } catch (const Bad& e) {
      problem = e.what();
    } catch (const h5::Error& e) {
      problem = std::string("cannot be read: ") + e.what();
    } catch (const std::exception& e) {
      problem = std::string("cannot be inspected: ") + e.what();
    }
    if (!problem.empty()) {
      std::fflush(stdout);
      std::fprintf(stderr, "furnace: checkpoint '%s' %s\n", path.c_str(), problem.c_str());
      rc = kBadData;
    } else if (rc == kOk) {
      std::printf("  intact%s\n", verify ? " (every dataset read, all values finite)" : "");
    }
    std::fflush(stdout);
  }
  if (initialized && size > 1) MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return rc;
}

}  // namespace furnace::app
