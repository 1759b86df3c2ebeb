#include "memory/nvme_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace furnace::memory {
namespace {

// glibc before 2.38 names neither the flag nor the two fields; the kernel's layout
// (include/uapi/linux/stat.h, Linux 6.1+) is ABI: stx_dio_mem_align at byte 0x98,
// stx_dio_offset_align at 0x9c of the 256-byte struct.
constexpr unsigned kStatxDioAlign = 0x2000U;
static_assert(sizeof(struct statx) == 0x100, "struct statx is the kernel's 256 bytes");

struct DioAlign {
  bool known = false;          // the file system reported it
  std::uint32_t memory = 0, offset = 0;  // offset 0 when known: no direct I/O for this file
  std::uint32_t blksize = 4096;
};

DioAlign dio_alignment(int fd) {
  struct statx sx;
  std::memset(&sx, 0, sizeof sx);
  DioAlign a;
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | kStatxDioAlign, &sx) != 0) return a;
  a.blksize = sx.stx_blksize;
  if (sx.stx_mask & kStatxDioAlign) {
    a.known = true;
    std::memcpy(&a.memory, reinterpret_cast<const char*>(&sx) + 0x98, 4);
    std::memcpy(&a.offset, reinterpret_cast<const char*>(&sx) + 0x9c, 4);
  }
  return a;
}

std::string sys(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

AlignedBuffer::AlignedBuffer(std::size_t bytes, std::size_t alignment) : bytes_(bytes) {
  void* p = nullptr;
  if (bytes > 0 && ::posix_memalign(&p, alignment, bytes) != 0) throw std::bad_alloc();
  data_ = static_cast<std::byte*>(p);
  if (data_) std::memset(data_, 0, bytes);
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

NvmeFile::NvmeFile(const std::string& dir, const std::string& origin, int rank, const std::string& family,
                   bool force_buffered) {
  const std::string named = "'" + dir + "' (" + origin + ")";
  struct stat st;
  if (dir.empty()) throw std::runtime_error("nvme tier: no directory given (" + origin + ")");
  if (::stat(dir.c_str(), &st) != 0)
    throw std::runtime_error("nvme tier: directory " + named +
                             (errno == ENOENT ? " does not exist; create it on a local NVMe file system"
                                              : " cannot be read: " + std::string(std::strerror(errno))));
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error("nvme tier: " + named + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw std::runtime_error(sys("nvme tier: directory " + named + " is not writable"));
  rank_dir_ = dir + "/rank" + std::to_string(rank);
  if (::mkdir(rank_dir_.c_str(), 0755) != 0 && errno != EEXIST)
    throw std::runtime_error(sys("nvme tier: cannot create '" + rank_dir_ + "'"));
  path_ = rank_dir_ + "/" + family + ".bin";
  // Opened without O_TRUNC: the lock must be held before the contents are discarded,
  // or a second job would truncate the first one's file.
  const int base = O_RDWR | O_CREAT | O_CLOEXEC;
  fd_ = ::open(path_.c_str(), base | (force_buffered ? 0 : O_DIRECT), 0600);
  std::string refused = force_buffered ? "forced" : "";
  if (fd_ < 0 && errno == EINVAL) {
    refused = "the file system refused O_DIRECT at open";
    fd_ = ::open(path_.c_str(), base, 0600);
  }
  if (fd_ < 0) {
    const std::string msg = sys("nvme tier: cannot create '" + path_ + "'");
    ::rmdir(rank_dir_.c_str());
    throw std::runtime_error(msg);
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string why = errno == EWOULDBLOCK ? "is in use by another process (another job with the same " +
                                                       origin + "?)"
                                                 : std::string("cannot be locked: ") + std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error("nvme tier: '" + path_ + "' " + why);
  }
  auto fail = [&](const std::string& msg) {
    ::close(fd_);
    ::unlink(path_.c_str());
    ::rmdir(rank_dir_.c_str());
    throw std::runtime_error("nvme tier: " + msg);
  };
  if (::ftruncate(fd_, 0) != 0) fail(sys("cannot truncate '" + path_ + "'"));
  const DioAlign a = dio_alignment(fd_);
  direct_ = refused.empty();
  if (direct_ && a.known && a.offset == 0) refused = "the file system reports no direct I/O for this file";
  alignment_ = std::max<std::size_t>({4096, a.memory, a.offset});
  // Without the statx answer, st_blksize (the preferred I/O size); capped, since on
  // parallel file systems it is a stripe of megabytes and every region pads to it.
  if (!a.known) alignment_ = std::max<std::size_t>(4096, std::min<std::size_t>(a.blksize, 1 << 20));
  if ((alignment_ & (alignment_ - 1)) != 0) fail("'" + path_ + "': alignment " + std::to_string(alignment_) +
                                                 " is not a power of two");
  if (refused.empty() && !direct_transfers_work()) refused = "an aligned O_DIRECT transfer failed with EINVAL";
  if (!refused.empty() && fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) & ~O_DIRECT) != 0)
    fail(sys("cannot clear O_DIRECT on '" + path_ + "'"));
  direct_ = refused.empty();
  mode_ = direct_ ? "O_DIRECT, " + std::to_string(alignment_) + "-byte alignment"
                  : "buffered + posix_fadvise(DONTNEED) (" + refused + "), " + std::to_string(alignment_) +
                        "-byte alignment";
}

// Some file systems (FUSE, some network ones) accept O_DIRECT at open and refuse the
// transfers: one aligned block, written and read back, finds out at set-up.
bool NvmeFile::direct_transfers_work() {
  AlignedBuffer probe(alignment_, alignment_);
  const bool ok = write(probe.data(), alignment_, 0).empty() && read(probe.data(), alignment_, 0).empty();
  const bool einval = !ok && errno == EINVAL;
  if (::ftruncate(fd_, 0) != 0) return false;
  return ok || !einval;
}

NvmeFile::~NvmeFile() {
  ::close(fd_);
  ::unlink(path_.c_str());
  ::rmdir(rank_dir_.c_str());  // fails, harmlessly, while other families' files are there
}

void NvmeFile::reserve(std::uint64_t offset, std::uint64_t bytes) {
  if (bytes == 0) return;
  if (::fallocate(fd_, 0, off_t(offset), off_t(bytes)) == 0) return;
  // A file system without fallocate: at least make the range part of the file.
  if ((errno == EOPNOTSUPP || errno == ENOSYS) && ::ftruncate(fd_, off_t(offset + bytes)) == 0) return;
  throw std::runtime_error(sys("nvme tier: cannot reserve " + std::to_string(bytes) + " bytes at offset " +
                               std::to_string(offset) + " of '" + path_ + "'"));
}

std::string NvmeFile::transfer(bool write, void* buf, std::size_t bytes, std::uint64_t offset) const {
  auto* p = static_cast<char*>(buf);
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t r = write ? ::pwrite(fd_, p + done, bytes - done, off_t(offset + done))
                            : ::pread(fd_, p + done, bytes - done, off_t(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::strerror(errno);
    // A short transfer is the end of the file (reads) or of the space (writes); going on
    // from an unaligned point would only turn that into EINVAL under O_DIRECT.
    if (r == 0 || (direct_ && std::size_t(r) % alignment_ != 0)) {
      const std::size_t got = done + std::size_t(r);
      errno = write ? ENOSPC : EIO;
      return (write ? "short write: " : "unexpected end of file after ") + std::to_string(got) + " of " +
             std::to_string(bytes) + " bytes";
    }
    done += std::size_t(r);
  }
  if (direct_) return "";
  if (!write) {
    ::posix_fadvise(fd_, off_t(offset), off_t(bytes), POSIX_FADV_DONTNEED);
    return "";
  }
  // Dirty pages are not dropped by DONTNEED, and waiting for each write's own
  // writeback would serialise the disk with the copy (measured: 0.15 of a plain
  // buffered write). So start this range's writeback now, and wait for and drop the
  // previous write's range, which has had one transfer's time to reach the disk: the
  // cache holds at most two regions of this file.
  ::sync_file_range(fd_, off_t(offset), off_t(bytes), SYNC_FILE_RANGE_WRITE);
  drop_written();
  written_offset_ = offset, written_bytes_ = bytes;
  return "";
}

void NvmeFile::drop_written() const {
  if (written_bytes_ == 0) return;
  ::sync_file_range(fd_, off_t(written_offset_), off_t(written_bytes_),
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  ::posix_fadvise(fd_, off_t(written_offset_), off_t(written_bytes_), POSIX_FADV_DONTNEED);
  written_bytes_ = 0;
}

std::string NvmeFile::read(void* dst, std::size_t bytes, std::uint64_t offset) const {
  return transfer(false, dst, bytes, offset);
}

std::string NvmeFile::write(const void* src, std::size_t bytes, std::uint64_t offset) const {
  return transfer(true, const_cast<void*>(src), bytes, offset);
}

std::string NvmeFile::sync() const {
  if (::fdatasync(fd_) != 0) return std::strerror(errno);
  if (!direct_) drop_written();
  return "";
}

}  // namespace furnace::memory
