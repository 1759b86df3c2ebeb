// Token files: round trip, every way a data file can be wrong (each a DataError naming
// the file), batch start offsets, and text preparation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/dataset.hpp"
#include "io/hdf5_util.hpp"

using namespace furnace::io;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test (and per process, for runs under mpiexec).
class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path("/tmp") / ("furnace_test_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::vector<std::uint8_t> pattern(std::size_t n) {
  std::vector<std::uint8_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = std::uint8_t((i * 7 + i / 256) % 256);
  return t;
}

// Writes /<name> with the given element type and shape directly, bypassing
// write_token_file's checks, to make malformed token files.
void write_raw(const std::string& path, const char* name, hid_t type, std::vector<hsize_t> dims,
               const void* data, int vocab) {
  h5::Handle f(H5_CHECKED(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
  h5::Handle space(H5_CHECKED(H5Screate_simple(int(dims.size()), dims.data(), nullptr)), H5Sclose);
  h5::Handle d(H5_CHECKED(H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Dclose);
  H5_CHECKED(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  h5::write_attr(d, "vocab_size", vocab);
}

// Writes a chunked /tokens of n uint8 tokens (value(i) for the first `written`, the
// rest never written), deflated at `level` when >= 0, with vocab_size 256.
template <class F>
void write_chunked(const std::string& path, hsize_t n, hsize_t chunk, int level, hsize_t written, F&& value) {
  h5::Handle f(H5_CHECKED(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
  h5::Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
  h5::Handle dcpl(H5_CHECKED(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_CHECKED(H5Pset_chunk(dcpl, 1, &chunk));
  if (level >= 0) H5_CHECKED(H5Pset_deflate(dcpl, unsigned(level)));
  h5::Handle d(H5_CHECKED(H5Dcreate2(f, "tokens", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)), H5Dclose);
  if (written > 0) {
    std::vector<std::uint8_t> t(written);
    for (hsize_t i = 0; i < written; ++i) t[i] = value(i);
    const hsize_t zero = 0;
    h5::Handle mem(H5_CHECKED(H5Screate_simple(1, &written, nullptr)), H5Sclose);
    H5_CHECKED(H5Sselect_hyperslab(space, H5S_SELECT_SET, &zero, nullptr, &written, nullptr));
    H5_CHECKED(H5Dwrite(d, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, t.data()));
  }
  h5::write_attr(d, "vocab_size", 256);
}

// Runs f expecting a one-line DataError containing every needle.
template <class F>
void expect_data_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

}  // namespace

TEST_F(DatasetTest, RoundTrip) {
  auto tokens = pattern(1000);
  write_token_file(file("t.h5"), tokens, 256, "test");
  EXPECT_FALSE(fs::exists(file("t.h5.tmp")));
  TokenDataset ds(file("t.h5"), 256, 17);
  EXPECT_EQ(ds.size(), 1000);
  EXPECT_EQ(ds.vocab_size(), 256);
  const int seq = 16;
  std::vector<std::int64_t> starts = {0, 5, 1000 - seq - 1, 5};
  std::vector<std::int32_t> out;
  ds.read_windows(starts, seq, out);
  ASSERT_EQ(out.size(), starts.size() * (seq + 1));
  for (std::size_t b = 0; b < starts.size(); ++b)
    for (int t = 0; t <= seq; ++t) ASSERT_EQ(out[b * (seq + 1) + t], tokens[starts[b] + t]) << b << " " << t;
  expect_data_error([&] { ds.read_windows({1000 - seq}, seq, out); }, {file("t.h5"), "window"});
}

TEST_F(DatasetTest, WritesUint16And32Too) {
  std::vector<std::uint16_t> t16 = {1, 300, 65535, 7};
  write_raw(file("u16.h5"), "tokens", H5T_NATIVE_UINT16, {4}, t16.data(), 65536);
  TokenDataset ds(file("u16.h5"), 65536, 4);
  std::vector<std::int32_t> out;
  ds.read_windows({0}, 3, out);
  EXPECT_EQ(out, (std::vector<std::int32_t>{1, 300, 65535, 7}));
}

TEST_F(DatasetTest, MissingFile) {
  expect_data_error([&] { TokenDataset(file("nope.h5"), 256, 1); }, {file("nope.h5"), "not found", "furnace data prepare"});
}

TEST_F(DatasetTest, RandomBytesAreNotHdf5) {
  std::mt19937 gen(1);
  std::ofstream out(file("junk.h5"), std::ios::binary);
  for (int i = 0; i < 4096; ++i) out.put(char(gen()));
  out.close();
  expect_data_error([&] { TokenDataset(file("junk.h5"), 256, 1); }, {file("junk.h5"), "not a valid HDF5 file"});
}

TEST_F(DatasetTest, TruncatedFile) {
  std::vector<std::uint8_t> tokens(200000);
  std::mt19937 gen(2);
  for (auto& t : tokens) t = std::uint8_t(gen());  // incompressible, so the file is large
  write_token_file(file("t.h5"), tokens, 256, "test");
  fs::resize_file(file("t.h5"), fs::file_size(file("t.h5")) / 2);
  expect_data_error([&] { TokenDataset(file("t.h5"), 256, 1); }, {file("t.h5"), "corrupt or truncated"});
}

TEST_F(DatasetTest, TokenOutOfVocabulary) {
  std::vector<std::uint8_t> tokens = {1, 2, 3, 200, 4, 5};
  expect_data_error([&] { write_token_file(file("w.h5"), tokens, 100, "test"); }, {file("w.h5"), "200", "vocab_size 100"});
  EXPECT_FALSE(fs::exists(file("w.h5")));
  EXPECT_FALSE(fs::exists(file("w.h5.tmp")));
  // Found when the file is opened (issue 7: not when a batch happens to read it).
  write_raw(file("t.h5"), "tokens", H5T_NATIVE_UINT8, {tokens.size()}, tokens.data(), 100);
  expect_data_error([&] { TokenDataset(file("t.h5"), 100, 1); }, {file("t.h5"), "token 200 at offset 3"});
}

TEST_F(DatasetTest, MalformedTokenFiles) {
  std::vector<std::uint8_t> bytes(64, 1);
  std::vector<float> floats(64, 1.f);
  std::vector<std::int32_t> ints(64, 1);
  write_raw(file("other.h5"), "data", H5T_NATIVE_UINT8, {64}, bytes.data(), 256);
  write_raw(file("2d.h5"), "tokens", H5T_NATIVE_UINT8, {8, 8}, bytes.data(), 256);
  write_raw(file("float.h5"), "tokens", H5T_NATIVE_FLOAT, {64}, floats.data(), 256);
  write_raw(file("signed.h5"), "tokens", H5T_NATIVE_INT32, {64}, ints.data(), 256);
  expect_data_error([&] { TokenDataset(file("other.h5"), 256, 1); }, {file("other.h5"), "no /tokens"});
  expect_data_error([&] { TokenDataset(file("2d.h5"), 256, 1); }, {file("2d.h5"), "2-D"});
  expect_data_error([&] { TokenDataset(file("float.h5"), 256, 1); }, {file("float.h5"), "32-bit float"});
  expect_data_error([&] { TokenDataset(file("signed.h5"), 256, 1); }, {file("signed.h5"), "signed 32-bit"});
}

TEST_F(DatasetTest, VocabMismatchAndTooFewTokens) {
  write_token_file(file("t.h5"), pattern(100), 256, "test");
  expect_data_error([&] { TokenDataset(file("t.h5"), 512, 1); }, {file("t.h5"), "vocab_size 256", "model.vocab_size"});
  expect_data_error([&] { TokenDataset(file("t.h5"), 256, 129); }, {file("t.h5"), "has 100 tokens", "129"});
  EXPECT_NO_THROW(TokenDataset(file("t.h5"), 0, 100));  // expected_vocab 0: any vocabulary
}

TEST(BatchStarts, DeterministicInRangeAndDistinct) {
  const std::int64_t n = 1000;
  const int seq = 16, batch = 8;
  auto a = batch_starts(42, 3, 0, batch, seq, n);
  EXPECT_EQ(a, batch_starts(42, 3, 0, batch, seq, n));
  EXPECT_NE(a, batch_starts(42, 4, 0, batch, seq, n));
  EXPECT_NE(a, batch_starts(42, 3, 1, batch, seq, n));
  EXPECT_NE(a, batch_starts(43, 3, 0, batch, seq, n));
  // Start b depends only on b, so any rank can compute its own slice of the batch.
  auto half = batch_starts(42, 3, 0, batch / 2, seq, n);
  EXPECT_TRUE(std::equal(half.begin(), half.end(), a.begin()));
  std::int64_t lo = n, hi = -1;
  for (long step = 0; step < 2000; ++step)
    for (auto s : batch_starts(7, step, 0, batch, seq, n)) lo = std::min(lo, s), hi = std::max(hi, s);
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, n - seq - 1);  // the last window that fits, and none past it
  EXPECT_EQ(batch_starts(1, 0, 0, 4, seq, seq + 1), (std::vector<std::int64_t>(4, 0)));
  EXPECT_THROW(batch_starts(1, 0, 0, 4, seq, seq), DataError);
}

TEST_F(DatasetTest, PrepareTextData) {
  std::ofstream(file("a.txt")) << "hello, furnace\n%\n";
  std::ofstream(file("b.txt")) << std::string(300, 'x') << "the end\n";
  const std::int64_t total = fs::file_size(file("a.txt")) + fs::file_size(file("b.txt"));
  auto r = prepare_text_data({file("a.txt"), file("b.txt")}, file("out"), 0.1);
  EXPECT_EQ(r.train_tokens + r.valid_tokens, total);
  EXPECT_EQ(r.valid_tokens, std::llround(total * 0.1));
  TokenDataset train(file("out/train.h5"), 256, 1), valid(file("out/valid.h5"), 256, 1);
  std::vector<std::int32_t> out;
  train.read_windows({0}, 4, out);
  EXPECT_EQ(std::string(out.begin(), out.end()), "hello");
  valid.read_windows({valid.size() - 8}, 7, out);
  EXPECT_EQ(std::string(out.begin(), out.end()), "the end\n");
  expect_data_error([&] { prepare_text_data({file("a.txt"), file("missing.txt")}, file("out2"), 0.1); },
                    {file("missing.txt")});
}

TEST(DefaultCorpus, FortuneFiles) {
  if (!fs::is_directory("/usr/share/games/fortunes")) GTEST_SKIP() << "Debian package fortunes not installed";
  auto files = default_corpus_files();
  ASSERT_FALSE(files.empty());
  EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
  for (const auto& f : files) {
    EXPECT_NE(fs::path(f).extension(), ".dat") << f;
    EXPECT_FALSE(fs::is_symlink(f)) << f;
  }
}

// Issue 7: storage out of proportion to the file is refused before any read.
TEST_F(DatasetTest, StorageOutOfProportion) {
  auto zero = [](hsize_t) { return std::uint8_t(0); };
  auto text = [](hsize_t i) { return std::uint8_t(32 + (i * 2654435761u >> 7) % 90); };
  // (a) One 8 MiB chunk: every batch read would decompress all of it.
  write_chunked(file("bigchunk.h5"), 8 << 20, 8 << 20, 1, 8 << 20, text);
  expect_data_error([&] { TokenDataset(file("bigchunk.h5"), 256, 17); },
                    {file("bigchunk.h5"), "chunks of 8388608 tokens", "8.0 MiB uncompressed", "4.0 MiB"});
  // ... unless one read window is that large anyway.
  EXPECT_NO_THROW(TokenDataset(file("bigchunk.h5"), 256, 8 << 20));
  // (b) Declared but never written (2^40 tokens), or written in part: fill zeros.
  write_chunked(file("never.h5"), hsize_t(1) << 40, 1 << 16, 4, 0, zero);
  expect_data_error([&] { TokenDataset(file("never.h5"), 256, 17); },
                    {file("never.h5"), "only 0 of its 16777216 chunks written", "fill zeros"});
  write_chunked(file("part.h5"), 1 << 20, 1 << 16, 4, 1000, text);
  expect_data_error([&] { TokenDataset(file("part.h5"), 256, 17); }, {file("part.h5"), "only 1 of its 16 chunks"});
  {
    hsize_t n = hsize_t(1) << 40;
    h5::Handle f(H5_CHECKED(H5Fcreate(file("contig.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
    h5::Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
    h5::Handle d(H5_CHECKED(H5Dcreate2(f, "tokens", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                 H5Dclose);
    h5::write_attr(d, "vocab_size", 256);
  }
  expect_data_error([&] { TokenDataset(file("contig.h5"), 256, 17); }, {file("contig.h5"), "never written"});
  // A compression bomb: 16 Mi zero tokens in a few KiB, all chunks written.
  write_chunked(file("bomb.h5"), 16 << 20, 1 << 16, 9, 16 << 20, zero);
  expect_data_error([&] { TokenDataset(file("bomb.h5"), 256, 17); }, {file("bomb.h5"), "more than 256x compression"});
  // Real text-like tokens in the same layout are fine.
  write_chunked(file("ok.h5"), 1 << 20, 1 << 16, 4, 1 << 20, text);
  EXPECT_EQ(TokenDataset(file("ok.h5"), 256, 17).size(), 1 << 20);
}

// (c) A damaged compressed chunk is a DataError at open, naming the file.
TEST_F(DatasetTest, CorruptCompressedChunk) {
  std::vector<std::uint8_t> tokens(200000);
  std::mt19937 gen(3);
  for (auto& t : tokens) t = std::uint8_t('a' + gen() % 26);
  write_token_file(file("t.h5"), tokens, 256, "test");
  haddr_t where = 0;
  hsize_t size = 0;
  {
    h5::Handle f(H5_CHECKED(H5Fopen(file("t.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
    h5::Handle d(H5_CHECKED(H5Dopen2(f, "tokens", H5P_DEFAULT)), H5Dclose);
    h5::Handle space(H5_CHECKED(H5Dget_space(d)), H5Sclose);
    hsize_t offset[1];
    unsigned mask = 0;
    H5_CHECKED(H5Dget_chunk_info(d, space, 1, offset, &mask, &where, &size));  // the second chunk
  }
  std::fstream io(file("t.h5"), std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(std::streamoff(where + size / 2));
  for (int i = 0; i < 64; ++i) io.put(char(gen()));
  io.close();
  expect_data_error([&] { TokenDataset(file("t.h5"), 256, 17); }, {file("t.h5"), "cannot be read at tokens"});
}

// An attribute that is not one integer is refused before it is read into an int.
TEST_F(DatasetTest, VocabAttributeNotOneInteger) {
  std::vector<std::uint8_t> tokens(64, 1);
  write_raw(file("t.h5"), "tokens", H5T_NATIVE_UINT8, {64}, tokens.data(), 256);
  {
    h5::Handle f(H5_CHECKED(H5Fopen(file("t.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Fclose);
    h5::Handle d(H5_CHECKED(H5Dopen2(f, "tokens", H5P_DEFAULT)), H5Dclose);
    H5_CHECKED(H5Adelete(d, "vocab_size"));
    const hsize_t n = 1000;  // H5Aread would write 4000 bytes into one int
    std::vector<int> values(n, 256);
    h5::Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
    h5::Handle a(H5_CHECKED(H5Acreate2(d, "vocab_size", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
    H5_CHECKED(H5Awrite(a, H5T_NATIVE_INT, values.data()));
  }
  expect_data_error([&] { TokenDataset(file("t.h5"), 256, 1); }, {file("t.h5"), "vocab_size attribute of 1000 value(s)"});
}
