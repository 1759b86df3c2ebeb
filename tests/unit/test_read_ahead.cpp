// io::ReadAhead: ranges arrive in order with the file's bytes, a wait returns as soon
// as its prefix is in, a range past the end of the file reports the error to that
// wait (and to every later one) instead of blocking, and destroying a reader with
// work left stops it.
#include "io/read_ahead.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

namespace furnace::io {
namespace {

struct TempFile {
  std::string path = "/tmp/furnace_read_ahead_" + std::to_string(::getpid());
  int fd = -1;
  explicit TempFile(const std::vector<char>& bytes) {
    FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    fd = ::open(path.c_str(), O_RDONLY);
  }
  ~TempFile() {
    ::close(fd);
    std::remove(path.c_str());
  }
};

std::vector<char> pattern(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = char((i * 131 + i / 4096) & 0xff);
  return v;
}

TEST(ReadAhead, RangesArriveInOrderWithTheFilesBytes) {
  const auto bytes = pattern(1 << 20);
  TempFile file(bytes);
  // Out of file order and of different sizes, including an empty one; piece 4 KiB so
  // every range takes several reads.
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> spans = {
      {500000, 70001}, {0, 4096}, {12345, 0}, {700000, 348576}, {4096, 100000}};
  std::vector<std::vector<char>> dst;
  std::vector<ReadAhead::Range> ranges;
  for (auto [off, n] : spans) dst.emplace_back(n + 1, '\x7f');
  for (std::size_t i = 0; i < spans.size(); ++i) ranges.push_back({spans[i].first, spans[i].second, dst[i].data()});
  ReadAhead reader(file.fd, ranges, {.piece_bytes = 4096});
  for (std::size_t i = 0; i < spans.size(); ++i) {
    ASSERT_EQ(reader.wait(i, spans[i].second / 2), "");
    ASSERT_EQ(reader.wait(i, spans[i].second), "");
    EXPECT_TRUE(std::equal(dst[i].begin(), dst[i].end() - 1, bytes.begin() + long(spans[i].first))) << "range " << i;
    EXPECT_EQ(dst[i].back(), '\x7f') << "range " << i << " written past its end";
  }
}

// With an O_DIRECT descriptor and three readers: ranges in phase with their
// destination are read directly (all but an unaligned head and tail), one out of
// phase and one marked shared (other ranks read it) go through the page cache, and
// every byte is the file's, in order.
TEST(ReadAhead, DirectReadsFromSeveralReadersGiveTheFilesBytes) {
  const auto bytes = pattern(1 << 20);
  TempFile file(bytes);
  const int direct = ::open(file.path.c_str(), O_RDONLY | O_DIRECT);
  if (direct < 0) GTEST_SKIP() << "O_DIRECT is not supported for " << file.path;
  constexpr std::size_t kA = ReadAhead::kDirectAlign;
  char* room = static_cast<char*>(std::aligned_alloc(4096, 4 << 20));
  struct Span { std::uint64_t offset, bytes, dst; bool shared = false; };
  const std::vector<Span> spans = {
      {4096, 300000, 0},             // in phase, no head; tail 300000 % 512
      {1000, 200000, (1 << 20) + 1000},  // in phase, head of 24 bytes
      {777, 100000, 2 << 20},        // out of phase: buffered
      {900000, 148576, (3 << 20) + 900000 % kA},  // in phase, to the end of the file
      {8192, 65536, (3 << 20) + (1 << 19), true}};  // in phase but shared: buffered
  std::vector<ReadAhead::Range> ranges;
  std::uint64_t expect_direct = 0;
  for (const Span& sp : spans) {
    ranges.push_back({sp.offset, sp.bytes, room + sp.dst, sp.shared});
    if ((sp.dst - sp.offset) % kA == 0 && !sp.shared) {
      const std::uint64_t head = (kA - sp.offset % kA) % kA;
      expect_direct += (sp.bytes - head) / kA * kA;
    }
  }
  {
    ReadAhead reader(file.fd, ranges, {.piece_bytes = 4096, .direct_fd = direct, .readers = 3});
    EXPECT_EQ(reader.direct_bytes(), expect_direct);
    EXPECT_GT(expect_direct, 0u);
    for (std::size_t i = 0; i < spans.size(); ++i) {
      ASSERT_EQ(reader.wait(i, spans[i].bytes), "");
      EXPECT_TRUE(std::equal(room + spans[i].dst, room + spans[i].dst + spans[i].bytes,
                             bytes.begin() + long(spans[i].offset)))
          << "range " << i;
    }
  }
  ::close(direct);
  std::free(room);
}

TEST(ReadAhead, ARangePastTheEndReportsTheErrorToItsWait) {
  const auto bytes = pattern(100000);
  TempFile file(bytes);
  std::vector<char> a(1000), b(50000), c(10);
  ReadAhead reader(file.fd, {{0, 1000, a.data()}, {80000, 50000, b.data()}, {0, 10, c.data()}}, {.piece_bytes = 8192});
  EXPECT_EQ(reader.wait(0, 1000), "");
  EXPECT_EQ(reader.wait(1, 20000), "");  // the part inside the file arrives
  EXPECT_EQ(reader.wait(1, 50000), "unexpected end of file");
  EXPECT_EQ(reader.wait(2, 10), "unexpected end of file");  // the reader stopped there
}

// The destructor stops the reader after its current piece instead of finishing the
// list: of 1,000 ranges of 16 pieces each, requested and destroyed at once, most are
// never read (each has its own destination, still holding its sentinel).
TEST(ReadAhead, DestroyingWithWorkLeftStopsTheReader) {
  const auto bytes = pattern(1 << 16);
  TempFile file(bytes);
  constexpr int kRanges = 1000;
  std::vector<std::vector<char>> dst(kRanges, std::vector<char>(1 << 16, '\x7f'));
  std::vector<ReadAhead::Range> ranges;
  for (auto& d : dst) ranges.push_back({0, d.size(), d.data()});
  { ReadAhead reader(file.fd, ranges, {.piece_bytes = 4096}); }
  int untouched = 0;
  for (const auto& d : dst) untouched += d.back() == '\x7f';
  EXPECT_GT(untouched, kRanges / 2) << "the reader went on after its destructor was called";
}

}  // namespace
}  // namespace furnace::io
