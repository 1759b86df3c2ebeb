// memory::NvmeStore, the nvme tier: random bytes survive a round trip through regions
// of awkward sizes, in O_DIRECT and in buffered mode; a prefetch made while another
// region is held completes on its own (double buffering), and the slots bound what
// may be outstanding; every I/O error names the file (a real short read after the
// file was truncated under the store, a real EFBIG from RLIMIT_FSIZE, an unusable
// directory); staging bytes are in the ledger on the host tier, the file's on the
// nvme tier; the per-rank file and directory are gone after the store.
#include "memory/nvme_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "temp_dir.hpp"

namespace furnace::memory {
namespace {
namespace fs = std::filesystem;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("furnace_nvme") {}
};

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = std::byte(gen() & 0xff);
  return v;
}

NvmeStoreOptions options(const std::string& dir, bool buffered, std::size_t slot_bytes = 1 << 20) {
  return {.dir = dir, .rank = 3, .family = "optimizer", .slot_bytes = slot_bytes, .slots = 2,
          .category = Category::Optimizer, .force_buffered = buffered};
}

// Waits (up to 10 s) until the store reports the read done; false when it never does.
bool becomes_ready(const NvmeStore& s, NvmeStore::Ticket t) {
  for (int i = 0; i < 10000 && !s.ready(t); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return s.ready(t);
}

class NvmeRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(NvmeRoundTrip, RandomBytesComeBackFromEveryRegion) {
  TempDir dir;
  Ledger ledger;
  NvmeStore store(options(dir.path, GetParam()), ledger);
  EXPECT_EQ(store.file().direct(), !GetParam()) << store.file().mode();  // /tmp is ext4 here
  EXPECT_EQ(store.file().path(), dir.path + "/rank3/optimizer.bin");
  const std::vector<std::size_t> sizes = {1, 5000, 3 * 4096, 100003, 1 << 20, 4096};
  std::vector<std::vector<std::byte>> data;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    store.add_region(std::string("r").append(std::to_string(i)), sizes[i]);
    data.push_back(random_bytes(sizes[i], unsigned(i)));
    EXPECT_EQ(store.region(int(i)).offset % store.file().alignment(), 0u);
  }
  // A region never written reads as zeros.
  const auto tz = store.prefetch(2);
  auto z = store.wait(tz);
  EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](std::byte b) { return b == std::byte(0); }));
  store.release(tz);
  for (std::size_t i = 0; i < sizes.size(); ++i) store.write_back(int(i), data[i].data());
  data[1] = random_bytes(sizes[1], 99);  // rewritten: the later write wins
  store.write_back(1, data[1].data());
  store.flush(true);
  // Region 1's rewrite went through a slot that had held 1 MiB of random bytes: the
  // padding up to the alignment is written as zeros all the same.
  const auto& r1 = store.region(1);
  std::vector<std::byte> raw(r1.span - r1.bytes, std::byte(1));
  const int fd = ::open(store.file().path().c_str(), O_RDONLY);
  ASSERT_EQ(::pread(fd, raw.data(), raw.size(), off_t(r1.offset + r1.bytes)), ssize_t(raw.size()));
  ::close(fd);
  EXPECT_TRUE(std::all_of(raw.begin(), raw.end(), [](std::byte b) { return b == std::byte(0); }));
  // Streamed in order, the next region always in flight while the current one is checked.
  NvmeStore::Ticket cur = store.prefetch(0);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const NvmeStore::Ticket next = i + 1 < sizes.size() ? store.prefetch(int(i + 1)) : 0;
    auto got = store.wait(cur);
    ASSERT_EQ(got.size(), sizes[i]);
    EXPECT_EQ(std::memcmp(got.data(), data[i].data(), sizes[i]), 0) << "region " << i;
    store.release(cur);
    cur = next;
  }
}

INSTANTIATE_TEST_SUITE_P(Nvme, NvmeRoundTrip, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Buffered" : "Direct"; });

// While region 0 is held (being worked on), the read of region 1 completes without
// anybody waiting for it; a third read has no slot until one is released.
TEST(NvmeStore, ThePrefetchOfTheNextRegionCompletesWhileTheCurrentIsHeld) {
  TempDir dir;
  Ledger ledger;
  NvmeStore store(options(dir.path, false), ledger);
  for (int i = 0; i < 3; ++i) store.add_region(std::string("r").append(std::to_string(i)), 1 << 20);
  const auto a = random_bytes(1 << 20, 1), b = random_bytes(1 << 20, 2);
  store.write_back(0, a.data());
  store.write_back(1, b.data());
  store.flush();
  const auto t0 = store.prefetch(0), t1 = store.prefetch(1);
  auto held = store.wait(t0);
  EXPECT_TRUE(becomes_ready(store, t1)) << "the second slot's read did not run while the first was held";
  EXPECT_THROW(store.prefetch(2), std::logic_error);  // both slots taken: bounded
  EXPECT_EQ(std::memcmp(held.data(), a.data(), a.size()), 0);
  store.release(t0);
  const auto t2 = store.prefetch(2);
  EXPECT_EQ(std::memcmp(store.wait(t1).data(), b.data(), b.size()), 0);
  EXPECT_TRUE(becomes_ready(store, t2));
  EXPECT_THROW(store.wait(t0), std::logic_error);  // released
}

// The file shrinks under the store: the read of a region past its end is a short read,
// thrown at wait() naming the region and the file, and by every operation after it.
TEST(NvmeStore, AShortReadNamesTheRegionAndTheFile) {
  TempDir dir;
  Ledger ledger;
  NvmeStore store(options(dir.path, false), ledger);
  store.add_region("exp_avg:blocks.0.w1", 8192);
  ASSERT_EQ(::truncate(store.file().path().c_str(), 0), 0);
  const auto t = store.prefetch(0);
  try {
    store.wait(t);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'" + store.file().path() + "'"), std::string::npos) << m;
    EXPECT_NE(m.find("exp_avg:blocks.0.w1"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected end of file"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  EXPECT_THROW(store.flush(), std::runtime_error);
  EXPECT_THROW(store.prefetch(0), std::runtime_error);
}

// A real write error: the file truncated to 0 and the process's file size limited to
// one block, so the write at the second block fails with EFBIG (SIGXFSZ ignored, as
// furnace's main does) and flush() names the file.
TEST(NvmeStore, AFailedWriteNamesTheFileAtFlush) {
  TempDir dir;
  Ledger ledger;
  NvmeStore store(options(dir.path, true), ledger);
  store.add_region("a", 4096);
  store.add_region("b", 4096);
  ASSERT_EQ(::truncate(store.file().path().c_str(), 0), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  ::getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const auto bytes = random_bytes(4096, 7);
  store.write_back(1, bytes.data());
  std::string m;
  try {
    store.flush();
  } catch (const std::runtime_error& e) {
    m = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(m.find("writing region 'b'"), std::string::npos) << m;
  EXPECT_NE(m.find("'" + store.file().path() + "'"), std::string::npos) << m;
  EXPECT_NE(m.find(std::strerror(EFBIG)), std::string::npos) << m;
}

TEST(NvmeStore, AnUnusableDirectoryIsRefusedNamingIt) {
  TempDir dir;
  Ledger ledger;
  auto message = [&](const std::string& d) {
    try {
      NvmeStore store(options(d, false), ledger);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(dir.path + "/missing").find("'" + dir.path + "/missing' (memory.nvme_dir) does not exist"),
            std::string::npos);
  const std::string file = dir.path + "/a_file";
  std::fclose(std::fopen(file.c_str(), "w"));
  EXPECT_NE(message(file).find("'" + file + "' (memory.nvme_dir) is not a directory"), std::string::npos);
  // The same rank's file while a store holds it: a second job given the same directory.
  NvmeStore first(options(dir.path, false), ledger);
  EXPECT_NE(message(dir.path).find("is in use by another process"), std::string::npos) << message(dir.path);
  EXPECT_TRUE(fs::exists(first.file().path())) << "the refused store removed the first one's file";
}

TEST(NvmeStore, StagingIsInTheLedgerOnTheHostTierAndTheFileGoesAway) {
  TempDir dir;
  Ledger ledger;
  std::string path;
  {
    NvmeStore store(options(dir.path, false, 100000), ledger);
    store.add_region("a", 100000);
    store.add_region("b", 10);
    const std::uint64_t slot = round_up(100000, store.file().alignment());
    EXPECT_EQ(ledger.label_current("NvmeStore::staging"), 2 * slot);
    EXPECT_EQ(ledger.current(Category::Optimizer, Tier::Host), 2 * slot);
    EXPECT_EQ(ledger.current(Category::Optimizer, Tier::Device), 0u);
    EXPECT_EQ(ledger.current(Category::Optimizer, Tier::Nvme), slot + store.file().alignment());
    path = store.file().path();
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_EQ(ledger.current(Tier::Host), 0u);
  EXPECT_EQ(ledger.current(Tier::Nvme), 0u);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(dir.path + "/rank3"));
}

}  // namespace
}  // namespace furnace::memory
