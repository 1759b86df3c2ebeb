// The checks of a token file that protect the reader from the file (internal to
// dataset.cpp): attribute shapes, storage in proportion to the file, and the scan of
// every token at open. Limits are stated in docs/data.md.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>

#include "io/clip.hpp"
#include "io/dataset.hpp"

namespace furnace::io::detail {

// Largest chunk accepted, in uncompressed bytes (or one read window, if larger):
// every read decompresses whole chunks, and a chunk must fit the chunk cache.
inline constexpr std::uint64_t kMaxChunkBytes = 4u << 20;
// Largest ratio of declared (uncompressed) bytes to the bytes stored: the whole token
// range is scanned at open, so its cost must stay in proportion to the file. Text
// deflates about 2-3x, periodic test patterns about 50x, a chunk of zeros 700x.
inline constexpr double kMaxExpansion = 256;
// Tokens per read of the open-time scan (rounded up to whole chunks): its memory.
inline constexpr std::uint64_t kScanBlockTokens = 1u << 20;

[[noreturn]] inline void data_error(const std::string& path, const std::string& what) {
  throw DataError("data file '" + clip(path) + "' " + what);
}

// The vocab_size attribute of /tokens, checked to be one integer before it is read
// (H5Aread writes the whole attribute: an array would overrun an int). nullopt when absent.
std::optional<int> read_vocab_size(hid_t dset, const std::string& path);

// Refuses a /tokens (1-D, unsigned, n tokens) whose storage is out of proportion:
// layout (no virtual or external storage), chunk size, unwritten chunks or storage
// (they read as fill zeros), declared size against stored bytes. DataError.
void check_token_storage(hid_t dset, const std::string& path, std::int64_t n, std::int64_t window);

// Reads tokens [begin, end) in blocks and returns the DataError message naming the
// first token >= vocab (its element offset) or an unreadable (corrupt) chunk; nullopt
// when every token is fine. Independent I/O: each rank scans its own range.
std::optional<std::string> scan_tokens(hid_t dset, const std::string& path, int vocab, std::int64_t begin,
                                       std::int64_t end);

// This rank's range of the scan: n split over `ranks` in contiguous parts, at chunk
// boundaries so that no chunk is decompressed by two ranks.
std::pair<std::int64_t, std::int64_t> scan_range(std::int64_t n, std::int64_t chunk, int rank, int ranks);
// The chunk length of /tokens (its block for the scan when not chunked).
std::int64_t chunk_tokens(hid_t dset);

}  // namespace furnace::io::detail
