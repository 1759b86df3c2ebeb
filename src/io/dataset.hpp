// Token datasets in HDF5: `/tokens` (1-D unsigned 8/16/32-bit integers) with
// attributes `vocab_size` (int), `source` (string), `format` = "furnace-tokens".
#pragma once
#include <mpi.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace furnace::io {

// A missing, unreadable or corrupt data file; the message names the file and the problem.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Write tokens to `path` atomically (path.tmp, then rename).
void write_token_file(const std::string& path, const std::vector<std::uint8_t>& tokens,
                      int vocab_size, const std::string& source);

// An open token file, shared by the ranks of a communicator through parallel HDF5
// (the MPI-IO driver). Reads windows of seq+1 tokens for a batch.
class TokenDataset {
 public:
  // Opens and validates: the file exists and is HDF5, /tokens is a 1-D integer dataset
  // with at least min_tokens entries, vocab_size attribute matches expected_vocab
  // (when > 0), its storage is in proportion to the file (chunks of at most 4 MiB or
  // one window of min_tokens, every chunk written, at most 256x compression), and
  // every token is < vocab_size (scanned once, in parallel over comm, in blocks of
  // about 1 Mi tokens). Throws DataError; limits in docs/data.md.
  //
  // Collective over `comm`: every rank of comm must construct it (same path and
  // arguments). The ranks agree on every failure, so a missing, corrupt or invalid
  // file throws the same DataError on every rank and no rank is left waiting in a
  // collective call. Destruction is collective too (the file close is).
  TokenDataset(const std::string& path, int expected_vocab, std::int64_t min_tokens,
               MPI_Comm comm = MPI_COMM_SELF);
  ~TokenDataset();
  TokenDataset(const TokenDataset&) = delete;
  TokenDataset& operator=(const TokenDataset&) = delete;

  std::int64_t size() const { return n_tokens_; }
  int vocab_size() const { return vocab_; }
  const std::string& path() const { return path_; }

  // out[b * (seq+1) + t] = tokens[starts[b] + t] for t in [0, seq]; every token is
  // checked to be < vocab_size (DataError otherwise, naming the offset). Windows may
  // overlap or repeat. Independent I/O: each rank reads only its own windows, and
  // ranks may call this any number of times, with any windows (or none).
  void read_windows(const std::vector<std::int64_t>& starts, int seq,
                    std::vector<std::int32_t>& out) const;

 private:
  std::string path_;
  long long file_ = -1, dset_ = -1;  // hid_t
  std::int64_t n_tokens_ = 0;
  int vocab_ = 0;
};

// The start offsets of the global batch of `step`: a pure function of (seed, step,
// stream), never of the parallel layout. stream separates train and validation.
std::vector<std::int64_t> batch_starts(unsigned long long seed, long step, int stream,
                                       int batch, int seq, std::int64_t n_tokens);

// Turn text files into train/valid token files (byte-level vocabulary of 256):
// the concatenated bytes are split, the last `valid_fraction` going to validation.
// Prints progress; throws DataError on unreadable inputs.
struct PrepareResult {
  std::int64_t train_tokens = 0, valid_tokens = 0;
};
PrepareResult prepare_text_data(const std::vector<std::string>& inputs, const std::string& out_dir,
                                double valid_fraction = 0.05);

// The default corpus: the fortune files of Debian's `fortunes` package.
std::vector<std::string> default_corpus_files();

}  // namespace furnace::io
