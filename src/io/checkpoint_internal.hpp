// Pieces shared by checkpoint_write.cpp, checkpoint_read.cpp and checkpoint_format.cpp
// (not a public header). The format itself is docs/checkpoint-format.md.
#pragma once
// xxHash's header carries its implementation: inlined, XXH3 is compiled for this
// machine's vector units (-march=native: 43 GB/s with AVX-512 here) instead of the
// Debian library's baseline x86-64 build (14.5 GB/s), which made checksums a third
// of a checkpoint load's CPU time.
// GCC 12 warns (-W[maybe-]uninitialized) inside the AVX-512 intrinsics XXH3 inlines: a
// known false positive of those intrinsics' undefined-register idiom.
#define XXH_INLINE_ALL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/hdf5_util.hpp"
#include "io/read_ahead.hpp"

namespace furnace::io::ckpt {

inline constexpr const char* kFormat = "furnace-checkpoint";
inline constexpr int kFormatVersion = 2;
inline constexpr hsize_t kAlignThreshold = 64 << 10;     // objects >= 64 KiB are aligned
inline constexpr std::size_t kPieceBytes = 4 << 20;      // read granularity
inline constexpr int kReaders = 8;                      // reads in flight per rank (read_ahead.hpp)
inline constexpr std::size_t kVerifyBytes = 256 << 10;   // verify granularity (in a core's L2)
inline constexpr std::size_t kMaxJsonBytes = 64 << 20;   // config_json, manifest_json
inline constexpr const char* kChecksumAttr = "xxh3_64";

// The three state families a checkpoint stores per tensor.
enum class Family { Param, ExpAvg, ExpAvgSq };
inline constexpr Family kFamilies[] = {Family::Param, Family::ExpAvg, Family::ExpAvgSq};
const char* family_name(Family f);  // "param", "exp_avg", "exp_avg_sq"
std::string dataset_path(const std::string& tensor, Family f);  // /model/<t>, /optim/<t>/<family>

[[noreturn]] void fail(const std::string& path, const std::string& what);

// Runs f; returns the failure (a CheckpointError's or an HDF5 error's message, naming
// the file) instead of throwing it.
template <class F>
std::optional<std::string> error_of(const std::string& path, F&& f) {
  try {
    f();
    return std::nullopt;
  } catch (const CheckpointError& e) {
    return std::string(e.what());
  } catch (const std::exception& e) {
    return "checkpoint '" + path + "': " + e.what();
  }
}

// Every rank of comm throws the same CheckpointError when any rank has an error; a
// rank whose partners are stuck elsewhere ends the job with exit `abort_code`.
void agree(MPI_Comm comm, const std::optional<std::string>& error, int abort_code);

// A file-access property list for the MPI-IO driver on comm, with collective metadata
// operations (and alignment when > 0).
h5::Handle mpio_fapl(MPI_Comm comm, std::size_t alignment);
h5::Handle dxpl(bool collective);

std::string shape_str(const std::vector<hsize_t>& s);
std::vector<hsize_t> global_dims(const memory::ParamInfo& p);

// Rows (dim 0) and elements per row of a global shape (a scalar is one row of one).
hsize_t rows_of(const std::vector<hsize_t>& shape);
hsize_t row_elems(const std::vector<hsize_t>& shape);
// Checksum blocks: the whole tensor for Dense tensors, one per expert (row) for
// Expert tensors, so every rank verifies exactly the slab it reads.
hsize_t block_rows(const TensorEntry& t);
hsize_t block_count(const TensorEntry& t);

inline std::uint64_t hash_bytes(const void* p, std::size_t n) { return XXH3_64bits(p, n); }

// The tensor list stored in /meta/manifest_json, and its parser (checks every field).
std::string manifest_json(const std::vector<memory::ParamInfo>& infos);
std::vector<TensorEntry> parse_manifest(const std::string& json, const std::string& path);

// Everything the file's metadata says, validated: format and version, /meta (scalar
// attributes of the right types, sane values), config_json and the manifest (bounded
// strings), /optim step. Throws CheckpointError naming the file and the item.
CheckpointHeader read_header(hid_t file, const std::string& path);

// Opens one dataset of tensor t, checking that it is a contiguous float32 dataset of
// t's shape whose storage is allocated and lies inside the file, and reads its
// checksum attribute (block_count(t) values) into *sums.
h5::Handle open_tensor(hid_t file, const std::string& path, const TensorEntry& t, Family f,
                       std::uint64_t file_bytes, std::vector<std::uint64_t>* sums);

// Reads rows [row0, row0 + nrows) of dataset d (tensor t; row0 and nrows block-aligned)
// from the file open as fd, in pieces of about kPieceBytes, verifies every checksum
// block in the range against sums and every value (finite; >= 0 for exp_avg_sq), and
// adds to *stats when given. dst holds the whole range, or (scratch) one piece that
// every piece reuses. With `prefetched`, the bytes are not read here: range
// prefetched->range of its reader brings them into dst (not scratch), and each piece
// is verified as soon as it is in. Returns "" or the first problem, naming the dataset.
struct Prefetched {
  ReadAhead* reader;
  std::size_t range;
};
std::string read_verified(int fd, hid_t d, const TensorEntry& t, Family f, const std::vector<std::uint64_t>& sums,
                          hsize_t row0, hsize_t nrows, float* dst, bool scratch, ValueStats* stats,
                          const Prefetched* prefetched = nullptr);

// The file address of dataset d's raw data (contiguous; open_tensor checked that).
std::uint64_t data_offset(hid_t d);

}  // namespace furnace::io::ckpt
