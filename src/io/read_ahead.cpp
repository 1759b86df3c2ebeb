#include "io/read_ahead.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace furnace::io {

ReadAhead::ReadAhead(int fd, std::vector<Range> ranges, const Options& options)
    : fd_(fd), direct_fd_(options.direct_fd), ranges_(std::move(ranges)) {
  const std::size_t piece = std::max<std::size_t>(options.piece_bytes / kDirectAlign * kDirectAlign, 4096);
  for (std::size_t i = 0; i < ranges_.size(); ++i) split(ranges_[i], i, piece, direct_fd_ >= 0 && !ranges_[i].shared);
  piece_done_.assign(pieces_.size(), 0);
  for (int t = 0; t < std::max(options.readers, 1); ++t) threads_.emplace_back([this] { run(); });
}

ReadAhead::~ReadAhead() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
}

// Pieces of at most piece_bytes; with direct I/O, the block-aligned middle of the
// range is direct and the head and tail (each under one block) are buffered.
void ReadAhead::split(const Range& r, std::size_t index, std::size_t piece_bytes, bool direct_allowed) {
  const std::uint64_t phase_gap = (reinterpret_cast<std::uintptr_t>(r.dst) - r.offset) % kDirectAlign;
  std::uint64_t head = 0, tail = r.bytes;  // the direct part is [head, tail)
  if (direct_allowed && phase_gap == 0) {
    head = std::min<std::uint64_t>((kDirectAlign - r.offset % kDirectAlign) % kDirectAlign, r.bytes);
    tail = head + (r.bytes - head) / kDirectAlign * kDirectAlign;
  }
  auto add = [&](std::uint64_t begin, std::uint64_t end, bool direct) {
    for (std::uint64_t b = begin; b < end; b += piece_bytes)
      pieces_.push_back({index, b, std::min<std::uint64_t>(b + piece_bytes, end), direct});
  };
  const bool any_direct = tail > head && direct_allowed && phase_gap == 0;
  if (!any_direct) return add(0, r.bytes, false);
  add(0, head, false);
  add(head, tail, true);
  add(tail, r.bytes, false);
  direct_bytes_ += tail - head;
}

std::string ReadAhead::read_piece(const Piece& p, std::uint64_t& done) const {
  const Range& r = ranges_[p.range];
  const int fd = p.direct ? direct_fd_ : fd_;
  for (done = p.begin; done < p.end;) {
    const ssize_t got = ::pread(fd, r.dst + done, std::size_t(p.end - done), off_t(r.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return std::strerror(errno);
    if (got == 0) return "unexpected end of file";
    // A short direct read ends at the end of the file; the rest is then past it.
    done += std::uint64_t(got);
  }
  return "";
}

void ReadAhead::run() {
  for (;;) {
    std::size_t mine;
    {
      std::lock_guard lock(mutex_);
      if (stop_ || !error_.empty() || next_ == pieces_.size()) return;
      mine = next_++;
    }
    std::uint64_t arrived = 0;
    const std::string problem = read_piece(pieces_[mine], arrived);
    std::lock_guard lock(mutex_);
    if (!problem.empty() && (error_.empty() || mine < error_piece_))
      error_ = problem, error_piece_ = mine, error_arrived_ = arrived;
    piece_done_[mine] = problem.empty();
    while (done_prefix_ < pieces_.size() && piece_done_[done_prefix_]) ++done_prefix_;
    progress_.notify_all();
  }
}

std::string ReadAhead::wait(std::size_t index, std::uint64_t bytes) {
  // Ready when every piece before the first one that still holds bytes of
  // [0, bytes) of range `index` is in.
  // A failed piece counts with the bytes that arrived before it failed.
  auto ready = [&] {
    if (done_prefix_ == pieces_.size()) return true;
    const Piece& p = pieces_[done_prefix_];
    const std::uint64_t in = !error_.empty() && done_prefix_ == error_piece_ ? error_arrived_ : p.begin;
    return p.range > index || (p.range == index && in >= bytes);
  };
  std::unique_lock lock(mutex_);
  // After a failure no piece is claimed, and every piece before the failed one was
  // claimed earlier, so the prefix stops exactly at the first failed piece.
  progress_.wait(lock, [&] { return ready() || (!error_.empty() && done_prefix_ >= error_piece_); });
  if (ready()) return "";
  return error_;
}

}  // namespace furnace::io
