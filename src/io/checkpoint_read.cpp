// Reading a checkpoint on any layout, and inspecting one. The load runs in phases,
// each ended by an agreement, so that a failure on one rank never leaves another
// inside a later collective call:
//   1. independent checks of the path             (nothing opened yet)
//   2. collective open; header, manifest, datasets (collective metadata reads: every
//      rank sees the same bytes, so a bad file fails at the same point everywhere)
//   3. independent reads of this rank's slabs, straight into the store, each block's
//      checksum and values verified while the piece is in cache
//   4. collective close
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "comm/mpi_check.hpp"
#include "io/checkpoint_internal.hpp"

namespace furnace::io {
namespace fs = std::filesystem;
using namespace ckpt;

namespace {

constexpr int kReadAbort = 3;  // a load that strands ranks ends the job: bad data

// The independent checks before any HDF5 open; returns the file size.
std::uint64_t check_path(const std::string& path) {
  std::error_code ec;
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".tmp") == 0)
    fail(path, "is an incomplete write (.tmp); resume from a complete step_*.h5 file");
  if (!fs::exists(path, ec)) fail(path, "not found");
  if (!fs::is_regular_file(path, ec)) fail(path, "is not a regular file");
  if (!std::ifstream(path)) fail(path, "cannot be read (permissions?)");
  const std::uint64_t bytes = fs::file_size(path, ec);
  if (ec) fail(path, "cannot be read: " + ec.message());
  h5::LibraryLock lock;
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    std::string reason = h5::last_error();
    fail(path, "is not a valid HDF5 file (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
  }
  return bytes;
}

h5::Handle open_file(const std::string& path, hid_t fapl) {
  h5::LibraryLock lock;
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose);
  if (!file.valid()) {
    std::string reason = h5::last_error();
    fail(path, "cannot be opened (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
  }
  return file;
}

// The file's raw bytes, for the data reads (read_verified): an ordinary descriptor,
// and one with O_DIRECT where the file system allows it (-1 where not, e.g. tmpfs,
// which refuses O_DIRECT with EINVAL; every read then goes through the page cache).
struct RawFile {
  int fd, direct_fd;
  explicit RawFile(const std::string& path)
      : fd(::open(path.c_str(), O_RDONLY)), direct_fd(fd < 0 ? -1 : ::open(path.c_str(), O_RDONLY | O_DIRECT)) {
    if (fd < 0) fail(path, std::string("cannot be opened for reading: ") + std::strerror(errno));
  }
  ~RawFile() {
    if (direct_fd >= 0) ::close(direct_fd);
    ::close(fd);
  }
  RawFile(const RawFile&) = delete;
  RawFile& operator=(const RawFile&) = delete;
};

// The model's tensors must be exactly the manifest's, in any order.
void match_model(const memory::StateStore& ps, const CheckpointHeader& h, const std::string& path) {
  for (const auto& p : ps.infos()) {
    const auto it = std::find_if(h.tensors.begin(), h.tensors.end(), [&](const TensorEntry& t) { return t.name == p.name; });
    if (it == h.tensors.end())
      fail(path, "has no tensor " + p.name + " of the model; the checkpoint is of another model");
    if (it->shape != global_dims(p) || it->kind != p.kind)
      fail(path, "has tensor " + p.name + " of shape " + shape_str(it->shape) + ", but the model's " + p.name +
                     " has global shape " + shape_str(global_dims(p)) + "; the checkpoint is of another model");
  }
  if (h.tensors.size() != ps.infos().size())
    for (const auto& t : h.tensors)
      if (ps.find(t.name) < 0)
        fail(path, "has tensor " + t.name + ", which the model does not have; the checkpoint is of another model");
}

}  // namespace

CheckpointMeta read_checkpoint(const std::string& path, memory::StateStore& ps, const comm::Groups& g,
                               long* optimizer_step, const OffloadAccess* offload) {
  h5::silence();
  const MPI_Comm comm = g.world();
  std::uint64_t file_bytes = 0;
  agree(comm, error_of(path, [&] { file_bytes = check_path(path); }), kReadAbort);

  // Handles outlive each agreement: H5Fclose is collective, so no rank closes while
  // another still works on the file.
  h5::Handle file;
  CheckpointHeader header;
  std::vector<h5::Handle> dsets;
  std::vector<std::vector<std::uint64_t>> sums;
  std::vector<const TensorEntry*> entries;
  agree(comm, error_of(path, [&] {
    h5::Handle fapl = mpio_fapl(comm, 0);
    file = open_file(path, fapl);
    header = read_header(file, path);
    match_model(ps, header, path);
    for (const auto& p : ps.infos()) {
      const TensorEntry* t = &*std::find_if(header.tensors.begin(), header.tensors.end(),
                                            [&](const TensorEntry& e) { return e.name == p.name; });
      for (Family f : kFamilies) {
        sums.emplace_back();
        dsets.push_back(open_tensor(file, path, *t, f, file_bytes, &sums.back()));
        entries.push_back(t);
      }
    }
  }), kReadAbort);

  // 3. This rank's slabs, straight into the store (no fresh buffer: faulting in a new
  //    state buffer cost more than the read itself).
  float* bufs[3] = {ps.params().data(), ps.exp_avg().data(), ps.exp_avg_sq().data()};
  std::optional<std::string> error = error_of(path, [&] {
    const RawFile raw(path);
    // Read in file order (HDF5's allocation order, not the store's: out-of-order
    // pieces defeat the kernel's readahead) on a ReadAhead thread, and verify each
    // piece here as it arrives, so checksums and value checks overlap the reads.
    // Measured with bench io --fsync: 0.35-0.5 of a plain read before, 0.8-0.9 after.
    // Direct I/O straight into the store (its large tensors are page-aligned) with
    // kReaders reads in flight, except for rows other ranks read too: those go through
    // the page cache, so a node reads them once (see read_ahead.hpp).
    struct Slab {
      std::size_t dataset;  // index into dsets: 3 * tensor + family
      hsize_t row0, nrows;
      std::uint64_t offset, bytes;
      std::int64_t at;  // element offset of the destination in its family buffer
      bool shared;      // other ranks read the same rows (see ReadAhead::Range::shared)
    };
    std::vector<Slab> slabs;
    for (std::size_t i = 0; i < ps.infos().size(); ++i) {
      const auto& p = ps.info(int(i));
      const hsize_t first = p.kind == memory::ParamKind::Expert ? hsize_t(p.global_offset0) : 0;
      const auto& part = ps.shards().part(int(i));
      for (std::size_t k = 0; k < 3; ++k) {
        // Parameters: every local row. Moments: the rows this rank owns (all of its
        // local rows unless ZeRO-1 shards them), into their packed place.
        const hsize_t row0 = first + (k == 0 ? 0 : hsize_t(part.row0));
        const hsize_t local_rows = p.shape.empty() ? 1 : hsize_t(p.shape[0]);
        const hsize_t nrows = k == 0 ? local_rows : hsize_t(part.rows);
        if (nrows == 0) continue;
        // Dense state is on every rank, an expert's on every rank of its dp group;
        // ZeRO-1 moment shards are this rank's alone.
        const int replicas = p.kind == memory::ParamKind::Dense ? g.size() : g.dp();
        const std::size_t j = 3 * i + k;
        const std::uint64_t row_bytes = 4 * row_elems(entries[j]->shape);
        slabs.push_back({j, row0, nrows, data_offset(dsets[j]) + row0 * row_bytes, nrows * row_bytes,
                         k == 0 ? p.offset : part.offset, replicas > 1 && nrows == local_rows});
      }
    }
    // Offloaded groups (memory.experts = nvme) are read one after the other, each in
    // memory only for its read: segment 0 the resident tensors, segment g + 1 group g.
    auto segment = [&](const Slab& s) { return offload ? offload->group_of(int(s.dataset / 3)) + 1 : 0; };
    std::sort(slabs.begin(), slabs.end(), [&](const Slab& a, const Slab& b) {
      return std::pair(segment(a), a.offset) < std::pair(segment(b), b.offset);
    });
    for (std::size_t first = 0; first < slabs.size();) {
      const int seg = segment(slabs[first]);
      std::size_t end = first;
      while (end < slabs.size() && segment(slabs[end]) == seg) ++end;
      if (seg > 0) offload->bring(seg - 1);
      std::vector<ReadAhead::Range> ranges;
      for (std::size_t i = first; i < end; ++i)
        ranges.push_back({slabs[i].offset, slabs[i].bytes, reinterpret_cast<char*>(bufs[slabs[i].dataset % 3] + slabs[i].at),
                          slabs[i].shared});
      ReadAhead reader(raw.fd, std::move(ranges),
                       {.piece_bytes = kPieceBytes, .direct_fd = raw.direct_fd, .readers = kReaders});
      for (std::size_t i = first; i < end; ++i) {
        const Slab& s = slabs[i];
        const int k = int(s.dataset % 3);
        const Prefetched ahead{&reader, i - first};
        const std::string problem = read_verified(raw.fd, dsets[s.dataset], *entries[s.dataset], kFamilies[k],
                                                  sums[s.dataset], s.row0, s.nrows, bufs[k] + s.at, false,
                                                  nullptr, &ahead);
        if (!problem.empty()) fail(path, problem);
      }
      if (seg > 0) offload->done(seg - 1);
      first = end;
    }
  });
  agree(comm, error, kReadAbort);
  // 4. Collective close.
  agree(comm, error_of(path, [&] {
    dsets.clear();
    h5::LibraryLock lock;
    H5_CHECKED(H5Fclose(file.release()));
  }), kReadAbort);
  if (optimizer_step) *optimizer_step = header.optimizer_step;
  return header.meta;
}

CheckpointReport inspect_checkpoint(const std::string& path, bool read_data) {
  h5::silence();
  CheckpointReport report;
  report.path = path;
  try {
    report.file_bytes = check_path(path);
    h5::Handle file = open_file(path, H5P_DEFAULT);
    report.header = read_header(file, path);
    const RawFile raw(path);
    std::vector<float> scratch(kPieceBytes / 4);
    for (const auto& t : report.header.tensors)
      for (Family f : kFamilies) {
        std::vector<std::uint64_t> sums;
        h5::Handle d = open_tensor(file, path, t, f, report.file_bytes, &sums);
        DatasetReport r{t.name, family_name(f), {}};
        if (read_data) {
          // Scratch holds one piece, or one row when a row is larger (bounded by the
          // dataset's storage, which open_tensor checked against the file size).
          scratch.resize(std::max<std::size_t>(scratch.size(), row_elems(t.shape)));
          const std::string problem =
              read_verified(raw.fd, d, t, f, sums, 0, rows_of(t.shape), scratch.data(), true, &r.stats);
          if (!problem.empty()) fail(path, problem);
        }
        report.datasets.push_back(std::move(r));
      }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint '" + path + "': " + e.what());
  }
  return report;
}

}  // namespace furnace::io
