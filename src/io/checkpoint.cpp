// Checkpoint helpers shared by the writer and the reader, and resume resolution.
#include "io/checkpoint.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/checkpoint_internal.hpp"

namespace furnace::io {
namespace fs = std::filesystem;

namespace ckpt {

void fail(const std::string& path, const std::string& what) {
  throw CheckpointError("checkpoint '" + path + "' " + what);
}

void agree(MPI_Comm comm, const std::optional<std::string>& error, int abort_code) {
  if (auto agreed = h5::agree_on_error(comm, error, abort_code)) throw CheckpointError(*agreed);
}

h5::Handle mpio_fapl(MPI_Comm comm, std::size_t alignment) {
  h5::Handle fapl(H5_CHECKED(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  H5_CHECKED(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));  // duplicates comm
  // Metadata: read by one rank and broadcast, written collectively (HDF5 >= 1.10).
  H5_CHECKED(H5Pset_all_coll_metadata_ops(fapl, true));
  H5_CHECKED(H5Pset_coll_metadata_write(fapl, true));
  if (alignment > 0) H5_CHECKED(H5Pset_alignment(fapl, kAlignThreshold, hsize_t(alignment)));
  return fapl;
}

h5::Handle dxpl(bool collective) {
  h5::Handle p(H5_CHECKED(H5Pcreate(H5P_DATASET_XFER)), H5Pclose);
  H5_CHECKED(H5Pset_dxpl_mpio(p, collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT));
  return p;
}

std::string shape_str(const std::vector<hsize_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<hsize_t> global_dims(const memory::ParamInfo& p) {
  return std::vector<hsize_t>(p.global_shape.begin(), p.global_shape.end());
}

}  // namespace ckpt

std::string checkpoint_file_name(long step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step_%08ld.h5", step);
  return buf;
}

std::string resolve_resume(const std::string& dir, const std::string& spec) {
  std::error_code ec;
  auto from_latest = [&](const fs::path& d, bool required) -> std::string {
    const fs::path latest = d / "latest";
    if (!fs::exists(latest, ec)) {
      if (required) throw CheckpointError("checkpoint directory '" + d.string() + "' has no 'latest' file; name a step_*.h5 file to resume from");
      return "";
    }
    std::ifstream in(latest);
    std::string name;
    std::getline(in, name);
    while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
    if (!in && !in.eof()) throw CheckpointError("checkpoint index '" + latest.string() + "' cannot be read");
    if (name.empty()) throw CheckpointError("checkpoint index '" + latest.string() + "' is empty; name a step_*.h5 file to resume from");
    const fs::path file = d / name;
    if (!fs::exists(file, ec))
      throw CheckpointError("checkpoint index '" + latest.string() + "' names '" + name +
                            "', which does not exist; name an existing step_*.h5 file to resume from");
    return file.string();
  };
  if (spec == "auto") return from_latest(dir, false);
  if (spec.size() >= 4 && spec.compare(spec.size() - 4, 4, ".tmp") == 0)
    throw CheckpointError("checkpoint '" + spec + "' is an incomplete write (.tmp); resume from a complete step_*.h5 file or `auto`");
  if (fs::is_directory(spec, ec)) return from_latest(spec, true);
  if (!fs::exists(spec, ec)) throw CheckpointError("checkpoint '" + spec + "' not found");
  return spec;
}

}  // namespace furnace::io
