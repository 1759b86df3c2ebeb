// A background reader that pulls a list of byte ranges of one file into their
// destination buffers, in order, on its own threads, while the caller verifies what
// has already arrived. The checkpoint load uses it so that checksumming and value
// checks (about a third of a plain read's time from the page cache) overlap the
// reads instead of following them.
//
// Direct I/O: given a second descriptor of the file opened with O_DIRECT, every part
// of a range whose file offset and destination address share their position in a
// 512-byte block is read with it, straight from the device into the destination (no
// page-cache copy, which on 2 cores competes with the verification); the unaligned
// head and tail of a range, and ranges whose offset and address are out of phase, go
// through the ordinary descriptor. Several readers keep more than one request in
// flight, which a single synchronous O_DIRECT stream does not (measured here: 4 MiB
// pieces at 2.4-3.5 GB/s with one reader, 4.5-5.2 GB/s with two). The checkpoint
// load uses eight: see docs/checkpoint-format.md for its bench io ratios.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace furnace::io {

class ReadAhead {
 public:
  struct Range {
    std::uint64_t offset = 0, bytes = 0;  // in the file
    char* dst = nullptr;                  // bytes of room
    // Other ranks read these bytes too (replicated state): they go through the page
    // cache, never O_DIRECT, so that the ranks of a node read them from the device
    // once (concurrent buffered reads of one page wait on one device read).
    bool shared = false;
  };
  struct Options {
    std::size_t piece_bytes = 4 << 20;  // largest single read
    int direct_fd = -1;                 // the file opened with O_DIRECT, or -1
    int readers = 1;                    // threads with a read in flight
  };
  inline static constexpr std::uint64_t kDirectAlign = 512;  // O_DIRECT offset/size/address unit

  // Starts reading `ranges` of the file open as fd (which, like direct_fd, must
  // outlive this), in order of the list.
  ReadAhead(int fd, std::vector<Range> ranges, const Options& options);
  ~ReadAhead();  // stops after the current pieces and joins
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Blocks until the first `bytes` of range `index` are in its dst. Returns "" or the
  // error (strerror, or "unexpected end of file") that stopped the readers there.
  std::string wait(std::size_t index, std::uint64_t bytes);
  // Bytes that are (or will be) read with the O_DIRECT descriptor.
  std::uint64_t direct_bytes() const { return direct_bytes_; }

 private:
  struct Piece {
    std::size_t range;
    std::uint64_t begin, end;  // bytes of the range
    bool direct;
  };
  void split(const Range& r, std::size_t index, std::size_t piece_bytes, bool direct_allowed);
  void run();
  // Reads piece p; `done` ends as the range byte up to which it arrived.
  std::string read_piece(const Piece& p, std::uint64_t& done) const;

  int fd_, direct_fd_;
  std::vector<Range> ranges_;
  std::vector<Piece> pieces_;
  std::uint64_t direct_bytes_ = 0;
  std::mutex mutex_;
  std::condition_variable progress_;
  std::size_t next_ = 0;            // the next piece to claim
  std::vector<char> piece_done_;
  std::size_t done_prefix_ = 0;     // pieces [0, done_prefix_) are complete
  std::string error_;               // set when a reader stopped early
  std::size_t error_piece_ = 0;     // the first piece that failed
  std::uint64_t error_arrived_ = 0; // its bytes of the range that did arrive
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace furnace::io
