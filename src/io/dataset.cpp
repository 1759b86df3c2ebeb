// Token files in HDF5: writing, opening with validation, reading batch windows, and
// turning text files into byte-level token files.
#include "io/dataset.hpp"

#include "comm/fault.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>

#include "comm/mpi_check.hpp"
#include "io/dataset_checks.hpp"
#include "io/hdf5_util.hpp"

namespace furnace::io {
namespace fs = std::filesystem;

namespace {

constexpr hsize_t kChunk = 1 << 16;           // tokens per chunk: small enough for random windows
constexpr std::size_t kChunkCache = 32 << 20;  // bytes of decompressed chunks kept per open dataset

using detail::data_error;

// Runs f; an HDF5 failure inside becomes a DataError naming the file.
template <class F>
void naming_file(const std::string& path, F&& f) {
  try {
    f();
  } catch (const h5::Error& e) {
    throw DataError("data file '" + clip(path) + "': " + e.what());
  }
}

std::string describe_type(hid_t type) {
  std::size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned " : "signed ") + std::to_string(bits) + "-bit integer";
    case H5T_FLOAT: return std::to_string(bits) + "-bit float";
    case H5T_STRING: return "string";
    default: return "non-numeric type";
  }
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

void write_token_file(const std::string& path, const std::vector<std::uint8_t>& tokens, int vocab_size,
                      const std::string& source) {
  if (tokens.empty()) data_error(path, "would hold no tokens; the input is empty");
  if (vocab_size < 2) data_error(path, "cannot be written with vocab_size " + std::to_string(vocab_size) + " (need >= 2)");
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= vocab_size)
      data_error(path, "cannot be written: token " + std::to_string(tokens[i]) + " at offset " + std::to_string(i) +
                           " is >= vocab_size " + std::to_string(vocab_size));
  // Write under a temporary name and rename when complete, so a crash never leaves a
  // partial file under the real name.
  const std::string tmp = path + ".tmp";
  try {
    if (auto dir = fs::path(path).parent_path(); !dir.empty()) fs::create_directories(dir);
    naming_file(path, [&] {
      h5::Handle file(H5_CHECKED(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
      hsize_t n = tokens.size(), chunk = std::min(n, kChunk);
      h5::Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
      h5::Handle dcpl(H5_CHECKED(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
      H5_CHECKED(H5Pset_chunk(dcpl, 1, &chunk));
      if (H5_CHECKED(H5Zfilter_avail(H5Z_FILTER_DEFLATE)) > 0) H5_CHECKED(H5Pset_deflate(dcpl, 4));
      h5::Handle dset(H5_CHECKED(H5Dcreate2(file, "tokens", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)),
                      H5Dclose);
      H5_CHECKED(H5Dwrite(dset, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data()));
      h5::write_attr(dset, "vocab_size", vocab_size);
      h5::write_attr(dset, "source", source);
      h5::write_attr(dset, "format", std::string("furnace-tokens"));
      dset.reset();
      H5_CHECKED(H5Fclose(file.release()));  // a failing close (disk full) must fail the write
    });
    fs::rename(tmp, path);
  } catch (const fs::filesystem_error& e) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    data_error(path, std::string("could not be written: ") + e.code().message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

namespace {

// Every rank throws the same DataError when any rank of comm has one (h5::agree_on_error).
void agree_on_error(MPI_Comm comm, const std::optional<std::string>& error) {
  if (auto agreed = h5::agree_on_error(comm, error)) throw DataError(*agreed);
}

// Runs f, returning its DataError's message instead of throwing it.
template <class F>
std::optional<std::string> data_error_of(F&& f) {
  try {
    f();
    return std::nullopt;
  } catch (const DataError& e) {
    return std::string(e.what());
  }
}

}  // namespace

TokenDataset::TokenDataset(const std::string& path, int expected_vocab, std::int64_t min_tokens, MPI_Comm comm)
    : path_(path) {
  h5::silence();
  // 1. Cheap independent checks on every rank, then agreement: a missing or non-HDF5
  //    file fails on every rank before anyone enters the collective open.
  agree_on_error(comm, data_error_of([&] {
    std::error_code ec;
    if (!fs::exists(path, ec))
      data_error(path, "not found; run `furnace data prepare` or set data.train / data.valid");
    if (fs::is_directory(path, ec)) data_error(path, "is a directory, not a token file");
    if (!std::ifstream(path)) data_error(path, "cannot be read (permissions?)");
    if (H5Fis_hdf5(path.c_str()) <= 0) {
      std::string reason = h5::last_error();
      data_error(path, "is not a valid HDF5 file (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
    }
  }));

  // 2. The collective open with the MPI-IO driver on comm, and validation. Every rank
  //    reads the same metadata in the same order, so a bad file fails at the same point
  //    on every rank; still, the ranks agree before anyone throws. The handles outlive
  //    the agreement: H5Fclose is collective (MPI_File_close), so no rank may close the
  //    file while another still waits in the agreement.
  int mpi_up = 0;
  mpiCheck(MPI_Initialized(&mpi_up));
  h5::Handle file, dset;
  auto error = data_error_of([&] {
    naming_file(path, [&] {
      h5::Handle fapl(H5_CHECKED(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
      if (mpi_up) H5_CHECKED(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));  // duplicates comm
      file = h5::Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose);
    });
    if (!file.valid()) {
      std::string reason = h5::last_error();
      data_error(path, "is not a valid HDF5 file (corrupt or truncated?)" + (reason.empty() ? "" : ": " + reason));
    }
    naming_file(path, [&] {
      if (H5_CHECKED(H5Lexists(file, "tokens", H5P_DEFAULT)) <= 0 ||
          H5_CHECKED(H5Oexists_by_name(file, "tokens", H5P_DEFAULT)) <= 0)
        data_error(path, "has no /tokens dataset; is it a furnace token file (`furnace data prepare`)?");
      // A chunk cache large enough that random windows rarely decompress a chunk twice
      // (parallel HDF5 keeps the chunk cache for files opened read-only).
      h5::Handle dapl(H5_CHECKED(H5Pcreate(H5P_DATASET_ACCESS)), H5Pclose);
      H5_CHECKED(H5Pset_chunk_cache(dapl, 10007, kChunkCache, 1.0));
      dset = h5::Handle(H5Dopen2(file, "tokens", dapl), H5Dclose);
      if (!dset.valid()) {
        h5::last_error();  // clear the stack; the reason is ours
        data_error(path, "has /tokens, but it is not a dataset");
      }

      h5::Handle space(H5_CHECKED(H5Dget_space(dset)), H5Sclose);
      int rank = H5_CHECKED(H5Sget_simple_extent_ndims(space));
      if (rank != 1) data_error(path, "has a " + std::to_string(rank) + "-D /tokens; expected a 1-D dataset");
      hsize_t n = 0;
      H5_CHECKED(H5Sget_simple_extent_dims(space, &n, nullptr));
      n_tokens_ = std::int64_t(n);

      h5::Handle type(H5_CHECKED(H5Dget_type(dset)), H5Tclose);
      bool ok = H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE && H5Tget_size(type) <= 4;
      if (!ok) data_error(path, "has /tokens of " + describe_type(type) + "; expected unsigned 8-, 16- or 32-bit integers");

      auto vocab = detail::read_vocab_size(dset, path);
      if (!vocab) data_error(path, "has no vocab_size attribute on /tokens");
      if (*vocab < 2) data_error(path, "has vocab_size " + std::to_string(*vocab) + " on /tokens; expected >= 2");
      if (expected_vocab > 0 && *vocab != expected_vocab)
        data_error(path, "has vocab_size " + std::to_string(*vocab) + " but model.vocab_size is " +
                             std::to_string(expected_vocab) + "; set model.vocab_size = " + std::to_string(*vocab) +
                             " or prepare data for this vocabulary");
      vocab_ = *vocab;
      if (n_tokens_ < min_tokens)
        data_error(path, "has " + std::to_string(n_tokens_) + " tokens; at least " + std::to_string(min_tokens) +
                             " are needed (one window of model.seq_len + 1)");
      detail::check_token_storage(dset, path, n_tokens_, min_tokens);
    });
  });
  agree_on_error(comm, error);  // on failure, every rank closes its handles as this unwinds

  // 3. Every token is checked once, now, rather than when a batch happens to read it
  //    (a bad token near the end surfaced at step 14 of 300): each rank scans its own
  //    contiguous range, then the ranks agree. Ranges are in rank order, so the lowest
  //    failing rank names the lowest bad offset.
  int rank = 0, ranks = 1;
  if (mpi_up) {
    mpiCheck(MPI_Comm_rank(comm, &rank));
    mpiCheck(MPI_Comm_size(comm, &ranks));
  }
  agree_on_error(comm, data_error_of([&] {
    naming_file(path, [&] {
      const auto [begin, end] = detail::scan_range(n_tokens_, detail::chunk_tokens(dset), rank, ranks);
      if (auto bad = detail::scan_tokens(dset, path, vocab_, begin, end)) throw DataError(*bad);
    });
  }));
  dset_ = dset.release();
  file_ = file.release();
}

TokenDataset::~TokenDataset() {
  h5::LibraryLock lock;
  if (dset_ >= 0) H5Dclose(dset_);
  if (file_ >= 0) H5Fclose(file_);
}

void TokenDataset::read_windows(const std::vector<std::int64_t>& starts, int seq, std::vector<std::int32_t>& out) const {
  h5::LibraryLock lock;  // one short critical section per batch (see h5::library_mutex)
  if (comm::fault::hit("data.read")) data_error(path_, "cannot be read: injected fault at data.read (FURNACE_FAULT)");
  const std::int64_t w = std::int64_t(seq) + 1;
  for (const std::int64_t s : starts)
    if (seq < 0 || s < 0 || s + w > n_tokens_)
      data_error(path_, "has no window [" + std::to_string(s) + ", " + std::to_string(s + w) + ") within its " +
                            std::to_string(n_tokens_) + " tokens");
  out.resize(starts.size() * std::size_t(std::max<std::int64_t>(w, 0)));
  if (starts.empty() || w <= 0) return;

  // The union of the windows as sorted, disjoint runs [begin, end): windows of one batch
  // may overlap or repeat, and an OR-ed hyperslab selection holds each token once, so
  // the runs are read once and the windows copied out of them afterwards.
  std::vector<std::int64_t> sorted(starts);
  std::sort(sorted.begin(), sorted.end());
  struct Run {
    std::int64_t begin, end, buf;  // buf: where the run starts in the read buffer
  };
  std::vector<Run> runs;
  std::int64_t total = 0;
  for (const std::int64_t s : sorted) {
    if (!runs.empty() && s <= runs.back().end) {
      total += std::max<std::int64_t>(s + w, runs.back().end) - runs.back().end;
      runs.back().end = std::max(runs.back().end, s + w);
    } else {
      runs.push_back({s, s + w, total});
      total += w;
    }
  }

  // One H5Dread of the whole union with an independent transfer (the default dxpl).
  // Independent, not collective: each rank's windows are its own business, so ranks
  // need not call this in lockstep (nor the same number of times, e.g. a rank with no
  // windows), and a rank failing here cannot leave others waiting. Data is read-only,
  // so nothing is gained from collective buffering at these sizes.
  std::vector<std::int32_t> buf(std::size_t(total), 0);
  naming_file(path_, [&] {
    h5::Handle file_space(H5_CHECKED(H5Dget_space(dset_)), H5Sclose);
    H5_CHECKED(H5Sselect_none(file_space));
    for (const Run& r : runs) {
      const hsize_t offset = hsize_t(r.begin), count = hsize_t(r.end - r.begin);
      H5_CHECKED(H5Sselect_hyperslab(file_space, H5S_SELECT_OR, &offset, nullptr, &count, nullptr));
    }
    const hsize_t n = hsize_t(total);
    h5::Handle mem_space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
    // The selection is traversed in file order, which is the order of the runs in buf.
    // HDF5 converts the stored unsigned type to int32 (clamping, which the check below catches).
    H5_CHECKED(H5Dread(dset_, H5T_NATIVE_INT32, mem_space, file_space, H5P_DEFAULT, buf.data()));
  });
  // Validate in file order, so the first bad token (lowest offset) is the one named.
  for (const Run& r : runs)
    for (std::int64_t i = r.begin; i < r.end; ++i) {
      const std::int32_t v = buf[std::size_t(r.buf + i - r.begin)];
      if (v < 0 || v >= vocab_)
        data_error(path_, "holds token " + std::to_string(v) + " at offset " + std::to_string(i) + ", >= its vocab_size " +
                              std::to_string(vocab_) + " (corrupt data?)");
    }
  for (std::size_t b = 0; b < starts.size(); ++b) {
    const std::int64_t s = starts[b];
    // The run holding window b: the last run beginning at or before s.
    auto it = std::upper_bound(runs.begin(), runs.end(), s, [](std::int64_t x, const Run& r) { return x < r.begin; });
    const Run& r = *std::prev(it);
    std::copy_n(buf.begin() + (r.buf + s - r.begin), w, out.begin() + std::int64_t(b) * w);
  }
}

std::vector<std::int64_t> batch_starts(unsigned long long seed, long step, int stream, int batch, int seq,
                                       std::int64_t n_tokens) {
  // Every start s must leave room for seq + 1 tokens: s in [0, n_tokens - seq - 1].
  const std::int64_t n_starts = n_tokens - seq;
  if (seq < 0 || n_starts < 1)
    throw DataError("a data file of " + std::to_string(n_tokens) + " tokens holds no window of seq_len + 1 = " +
                    std::to_string(seq + 1) + " tokens");
  std::vector<std::int64_t> starts(std::max(batch, 0));
  const std::uint64_t base = splitmix64(splitmix64(splitmix64(seed) ^ std::uint64_t(step)) ^ std::uint64_t(stream));
  for (int b = 0; b < batch; ++b) starts[b] = std::int64_t(splitmix64(base ^ std::uint64_t(b)) % std::uint64_t(n_starts));
  return starts;
}

PrepareResult prepare_text_data(const std::vector<std::string>& inputs, const std::string& out_dir,
                                double valid_fraction) {
  if (!(valid_fraction > 0 && valid_fraction < 1))
    throw DataError("valid_fraction = " + std::to_string(valid_fraction) + " must be in (0, 1)");
  if (inputs.empty()) throw DataError("no input files to prepare");
  std::vector<std::uint8_t> bytes;
  for (const auto& f : inputs) {
    std::ifstream in(f, std::ios::binary);
    std::error_code ec;
    if (!fs::exists(f, ec)) throw DataError("input file '" + clip(f) + "' not found");
    if (!in || fs::is_directory(f, ec)) throw DataError("input file '" + clip(f) + "' cannot be read");
    const std::size_t before = bytes.size();
    bytes.insert(bytes.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) throw DataError("input file '" + clip(f) + "' could not be read to the end");
    std::cout << "  read " << f << " (" << bytes.size() - before << " bytes)\n";
  }
  const auto total = std::int64_t(bytes.size());
  const auto n_valid = std::int64_t(std::llround(double(total) * valid_fraction));
  if (n_valid < 1 || total - n_valid < 1)
    throw DataError("the inputs hold " + std::to_string(total) + " bytes: too few to split into train and validation");

  std::string list;
  for (const auto& f : inputs) list += (list.empty() ? "" : ", ") + f;
  const auto split = bytes.begin() + (total - n_valid);
  const std::string train = (fs::path(out_dir) / "train.h5").string(), valid = (fs::path(out_dir) / "valid.h5").string();
  write_token_file(train, {bytes.begin(), split}, 256, "train split (first " + std::to_string(total - n_valid) + " bytes) of: " + list);
  write_token_file(valid, {split, bytes.end()}, 256, "validation split (last " + std::to_string(n_valid) + " bytes) of: " + list);
  std::cout << "prepared " << train << " (" << total - n_valid << " tokens) and " << valid << " (" << n_valid
            << " tokens) from " << inputs.size() << " files, " << total << " bytes\n";
  return {total - n_valid, n_valid};
}

std::vector<std::string> default_corpus_files() {
  const fs::path dir = "/usr/share/games/fortunes";
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir)) {
      // The plain text files only: not the .dat indexes, not the .u8 links to the same text,
      // not subdirectories (off/).
      const auto ext = e.path().extension();
      if (e.is_symlink() || !e.is_regular_file() || ext == ".dat" || ext == ".u8") continue;
      files.push_back(e.path().string());
    }
  if (files.empty())
    throw DataError("the default corpus is missing (no fortune files in " + dir.string() +
                    "); install Debian package fortunes (scripts/install-deps.sh)");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace furnace::io
