#include "io/read_ahead.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace furnace::io {

ReadAhead::ReadAhead(int fd, std::vector<Range> ranges, std::size_t piece_bytes)
    : fd_(fd), ranges_(std::move(ranges)), piece_(std::max<std::size_t>(piece_bytes, 4096)) {
  thread_ = std::thread([this] { run(); });
}

ReadAhead::~ReadAhead() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  thread_.join();
}

void ReadAhead::run() {
  for (std::size_t i = 0; i < ranges_.size(); ++i) {
    const Range& r = ranges_[i];
    for (std::uint64_t done = 0; done < r.bytes;) {
      const std::size_t want = std::size_t(std::min<std::uint64_t>(piece_, r.bytes - done));
      const ssize_t got = ::pread(fd_, r.dst + done, want, off_t(r.offset + done));
      std::lock_guard lock(mutex_);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) error_ = got == 0 ? "unexpected end of file" : std::strerror(errno);
      if (got <= 0 || stop_) {
        if (error_.empty()) error_ = "reading stopped";
        progress_.notify_all();
        return;
      }
      done += std::uint64_t(got);
      bytes_done_ = done;
      if (done == r.bytes) range_done_ = i + 1, bytes_done_ = 0;
      progress_.notify_all();
    }
    if (r.bytes == 0) {
      std::lock_guard lock(mutex_);
      range_done_ = i + 1;
      progress_.notify_all();
    }
  }
}

std::string ReadAhead::wait(std::size_t index, std::uint64_t bytes) {
  std::unique_lock lock(mutex_);
  progress_.wait(lock, [&] { return range_done_ > index || (range_done_ == index && bytes_done_ >= bytes) ||
                                    !error_.empty(); });
  if (range_done_ > index || (range_done_ == index && bytes_done_ >= bytes)) return "";
  return error_;
}

}  // namespace furnace::io
