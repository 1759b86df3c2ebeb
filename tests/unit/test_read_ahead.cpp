// io::ReadAhead: ranges arrive in order with the file's bytes, a wait returns as soon
// as its prefix is in, a range past the end of the file reports the error to that
// wait (and to every later one) instead of blocking, and destroying a reader with
// work left stops it.
#include "io/read_ahead.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
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
  ReadAhead reader(file.fd, ranges, 4096);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    ASSERT_EQ(reader.wait(i, spans[i].second / 2), "");
    ASSERT_EQ(reader.wait(i, spans[i].second), "");
    EXPECT_TRUE(std::equal(dst[i].begin(), dst[i].end() - 1, bytes.begin() + long(spans[i].first))) << "range " << i;
    EXPECT_EQ(dst[i].back(), '\x7f') << "range " << i << " written past its end";
  }
}

TEST(ReadAhead, ARangePastTheEndReportsTheErrorToItsWait) {
  const auto bytes = pattern(100000);
  TempFile file(bytes);
  std::vector<char> a(1000), b(50000), c(10);
  ReadAhead reader(file.fd, {{0, 1000, a.data()}, {80000, 50000, b.data()}, {0, 10, c.data()}}, 8192);
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
  { ReadAhead reader(file.fd, ranges, 4096); }
  int untouched = 0;
  for (const auto& d : dst) untouched += d.back() == '\x7f';
  EXPECT_GT(untouched, kRanges / 2) << "the reader went on after its destructor was called";
}

}  // namespace
}  // namespace furnace::io
