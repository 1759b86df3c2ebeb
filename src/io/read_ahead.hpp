// A background reader that pulls a list of byte ranges of one file into their
// destination buffers, in order, on its own thread, while the caller verifies what
// has already arrived. The checkpoint load uses it so that checksumming and value
// checks (about a third of a plain read's time from the page cache) overlap the
// reads instead of following them.
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
  };
  // Starts reading `ranges` of the file open as fd (which must outlive this), in
  // order, in pieces of `piece_bytes`.
  ReadAhead(int fd, std::vector<Range> ranges, std::size_t piece_bytes);
  ~ReadAhead();  // stops after the current piece and joins
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Blocks until the first `bytes` of range `index` are in its dst. Returns "" or the
  // error (strerror, or "unexpected end of file") that stopped the reader there.
  std::string wait(std::size_t index, std::uint64_t bytes);

 private:
  void run();
  int fd_;
  std::vector<Range> ranges_;
  std::size_t piece_;
  std::mutex mutex_;
  std::condition_variable progress_;
  std::size_t range_done_ = 0;     // ranges [0, range_done_) are complete
  std::uint64_t bytes_done_ = 0;   // bytes of range range_done_ that are in
  std::string error_;              // set when the reader stopped early
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace furnace::io
