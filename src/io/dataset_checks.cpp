#include "io/dataset_checks.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "io/hdf5_util.hpp"

namespace furnace::io::detail {

namespace {

std::string mib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(1 << 20));
  return buf;
}

}  // namespace

std::optional<int> read_vocab_size(hid_t dset, const std::string& path) {
  if (H5_CHECKED(H5Aexists(dset, "vocab_size")) <= 0) return std::nullopt;
  h5::Handle attr(H5_CHECKED(H5Aopen(dset, "vocab_size", H5P_DEFAULT)), H5Aclose);
  h5::Handle space(H5_CHECKED(H5Aget_space(attr)), H5Sclose);
  h5::Handle type(H5_CHECKED(H5Aget_type(attr)), H5Tclose);
  const hssize_t count = H5_CHECKED(H5Sget_simple_extent_npoints(space));
  if (count != 1 || H5_CHECKED(H5Tget_class(type)) != H5T_INTEGER)
    data_error(path, "has a vocab_size attribute of " + std::to_string(count) +
                         " value(s) that is not one integer; expected a single integer");
  return h5::read_int_attr(dset, "vocab_size");
}

std::int64_t chunk_tokens(hid_t dset) {
  h5::Handle dcpl(H5_CHECKED(H5Dget_create_plist(dset)), H5Pclose);
  hsize_t chunk = kScanBlockTokens;
  if (H5_CHECKED(H5Pget_layout(dcpl)) == H5D_CHUNKED) H5_CHECKED(H5Pget_chunk(dcpl, 1, &chunk));
  return std::int64_t(std::max<hsize_t>(chunk, 1));
}

void check_token_storage(hid_t dset, const std::string& path, std::int64_t n, std::int64_t window) {
  h5::Handle dcpl(H5_CHECKED(H5Dget_create_plist(dset)), H5Pclose);
  h5::Handle type(H5_CHECKED(H5Dget_type(dset)), H5Tclose);
  const std::uint64_t elem = H5Tget_size(type), tokens = std::uint64_t(n);
  const H5D_layout_t layout = H5_CHECKED(H5Pget_layout(dcpl));
  if (layout == H5D_VIRTUAL || H5_CHECKED(H5Pget_external_count(dcpl)) > 0)
    data_error(path, "keeps /tokens in other files (a virtual or external dataset); write it as one token file "
                     "(`furnace data prepare`)");
  if (layout == H5D_CHUNKED) {
    hsize_t chunk = 0;
    H5_CHECKED(H5Pget_chunk(dcpl, 1, &chunk));
    const std::uint64_t limit = std::max<std::uint64_t>(kMaxChunkBytes, std::uint64_t(window) * elem);
    if (chunk * elem > limit)
      data_error(path, "has /tokens in chunks of " + std::to_string(chunk) + " tokens (" + mib(double(chunk * elem)) +
                           " uncompressed), more than the " + mib(double(limit)) +
                           " accepted: every read decompresses whole chunks; rewrite it with smaller chunks "
                           "(`furnace data prepare` writes 64 KiB)");
    hsize_t written = 0;
    h5::Handle space(H5_CHECKED(H5Dget_space(dset)), H5Sclose);  // HDF5 1.10 refuses H5S_ALL here
    H5_CHECKED(H5Dget_num_chunks(dset, space, &written));
    const std::uint64_t needed = (tokens + chunk - 1) / chunk;
    if (written < needed)
      data_error(path, "has /tokens of " + std::to_string(n) + " tokens with only " + std::to_string(written) +
                           " of its " + std::to_string(needed) +
                           " chunks written: the rest would read as fill zeros; write the file again");
  } else if (layout == H5D_CONTIGUOUS) {
    H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
    H5_CHECKED(H5Dget_space_status(dset, &status));
    if (status != H5D_SPACE_STATUS_ALLOCATED)
      data_error(path, "has /tokens of " + std::to_string(n) +
                           " tokens that were never written (no storage): they would read as fill zeros; "
                           "write the file again");
  }
  // H5Dget_storage_size returns 0 on failure as well as for no storage: both refused.
  const double stored = double(H5Dget_storage_size(dset)), declared = double(tokens * elem);
  if (declared > kMaxExpansion * stored)
    data_error(path, "declares " + std::to_string(n) + " tokens (" + mib(declared) + ") but stores them in " +
                         std::to_string(std::uint64_t(stored)) + " bytes, more than " +
                         std::to_string(int(kMaxExpansion)) + "x compression: not a token corpus (every token is "
                         "scanned when the file is opened); write it again without such compression");
}

std::pair<std::int64_t, std::int64_t> scan_range(std::int64_t n, std::int64_t chunk, int rank, int ranks) {
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  auto edge = [&](int r) { return std::min(n, chunks * r / ranks * chunk); };
  return {edge(rank), edge(rank + 1)};
}

std::optional<std::string> scan_tokens(hid_t dset, const std::string& path, int vocab, std::int64_t begin,
                                       std::int64_t end) {
  const std::int64_t chunk = chunk_tokens(dset);
  const std::int64_t block = std::int64_t((kScanBlockTokens + chunk - 1) / chunk) * chunk;
  std::vector<std::uint32_t> buf(std::size_t(std::min(block, std::max<std::int64_t>(end - begin, 0))));
  h5::Handle file_space(H5_CHECKED(H5Dget_space(dset)), H5Sclose);
  for (std::int64_t at = begin; at < end; at += block) {
    const hsize_t offset = hsize_t(at), count = hsize_t(std::min(block, end - at));
    try {
      h5::Handle mem_space(H5_CHECKED(H5Screate_simple(1, &count, nullptr)), H5Sclose);
      H5_CHECKED(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &offset, nullptr, &count, nullptr));
      // The stored type is unsigned and at most 32 bits: converted exactly.
      H5_CHECKED(H5Dread(dset, H5T_NATIVE_UINT32, mem_space, file_space, H5P_DEFAULT, buf.data()));
    } catch (const h5::Error& e) {
      return "data file '" + clip(path) + "' cannot be read at tokens [" + std::to_string(at) + ", " +
             std::to_string(at + std::int64_t(count)) + ") (a corrupt compressed chunk?): " + clip(e.what(), 300);
    }
    const auto bad = std::find_if(buf.begin(), buf.begin() + std::int64_t(count),
                                  [&](std::uint32_t v) { return v >= std::uint32_t(vocab); });
    if (bad != buf.begin() + std::int64_t(count))
      return "data file '" + clip(path) + "' holds token " + std::to_string(*bad) + " at offset " +
             std::to_string(at + (bad - buf.begin())) + ", >= its vocab_size " + std::to_string(vocab) +
             " (corrupt data, or prepared for another vocabulary?)";
  }
  return std::nullopt;
}

}  // namespace furnace::io::detail
