// The backing file of the nvme tier: one per rank and family, at
// <dir>/rank<R>/<family>.bin, so ranks of one job never collide, and locked (flock)
// so a second job given the same directory is refused instead of corrupting it.
// Created at construction, removed (with the rank directory, when empty) by the
// destructor, which also runs when an error unwinds the job.
//
// Transfers use O_DIRECT where the file system allows it: the data then goes between
// the caller's aligned buffer and the device without filling the page cache, which on
// a node whose host memory is already short is the point of the tier. Where O_DIRECT is
// refused (EINVAL at open or at the first aligned transfer), I/O is buffered, and the
// pages of every transfer are dropped with posix_fadvise(DONTNEED) (a write's once its
// writeback is done) so the streamed bytes do not stay in memory; mode() says which,
// in one line.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace furnace::memory {

class NvmeFile {
 public:
  // `origin` names where `dir` came from in messages ("memory.nvme_dir", "--dir").
  // Throws std::runtime_error, one line naming the directory or file, when `dir` is
  // missing, not a directory, not writable, or the file cannot be created or locked.
  NvmeFile(const std::string& dir, const std::string& origin, int rank, const std::string& family,
           bool force_buffered);
  ~NvmeFile();
  NvmeFile(const NvmeFile&) = delete;
  NvmeFile& operator=(const NvmeFile&) = delete;

  const std::string& path() const { return path_; }
  bool direct() const { return direct_; }
  // Offsets, lengths and buffer addresses of every transfer are multiples of this:
  // at least 4096, or the larger direct-I/O alignment statx reports.
  std::size_t alignment() const { return alignment_; }
  const std::string& mode() const { return mode_; }

  // Allocates [offset, offset + bytes) on disk now, so a full disk is found at set-up
  // rather than at the first write of a region. Throws std::runtime_error naming the file.
  void reserve(std::uint64_t offset, std::uint64_t bytes);

  // Whole transfers of aligned ranges: "" or the reason (strerror, or "unexpected end
  // of file after N of M bytes"); the caller names the file and the region.
  std::string read(void* dst, std::size_t bytes, std::uint64_t offset) const;
  std::string write(const void* src, std::size_t bytes, std::uint64_t offset) const;
  std::string sync() const;  // fdatasync

 private:
  std::string transfer(bool write, void* buf, std::size_t bytes, std::uint64_t offset) const;
  bool direct_transfers_work();
  void drop_written() const;  // buffered mode: the last write's pages, once on disk, out of the cache
  std::string path_, rank_dir_, mode_;
  int fd_ = -1;
  bool direct_ = false;
  std::size_t alignment_ = 4096;
  // Buffered mode: the range of the last write, still to be dropped from the page
  // cache. Only the store's I/O thread writes, so no lock.
  mutable std::uint64_t written_offset_ = 0, written_bytes_ = 0;
};

// posix_memalign'ed, zeroed bytes (so every page is resident from the start and
// padding written to the file is deterministic); freed by the destructor.
class AlignedBuffer {
 public:
  AlignedBuffer(std::size_t bytes, std::size_t alignment);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data() const { return data_; }
  std::size_t size() const { return bytes_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// x rounded up to a multiple of the power of two `a`.
inline std::uint64_t round_up(std::uint64_t x, std::uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace furnace::memory
