// The checkpoint format's validation, shared by the parallel load (checkpoint_read.cpp)
// and `furnace ckpt inspect`, so that inspect --verify checks exactly what a load
// checks: the header, the manifest, every dataset, every checksum block and value.
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "comm/fault.hpp"
#include "io/checkpoint_internal.hpp"

namespace furnace::io::ckpt {

const char* family_name(Family f) {
  return f == Family::Param ? "param" : f == Family::ExpAvg ? "exp_avg" : "exp_avg_sq";
}

std::string dataset_path(const std::string& tensor, Family f) {
  return f == Family::Param ? "/model/" + tensor : "/optim/" + tensor + "/" + family_name(f);
}

hsize_t rows_of(const std::vector<hsize_t>& shape) { return shape.empty() ? 1 : shape[0]; }

hsize_t row_elems(const std::vector<hsize_t>& shape) {
  hsize_t n = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

hsize_t block_rows(const TensorEntry& t) {
  return t.kind == memory::ParamKind::Expert ? 1 : rows_of(t.shape);
}

hsize_t block_count(const TensorEntry& t) { return rows_of(t.shape) / std::max<hsize_t>(block_rows(t), 1); }

std::string manifest_json(const std::vector<memory::ParamInfo>& infos) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : infos)
    list.push_back({{"name", p.name},
                    {"kind", p.kind == memory::ParamKind::Expert ? "expert" : "dense"},
                    {"shape", p.global_shape}});
  return list.dump();
}

std::vector<TensorEntry> parse_manifest(const std::string& text, const std::string& path) {
  std::vector<TensorEntry> out;
  try {
    const auto list = nlohmann::json::parse(text);
    if (!list.is_array() || list.empty()) fail(path, "has a /meta/manifest_json that is not a non-empty list");
    for (const auto& e : list) {
      TensorEntry t;
      t.name = e.at("name").get<std::string>();
      const std::string kind = e.at("kind").get<std::string>();
      if (kind != "dense" && kind != "expert") fail(path, "has a manifest entry of unknown kind '" + kind + "'");
      t.kind = kind == "expert" ? memory::ParamKind::Expert : memory::ParamKind::Dense;
      double elems = 1;
      for (const auto& d : e.at("shape")) {
        const auto v = d.get<long long>();
        if (v < 0) fail(path, "has manifest tensor " + t.name + " with a negative dimension");
        t.shape.push_back(hsize_t(v));
        elems *= double(v);
      }
      if (t.name.empty() || t.name.size() > 1024 || t.shape.size() > 8 || elems > 1e15)
        fail(path, "has a malformed manifest entry (name '" + t.name.substr(0, 64) + "')");
      if (t.kind == memory::ParamKind::Expert && t.shape.empty())
        fail(path, "has manifest tensor " + t.name + ": an expert tensor needs an expert dimension");
      out.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("has a /meta/manifest_json that does not parse: ") + e.what());
  }
  return out;
}

CheckpointHeader read_header(hid_t file, const std::string& path) {
  CheckpointHeader h;
  auto format = h5::read_string_attr(file, "format");
  if (!format || *format != kFormat)
    fail(path, "is not a furnace checkpoint (root attribute format is " + (format ? "'" + *format + "'" : "missing") +
                   ", expected '" + kFormat + "')");
  auto version = h5::read_int_attr(file, "format_version");
  if (!version) fail(path, "has no format_version attribute");
  h.format_version = *version;
  if (*version != kFormatVersion)
    fail(path, "has format_version " + std::to_string(*version) + "; this furnace reads version " +
                   std::to_string(kFormatVersion) +
                   (*version > kFormatVersion ? " (written by a newer furnace?)"
                                              : " (version 1 files carry no checksums; retrain or convert with "
                                                "the furnace that wrote them)"));
  auto text = [&](const char* a) { return h5::read_string_attr(file, a).value_or("(missing)"); };
  h.furnace_version = text("furnace_version");
  h.git_revision = text("git_revision");
  h.created = text("created");

  if (H5_CHECKED(H5Lexists(file, "meta", H5P_DEFAULT)) <= 0) fail(path, "has no /meta group");
  h5::Handle m(H5_CHECKED(H5Oopen(file, "meta", H5P_DEFAULT)), H5Oclose);
  if (H5Iget_type(m) != H5I_GROUP) fail(path, "has /meta, but it is not a group");
  auto need = [&](auto v, const char* a) {
    if (!v) fail(path, std::string("has no /meta attribute ") + a);
    return *v;
  };
  auto& meta = h.meta;
  meta.step = long(need(h5::read_i64_attr(m, "step"), "step"));
  meta.tokens_seen = need(h5::read_i64_attr(m, "tokens_seen"), "tokens_seen");
  meta.seed = need(h5::read_u64_attr(m, "seed"), "seed");
  meta.world = need(h5::read_int_attr(m, "world"), "world");
  meta.dp = need(h5::read_int_attr(m, "dp"), "dp");
  meta.ep = need(h5::read_int_attr(m, "ep"), "ep");
  // Optional: only an fp16 run writes its loss scale (kept within LossScaler's range).
  meta.loss_scale_log2 = h5::read_int_attr(m, "loss_scale_log2").value_or(-1);
  meta.loss_scale_good_steps = h5::read_i64_attr(m, "loss_scale_good_steps").value_or(0);
  if (meta.loss_scale_log2 > CheckpointMeta::kMaxLossScaleLog2 || meta.loss_scale_log2 < -1 ||
      meta.loss_scale_good_steps < 0)
    fail(path, "has an impossible /meta loss scale (log2 " + std::to_string(meta.loss_scale_log2) + ", " +
                   std::to_string(meta.loss_scale_good_steps) + " good steps)");
  if (meta.step < 0 || meta.tokens_seen < 0)
    fail(path, "has a negative /meta step (" + std::to_string(meta.step) + ") or tokens_seen");
  if (meta.world < 1 || meta.dp < 1 || meta.ep < 1 || (long long)meta.dp * meta.ep != meta.world)
    fail(path, "has an impossible /meta layout (world " + std::to_string(meta.world) + ", dp " +
                   std::to_string(meta.dp) + ", ep " + std::to_string(meta.ep) + ")");
  for (const char* d : {"config_json", "manifest_json"})
    if (H5_CHECKED(H5Lexists(m, d, H5P_DEFAULT)) <= 0) fail(path, std::string("has no /meta/") + d);
  meta.config_json = h5::read_string_dataset(m, "config_json", kMaxJsonBytes);
  h.tensors = parse_manifest(h5::read_string_dataset(m, "manifest_json", kMaxJsonBytes), path);

  if (H5_CHECKED(H5Lexists(file, "optim", H5P_DEFAULT)) <= 0) fail(path, "has no /optim group");
  h5::Handle opt(H5_CHECKED(H5Oopen(file, "optim", H5P_DEFAULT)), H5Oclose);
  h.optimizer_step = long(need(h5::read_i64_attr(opt, "step"), "step (of /optim)"));
  if (h.optimizer_step < 0) fail(path, "has a negative /optim step (" + std::to_string(h.optimizer_step) + ")");
  return h;
}

namespace {
// True when every link of the absolute path `name` exists (H5Lexists fails on a
// missing intermediate group).
bool exists(hid_t file, const std::string& name) {
  for (std::size_t at = name.find('/', 1);; at = name.find('/', at + 1)) {
    if (H5_CHECKED(H5Lexists(file, name.substr(0, at).c_str(), H5P_DEFAULT)) <= 0) return false;
    if (at == std::string::npos) return true;
  }
}
}  // namespace

h5::Handle open_tensor(hid_t file, const std::string& path, const TensorEntry& t, Family f,
                       std::uint64_t file_bytes, std::vector<std::uint64_t>* sums) {
  const std::string name = dataset_path(t.name, f);
  if (!exists(file, name)) fail(path, "has no dataset " + name + " (the " + family_name(f) + " of tensor " + t.name + ")");
  H5O_info_t info;
  H5_CHECKED(H5Oget_info_by_name(file, name.c_str(), &info, H5P_DEFAULT));
  if (info.type != H5O_TYPE_DATASET) fail(path, "has " + name + ", but it is not a dataset");
  h5::Handle d(H5_CHECKED(H5Dopen2(file, name.c_str(), H5P_DEFAULT)), H5Dclose);
  h5::Handle type(H5_CHECKED(H5Dget_type(d)), H5Tclose);
  if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4 || H5Tget_order(type) != H5T_ORDER_LE)
    fail(path, "has dataset " + name + " that is not float32 little-endian");
  h5::Handle space(H5_CHECKED(H5Dget_space(d)), H5Sclose);
  const int nd = H5_CHECKED(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(std::size_t(std::max(nd, 0)), 0);
  if (nd > 0) H5_CHECKED(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  if (dims != t.shape)
    fail(path, "has dataset " + name + " of shape " + shape_str(dims) + ", but its manifest says " + shape_str(t.shape));
  // Contiguous, allocated, inside the file: the reads below trust these bounds.
  h5::Handle dcpl(H5_CHECKED(H5Dget_create_plist(d)), H5Pclose);
  if (H5Pget_layout(dcpl) != H5D_CONTIGUOUS) fail(path, "has dataset " + name + " that is not contiguous");
  const hsize_t bytes = rows_of(t.shape) * row_elems(t.shape) * 4;
  if (bytes > 0) {
    const haddr_t off = H5Dget_offset(d);
    h5::last_error();
    if (off == HADDR_UNDEF || H5Dget_storage_size(d) != bytes)
      fail(path, "has dataset " + name + " with no data written (storage not allocated)");
    if (std::uint64_t(off) + bytes > file_bytes)
      fail(path, "has dataset " + name + " whose data ends at byte " + std::to_string(off + bytes) +
                     ", beyond the end of the file (" + std::to_string(file_bytes) + " bytes): truncated");
  }
  std::optional<std::vector<unsigned long long>> s;
  try {
    s = h5::read_u64_array_attr(d, kChecksumAttr, block_count(t));
  } catch (const h5::Error& e) {
    fail(path, "has dataset " + name + " with a bad checksum attribute: " + e.what());
  }
  if (!s) fail(path, "has dataset " + name + " without its checksum attribute " + kChecksumAttr);
  sums->assign(s->begin(), s->end());
  return d;
}

namespace {

// Counts non-finite and (for exp_avg_sq) negative values, and the statistics when
// asked; a branch-free loop the compiler vectorises.
void scan_values(const float* x, std::size_t n, ValueStats& st, bool want_stats) {
  long long bad = 0, neg = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, 4);
    bad += (u & 0x7f800000u) == 0x7f800000u;
    neg += x[i] < 0.0f;
  }
  st.nonfinite += bad;
  st.negative += neg;
  if (!want_stats) return;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = x[i];
    if (!std::isfinite(v)) continue;
    if (st.n == 0) st.min = st.max = v;
    st.min = std::min(st.min, v);
    st.max = std::max(st.max, v);
    st.sum_abs += std::fabs(v);
    ++st.n;
  }
}

struct HashState {
  XXH3_state_t* s = XXH3_createState();
  ~HashState() { XXH3_freeState(s); }
};

}  // namespace

std::uint64_t data_offset(hid_t d) {
  h5::LibraryLock lock;
  return H5Dget_offset(d);
}

std::string read_verified(int fd, hid_t d, const TensorEntry& t, Family f, const std::vector<std::uint64_t>& sums,
                          hsize_t row0, hsize_t nrows, float* dst, bool scratch, ValueStats* stats,
                          const Prefetched* prefetched) {
  static_assert(std::endian::native == std::endian::little, "checkpoint data is float32 little-endian");
  const std::string name = dataset_path(t.name, f);
  const hsize_t per_row = row_elems(t.shape), brows = std::max<hsize_t>(block_rows(t), 1);
  const hsize_t piece_rows = std::max<hsize_t>(1, kPieceBytes / 4 / std::max<hsize_t>(per_row, 1));
  // Verification walks each piece in sub-pieces that stay in the core's cache between
  // the checksum and the value scan.
  const hsize_t sub_rows = std::max<hsize_t>(1, kVerifyBytes / 4 / std::max<hsize_t>(per_row, 1));
  const bool fault = comm::fault::hit("ckpt.read.data");
  // Raw data is read with pread at the dataset's address: the format is contiguous
  // float32 LE (open_tensor checked layout, type, order and bounds), so this is
  // exactly what H5Dread would fetch, without its per-call selection machinery
  // (measured: 0.6 of a plain read through H5Dread and MPI-IO at 1 rank).
  const std::uint64_t base = data_offset(d);
  ValueStats st;
  HashState hash;
  for (hsize_t r = row0; r < row0 + nrows;) {
    const hsize_t n = std::min(piece_rows, row0 + nrows - r);
    float* out = scratch ? dst : dst + (r - row0) * per_row;
    const hsize_t count = n * per_row;
    auto read_problem = [&](const std::string& why) {
      return "dataset " + name + " cannot be read (rows " + std::to_string(r) + ".." + std::to_string(r + n) +
             "): " + why;
    };
    if (prefetched) {
      const std::string why = prefetched->reader->wait(prefetched->range, (r + n - row0) * per_row * 4);
      if (!why.empty()) return read_problem(why);
    } else {
      for (std::size_t done = 0, want = count * 4; done < want;) {
        const ssize_t got = ::pread(fd, reinterpret_cast<char*>(out) + done, want - done,
                                    off_t(base + r * per_row * 4 + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return read_problem(got == 0 ? std::string("unexpected end of file") : std::strerror(errno));
        done += std::size_t(got);
      }
    }
    for (hsize_t s = r; s < r + n;) {
      const hsize_t s_end = std::min(r + n, s + sub_rows);
      // Hash each block's part of this sub-piece; a block ends on a row multiple of brows.
      for (hsize_t q = s; q < s_end;) {
        if (q % brows == 0) XXH3_64bits_reset(hash.s);
        const hsize_t end = std::min(s_end, (q / brows + 1) * brows);
        XXH3_64bits_update(hash.s, out + (q - r) * per_row, (end - q) * per_row * 4);
        if (end % brows == 0) {
          const hsize_t block = end / brows - 1;
          if (XXH3_64bits_digest(hash.s) != sums[block] || fault)
            return "dataset " + name + (block_count(t) > 1 ? " block " + std::to_string(block) + " (expert " +
                                                                 std::to_string(block) + ")"
                                                           : std::string()) +
                   " fails its checksum: the file is corrupt";
        }
        q = end;
      }
      scan_values(out + (s - r) * per_row, (s_end - s) * per_row, st, stats != nullptr);
      s = s_end;
    }
    r += n;
  }
  if (st.nonfinite > 0)
    return "dataset " + name + " holds " + std::to_string(st.nonfinite) + " non-finite values (NaN/Inf)";
  if (f == Family::ExpAvgSq && st.negative > 0)
    return "dataset " + name + " holds " + std::to_string(st.negative) + " negative second moments";
  if (stats) {
    if (st.n > 0) {
      stats->min = stats->n ? std::min(stats->min, st.min) : st.min;
      stats->max = stats->n ? std::max(stats->max, st.max) : st.max;
    }
    stats->sum_abs += st.sum_abs;
    stats->n += st.n;
  }
  return "";
}

}  // namespace furnace::io::ckpt
