// Token files read with parallel HDF5 by every rank of MPI_COMM_WORLD: each rank reads
// its own (overlapping, repeated, end-of-file) windows, and a missing or corrupt file
// fails with the same DataError on every rank instead of a hang. Runs at -n 1, 2, 4.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "mpi_testing.hpp"
#include "io/dataset.hpp"
#include "io/hdf5_util.hpp"

using namespace furnace::io;
namespace fs = std::filesystem;

namespace {

using furnace::testing::world_rank;
using furnace::testing::world_size;


class MpiDatasetTest : public furnace::testing::MpiScratchDirTest {
 protected:
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
};

std::vector<std::uint8_t> pattern(std::size_t n) {
  std::vector<std::uint8_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = std::uint8_t((i * 13 + i / 251) % 256);
  return t;
}

// Runs f expecting a one-line DataError containing every needle; returns its message.
template <class F>
std::string expect_data_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "rank " << world_rank() << ": no DataError";
  } catch (const DataError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    return msg;
  }
  return "";
}

// Every rank got the same message: compare with rank 0's.
void expect_same_on_every_rank(std::string msg) {
  int len = int(msg.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string root(std::size_t(len), '\0');
  if (world_rank() == 0) root = msg;
  MPI_Bcast(root.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  EXPECT_EQ(msg, root) << "rank " << world_rank();
}

void expect_windows(const std::vector<std::int32_t>& out, const std::vector<std::int64_t>& starts, int seq,
                    const std::vector<std::uint8_t>& tokens) {
  ASSERT_EQ(out.size(), starts.size() * std::size_t(seq + 1));
  for (std::size_t b = 0; b < starts.size(); ++b)
    for (int t = 0; t <= seq; ++t)
      ASSERT_EQ(out[b * (seq + 1) + t], tokens[std::size_t(starts[b] + t)])
          << "rank " << world_rank() << " window " << b << " (start " << starts[b] << ") token " << t;
}

}  // namespace

TEST_F(MpiDatasetTest, MpiEveryRankReadsItsOwnWindows) {
  // Several chunks (64 Ki tokens each), so windows cross chunk boundaries.
  const std::size_t n = 200003;
  const auto tokens = pattern(n);
  if (world_rank() == 0) write_token_file(file("t.h5"), tokens, 256, "mpi test");
  MPI_Barrier(MPI_COMM_WORLD);

  TokenDataset ds(file("t.h5"), 256, 17, MPI_COMM_WORLD);
  EXPECT_EQ(ds.size(), std::int64_t(n));
  EXPECT_EQ(ds.vocab_size(), 256);
  const int seq = 31, r = world_rank();
  const std::int64_t last = std::int64_t(n) - seq - 1;  // the window ending at the very last token
  const std::int64_t base = 1000 * r;
  // Overlapping, repeated, unsorted, adjacent, chunk-crossing and end-of-file windows,
  // different on every rank.
  std::vector<std::int64_t> starts = {base + 5, base,      base + 5,        last, base + 20, base + 37,
                                      65536 - 10 + r, last - 3, 131072 + 7 * r, 0,    last};
  std::vector<std::int32_t> out;
  ds.read_windows(starts, seq, out);
  expect_windows(out, starts, seq, tokens);

  // Ranks read different numbers of times (independent I/O): rank r reads r + 1 more
  // batches of random windows, one rank reads an empty batch.
  std::mt19937_64 gen(1234 + r);
  for (int k = 0; k <= r; ++k) {
    std::vector<std::int64_t> more(1 + gen() % 16);
    for (auto& s : more) s = std::int64_t(gen() % std::uint64_t(last + 1));
    ds.read_windows(more, seq, out);
    expect_windows(out, more, seq, tokens);
  }
  if (r == world_size() - 1) {
    ds.read_windows({}, seq, out);
    EXPECT_TRUE(out.empty());
  }
  // A window past the end is this rank's own DataError, naming the file.
  expect_data_error([&] { ds.read_windows({last + 1}, seq, out); }, {file("t.h5"), "window"});

  // The batch windows of the trainer: rank r takes its contiguous share.
  const int B = 4 * world_size();
  auto all = batch_starts(7, 3, 0, B, seq, ds.size());
  std::vector<std::int64_t> mine(all.begin() + 4 * r, all.begin() + 4 * (r + 1));
  ds.read_windows(mine, seq, out);
  expect_windows(out, mine, seq, tokens);
}

// Writes a chunked, deflated /tokens (64 Ki-token chunks, as write_token_file does)
// with vocab_size `vocab`, without write_token_file's check of the tokens.
void write_unchecked(const std::string& path, const std::vector<std::uint8_t>& tokens, int vocab) {
  namespace h5 = furnace::io::h5;
  const hsize_t n = tokens.size(), chunk = 1 << 16;
  h5::Handle f(H5_CHECKED(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
  h5::Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
  h5::Handle dcpl(H5_CHECKED(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_CHECKED(H5Pset_chunk(dcpl, 1, &chunk));
  H5_CHECKED(H5Pset_deflate(dcpl, 1));
  h5::Handle d(H5_CHECKED(H5Dcreate2(f, "tokens", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)), H5Dclose);
  H5_CHECKED(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data()));
  h5::write_attr(d, "vocab_size", vocab);
}

TEST_F(MpiDatasetTest, MpiTokenOutOfVocabularyFoundAtOpen) {
  // Issue 7: a token outside the vocabulary is found when the file is opened, not when
  // a batch happens to read it. The ranks scan their own ranges (several scan blocks
  // each) and agree; every rank names the first bad offset, wherever it lies.
  const std::size_t n = 3 * (std::size_t(1) << 20) + 12345;  // not a whole number of chunks
  std::vector<std::uint8_t> tokens(n);
  for (std::size_t i = 0; i < n; ++i) tokens[i] = std::uint8_t(i * 7 % 100);
  const std::size_t last = n - 1, second_block = (std::size_t(1) << 20) + 5;
  if (world_rank() == 0) write_unchecked(file("good.h5"), tokens, 100);
  tokens[last] = 200;  // the very last token: in the last rank's range
  if (world_rank() == 0) write_unchecked(file("end.h5"), tokens, 100);
  tokens[second_block] = 201;  // now also in the second scan block (rank 0 at -n 2, rank 1 at -n 4)
  if (world_rank() == 0) write_unchecked(file("two.h5"), tokens, 100);
  MPI_Barrier(MPI_COMM_WORLD);
  auto msg = expect_data_error([&] { TokenDataset(file("end.h5"), 100, 1, MPI_COMM_WORLD); },
                               {file("end.h5"), "token 200 at offset " + std::to_string(last)});
  expect_same_on_every_rank(msg);
  msg = expect_data_error([&] { TokenDataset(file("two.h5"), 100, 1, MPI_COMM_WORLD); },
                          {file("two.h5"), "token 201 at offset " + std::to_string(second_block)});
  expect_same_on_every_rank(msg);
  // Without the bad tokens it opens on every rank.
  TokenDataset ds(file("good.h5"), 100, 1, MPI_COMM_WORLD);
  EXPECT_EQ(ds.size(), std::int64_t(n));
}

TEST_F(MpiDatasetTest, MpiVocabMismatchOnEveryRank) {
  if (world_rank() == 0) write_token_file(file("t.h5"), pattern(100), 256, "mpi test");
  MPI_Barrier(MPI_COMM_WORLD);
  auto msg = expect_data_error([&] { TokenDataset(file("t.h5"), 512, 1, MPI_COMM_WORLD); },
                               {file("t.h5"), "vocab_size 256", "model.vocab_size"});
  expect_same_on_every_rank(msg);
  // Still usable by every rank afterwards (nobody left in a collective call).
  TokenDataset ds(file("t.h5"), 256, 1, MPI_COMM_WORLD);
  EXPECT_EQ(ds.size(), 100);
}

TEST_F(MpiDatasetTest, MpiMissingFileOnEveryRank) {
  auto msg = expect_data_error([&] { TokenDataset(file("nope.h5"), 256, 1, MPI_COMM_WORLD); },
                               {file("nope.h5"), "not found", "furnace data prepare"});
  expect_same_on_every_rank(msg);
}

TEST_F(MpiDatasetTest, MpiFileMissingOnSomeRanksOnly) {
  // Rank 0 sees a file the others do not (e.g. a node-local path): every rank must
  // still fail together, with rank 1's message, rather than hang in the open.
  const std::string local = file("local_" + std::to_string(world_rank()) + ".h5");
  const std::string path = file("local_0.h5");
  if (world_rank() == 0) write_token_file(local, pattern(100), 256, "mpi test");
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_size() == 1) {
    TokenDataset ds(path, 256, 1, MPI_COMM_WORLD);
    EXPECT_EQ(ds.size(), 100);
    return;
  }
  // Every rank other than 0 looks at its own (missing) file; rank 0 at the real one.
  const std::string mine = world_rank() == 0 ? path : local;
  auto msg = expect_data_error([&] { TokenDataset(mine, 256, 1, MPI_COMM_WORLD); },
                               {file("local_1.h5"), "not found"});
  expect_same_on_every_rank(msg);
}

TEST_F(MpiDatasetTest, MpiCorruptFileOnEveryRank) {
  if (world_rank() == 0) {
    std::mt19937 gen(1);
    std::ofstream out(file("junk.h5"), std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(char(gen()));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto msg = expect_data_error([&] { TokenDataset(file("junk.h5"), 256, 1, MPI_COMM_WORLD); },
                               {file("junk.h5"), "not a valid HDF5 file"});
  expect_same_on_every_rank(msg);
}

TEST_F(MpiDatasetTest, MpiTruncatedFileOnEveryRank) {
  // A valid superblock but a truncated body: H5Fis_hdf5 may pass, so the failure comes
  // from the collective open itself, and the ranks must still agree.
  if (world_rank() == 0) {
    std::vector<std::uint8_t> tokens(200000);
    std::mt19937 gen(2);
    for (auto& t : tokens) t = std::uint8_t(gen());  // incompressible, so the file is large
    write_token_file(file("t.h5"), tokens, 256, "mpi test");
    fs::resize_file(file("t.h5"), fs::file_size(file("t.h5")) / 2);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto msg = expect_data_error([&] { TokenDataset(file("t.h5"), 256, 1, MPI_COMM_WORLD); },
                               {file("t.h5"), "corrupt or truncated"});
  expect_same_on_every_rank(msg);
}
